"""The processes of a run: ``celery worker`` nodes, producers, and their CPU time from /proc.

Every wait has a bound and a failure names what it waited for. A worker is
stopped with SIGTERM to its main process (a warm shutdown: the pool
processes finish, fire ``worker_process_shutdown`` and write their counters),
then SIGKILL to its process group if it is still there after the timeout.
Everything started is tracked so :func:`stop_everything` can clean up after
an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from benchmarks.celery_e2e.app import NODE_ENV
from benchmarks.celery_e2e.verify import BenchmarkFailure

ROOT = Path(__file__).resolve().parents[2]
WORKER_APP = "benchmarks.celery_e2e.worker_app"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

_started: list[subprocess.Popen[Any]] = []


#: Never inherited: a variant that needs them sets them (the Django settings).
PRIVATE_ENV = ("TRIGGERS_STORAGE_URL", "DJANGO_SETTINGS_MODULE", "TRIGGERS_BENCH_DJANGO_CACHES")


def python_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment, the repository first on ``PYTHONPATH``, plus ``extra``.

    Variables of :data:`PRIVATE_ENV` come from ``extra`` only.
    """
    env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


# -- CPU time --------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, own CPU s, CPU s of its reaped children) from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # fields[0] is the state (field 3)
    own = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    reaped = (int(fields[13]) + int(fields[14])) / _CLOCK_TICKS
    return int(fields[1]), own, reaped


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` itself and of all its descendants (live or reaped).

    A reaped child's time is in its parent's ``cutime``/``cstime``; a live one's
    is read from its own stat.
    """
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(int(entry))
            if found is not None:
                parents.setdefault(found[0], []).append(int(entry))
    own = _stat(pid)
    if own is None:
        return 0.0, 0.0
    children = own[2]
    todo = list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        found = _stat(child)
        if found is not None:
            children += found[1] + found[2]
        todo += parents.get(child, [])
    return own[1], children


# -- workers ---------------------------------------------------------------------------


class Worker:
    """One ``celery worker`` node (prefork pool) with its log in ``out_dir``."""

    def __init__(
        self,
        node: str,
        *,
        run_id: str,
        queue: str,
        env: Mapping[str, str],
        out_dir: Path,
        concurrency: int,
        loglevel: str = "WARNING",
    ) -> None:
        self.node = node
        self.out_dir = out_dir
        self.log_path = out_dir / f"{node}.log"
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            WORKER_APP,
            "worker",
            "--pool=prefork",
            f"--concurrency={concurrency}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--loglevel={loglevel}",
            f"--hostname={node}-{run_id}@%h",
            f"--queues={queue}",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=python_env({**env, NODE_ENV: node}),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _started.append(self.process)

    def wait_ready(self, timeout: float) -> None:
        ready = self.out_dir / f"ready-{self.node}"
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.process.poll() is not None:
                raise BenchmarkFailure(
                    f"worker {self.node} exited with {self.process.returncode} before it was "
                    f"ready; its log ({self.log_path}):\n{tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise BenchmarkFailure(
                    f"worker {self.node} was not ready after {timeout:.0f} s (waited for "
                    f"{ready} from its worker_ready signal); its log:\n{tail(self.log_path)}"
                )
            time.sleep(0.1)

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far: (the main process, its pool processes)."""
        return tree_cpu(self.process.pid)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float) -> bool:
        """Warm shutdown; True if it exited by itself within ``timeout`` (else it is killed)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
            clean = True
        except subprocess.TimeoutExpired:
            clean = False
        _kill_group(self.process)
        return clean

    def counts(self) -> list[dict[str, Any]]:
        """What each pool process of this node wrote when it exited."""
        return [
            json.loads(path.read_text())
            for path in sorted(self.out_dir.glob(f"counts-{self.node}-*.json"))
        ]


def _kill_group(process: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)
    if process in _started:
        _started.remove(process)


# -- producers -------------------------------------------------------------------------


class Producer:
    """One producer process (:mod:`benchmarks.celery_e2e.producer`) and its job file."""

    def __init__(self, index: int, job: Mapping[str, Any], env: Mapping[str, str], out_dir: Path):
        self.index = index
        self.job_path = out_dir / f"producer-{index}-{job['label']}.job.json"
        self.out_path = Path(job["out"])
        self.log_path = out_dir / f"producer-{index}-{job['label']}.log"
        self.job_path.write_text(json.dumps(job))
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.celery_e2e.producer", str(self.job_path)],
                cwd=ROOT,
                env=python_env(env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )
        _started.append(self.process)

    def wait_ready(self, timeout: float) -> None:
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline().strip() if ready else ""
        if line != "READY":
            why = "exited" if self.process.poll() is not None else f"said {line!r}"
            if not ready:
                why = f"did not print READY within {timeout:.0f} s"
            raise BenchmarkFailure(f"producer {self.index} {why}; its log:\n{tail(self.log_path)}")

    def go(self, at: float) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(f"GO {at!r}\n")
        stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(self.process)
            raise BenchmarkFailure(
                f"producer {self.index} was still firing after {timeout:.0f} s; "
                f"its log:\n{tail(self.log_path)}"
            ) from None
        _kill_group(self.process)
        if code != 0 or not self.out_path.exists():
            raise BenchmarkFailure(
                f"producer {self.index} failed (exit {code}); its log:\n{tail(self.log_path)}"
            )
        result: dict[str, Any] = json.loads(self.out_path.read_text())
        return result


def stop_everything() -> None:
    """Kill whatever is still running (after an error)."""
    for process in list(_started):
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in list(_started):
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.1, deadline - time.monotonic()))
        _kill_group(process)
