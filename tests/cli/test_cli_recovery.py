"""``triggers fail``, ``triggers recover``, and what ``inspect``/``explain`` say about runs,
as subprocesses on the SQLite demo of docs/cli.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_cli import DB, data, run


def test_fail_by_hand(demo: Path) -> None:
    done = run(
        demo, "fail", DB, "survey-43", "t_createApplicant#0", "--reason", "stuck", "--actor", "ops"
    )
    assert (done.returncode, done.stdout.strip()) == (0, "t_createApplicant#0 failed"), done.stderr
    rows = {r["instance"]: r for r in data(demo, "inspect", DB, "survey-43")["instances"]}
    failure = rows["t_createApplicant#0"]["failure"]
    assert failure["exceptionType"] == "triggers_core.errors.FailedByOperator"
    assert failure["reason"] == "stuck"
    again = run(demo, "fail", DB, "survey-43", "t_createApplicant#0", "--reason", "stuck")
    assert again.returncode == 1
    assert "failed already" in again.stderr
    empty = run(demo, "fail", DB, "survey-43", "t_createApplicant#0", "--reason", " ")
    assert empty.returncode == 2


LOST_RUN = """
import sys
from datetime import UTC, datetime, timedelta
from triggers_core import engine, open_storage
from triggers_core.engine.leases import Lease

storage = open_storage(sys.argv[1], sys.argv[2])
snapshot = storage.load_full()
lease = Lease("dead-run", datetime.now(UTC) - timedelta(seconds=5), 30, {"host": "gone", "pid": 7})
started = engine.mark_running(snapshot.state, sys.argv[3], now=datetime.now(UTC), lease=lease)
storage.compare_and_swap(snapshot.version, started.state, started.changes)
"""


def test_a_lost_run_is_shown_and_recovered(demo: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-c", LOST_RUN, DB, "survey-43", "t_createApplicant#0"],
        cwd=demo,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    rows = {r["instance"]: r for r in data(demo, "inspect", DB, "survey-43")["instances"]}
    run_info = rows["t_createApplicant#0"]["run"]
    assert run_info["lost"] is True
    assert run_info["worker"] == {"host": "gone", "pid": 7}
    assert "replay it as a clone" in run_info["nextStep"]
    table = run(demo, "inspect", DB, "survey-43")
    assert "running (lost)" in table.stdout
    explained = run(demo, "explain", DB, "survey-43", "t_createApplicant#0")
    assert "LOST: its lease expired" in explained.stdout
    dry = run(demo, "recover", DB, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "survey-43 t_createApplicant#0: taken over" in dry.stdout
    still = {r["instance"]: r for r in data(demo, "inspect", DB, "survey-43")["instances"]}
    assert still["t_createApplicant#0"]["status"] == "running"
    done = run(demo, "recover", DB, "--app", "survey_tasks")
    assert done.returncode == 0, done.stderr
    assert (
        "survey-43 t_createApplicant#0: taken over, failed (WorkerLost), replayed as" in done.stdout
    )
    after = {r["instance"]: r for r in data(demo, "inspect", DB, "survey-43")["instances"]}
    assert after["t_createApplicant#0"]["status"] == "replayed"
    assert after["t_createApplicant#0"]["failure"]["exceptionType"] == (
        "triggers_core.errors.WorkerLost"
    )
    clone = after["t_createApplicant#0"]["failure"]["replayedAs"]
    assert json.dumps(after[clone]["status"]) in ('"finished"', '"failed"', '"scheduled"')


TIMED = """
import sys
from datetime import UTC, datetime, timedelta
from triggers_core import TriggerManager

then = datetime.now(UTC) - timedelta(hours=2)
manager = TriggerManager(sys.argv[1], sys.argv[2], clock=lambda: then)
manager.update_configuration(
    {"t_remind": {"after": ["ordered", "paid"], "run": "t_x", "within": "1h", "onMiss": "late"}}
)
manager.fire("ordered", {"order": 1})
"""


def test_tick_fires_the_due_timers_once(demo: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-c", TIMED, DB, "timed-1"],
        cwd=demo,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    explained = run(demo, "explain", DB, "timed-1", "t_remind#0")
    assert "window closed at " in explained.stdout, explained.stdout
    timer = {r["instance"]: r for r in data(demo, "inspect", DB, "timed-1")["instances"]}[
        "t_remind#0"
    ]["timer"]
    assert timer["kind"] == "window"
    assert -3700 < timer["inSeconds"] < -3500  # closed an hour ago
    table = run(demo, "inspect", DB, "timed-1")
    assert "paid; window closed at " in table.stdout, table.stdout
    assert "(expires at the next tick)" in table.stdout
    dry = run(demo, "tick", DB, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "timed-1 t_remind#0: timer fired, due at " in dry.stdout
    assert dry.stdout.strip().endswith("would fire 1")
    done = run(demo, "tick", DB)
    assert done.returncode == 0, done.stderr
    assert "timed-1 t_remind#0: timer fired, expired (window closed at " in done.stdout
    assert "; fired 'late'" in done.stdout
    assert done.stdout.strip().endswith("fired 1")
    rows = {r["instance"]: r for r in data(demo, "inspect", DB, "timed-1")["instances"]}
    assert rows["t_remind#0"]["status"] == "expired"
    assert rows["t_remind#1"]["status"] == "unstarted"
    again = run(demo, "tick", DB)
    assert again.stdout.strip() == "examined 0 due timers; fired 0"
