"""Work handed to the threading runner is not lost when the interpreter exits.

Each test runs a real script in a subprocess that fires and then simply ends,
without ``join_all``; the SQLite file it leaves behind shows what ran.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from triggers_core import Status, open_storage

pytest.importorskip("sqlalchemy")

SCRIPT = """
import logging
import sys
import threading
import time

from triggers_core import TaskContext, ThreadingTaskRunner, TriggerManager, TriggerTask

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")


class Slow(TriggerTask):
    name = "exit.Slow"

    def _run(self, context):
        time.sleep(context.trigger_kwargs["go"]["seconds"])
        return {"thread": threading.current_thread().name}


class Next(TriggerTask):
    name = "exit.Next"

    def _run(self, context):
        return {"thread": threading.current_thread().name}


runner = ThreadingTaskRunner(exit_timeout=float(sys.argv[3]))
manager = TriggerManager(sys.argv[1], uid="exit", runners={"threading": runner})
manager.update_configuration(
    {
        "t_slow": {"after": ["go"], "run": "exit.Slow"},
        "t_next": {"after": ["t_slow"], "run": "exit.Next"},
    }
)
manager.fire("go", {"seconds": float(sys.argv[2])})
print("fired; the script ends here", flush=True)
"""


def run_script(
    tmp_path: Path, seconds: float, exit_timeout: float
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "fire_and_exit.py"
    script.write_text(textwrap.dedent(SCRIPT))
    url = f"sqlite:///{tmp_path / 'exit.db'}"
    return subprocess.run(
        [sys.executable, str(script), url, str(seconds), str(exit_timeout)],
        capture_output=True,
        text=True,
        timeout=120,  # the exit wait is bounded; this only keeps a broken run from hanging
        check=False,
    )


def test_the_interpreter_waits_for_dispatched_work_and_its_cascades(tmp_path: Path) -> None:
    done = run_script(tmp_path, seconds=0.5, exit_timeout=60)
    assert done.returncode == 0, done.stderr
    assert "fired; the script ends here" in done.stdout
    assert (
        "triggers_core.runners interpreter exit: waiting up to 60.0s for 1 task instance(s): "
        "t_slow#0" in done.stderr
    )
    storage = open_storage(f"sqlite:///{tmp_path / 'exit.db'}", "exit")
    try:
        slow, following = storage["t_slow#0"], storage["t_next#0"]
        assert slow.status is Status.FINISHED
        assert following.status is Status.FINISHED
        # Scheduled while the interpreter exited: run by the thread that dispatched it.
        assert following.metadata["result"] == {"thread": "triggers:t_slow#0"}
    finally:
        storage.close()


def test_the_wait_at_exit_is_bounded_and_names_what_is_left(tmp_path: Path) -> None:
    done = run_script(tmp_path, seconds=60, exit_timeout=0.5)
    assert done.returncode == 0, done.stderr
    assert (
        "interpreter exit: gave up after 0.5s; 1 task instance(s) did not finish and stay "
        "scheduled or running in storage (find them with get_stale_instances): t_slow#0"
        in done.stderr
    )
    storage = open_storage(f"sqlite:///{tmp_path / 'exit.db'}", "exit")
    try:
        assert storage["t_slow#0"].status is Status.RUNNING
        assert "t_next#0" not in storage
    finally:
        storage.close()
