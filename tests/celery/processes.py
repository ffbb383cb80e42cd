"""Real ``celery worker`` subprocesses for the tests, and the constants they share.

Each worker runs the solo pool (or, where asked, prefork) in its own process group with its log in a
file; :meth:`WorkerProcess.stop` sends SIGTERM, then SIGKILL after a timeout.
Every started worker is tracked in :data:`STARTED` so the session fixture in
``conftest.py`` can stop leftovers whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUN_ID = uuid.uuid4().hex[:10]

#: Brokers the end-to-end tests run on.
BROKERS = {
    "redis": ("Redis", "127.0.0.1", 6379, "redis://127.0.0.1:6379/0"),
    "rabbitmq": ("RabbitMQ", "127.0.0.1", 5672, "amqp://guest:guest@127.0.0.1:5672//"),
}
#: A password the storage URL carries; trust authentication ignores it. Tests
#: assert it never appears in a message.
PG_PASSWORD = f"not-a-secret-{RUN_ID}"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"

#: Workers started and not yet stopped.
STARTED: list[WorkerProcess] = []


def python_env() -> dict[str, str]:
    """Environment for a Python subprocess that imports the package and ``worker_app``."""
    env = dict(os.environ)
    env.pop("TRIGGERS_STORAGE_URL", None)  # subprocesses use their own triggers_storages
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return env


class WorkerProcess:
    """One ``celery worker`` subprocess (solo pool unless asked) with its log in a file."""

    def __init__(
        self,
        name: str,
        broker: str,
        queues: list[str],
        env: Mapping[str, str],
        log_dir: Path,
        *,
        pool: str = "solo",
        concurrency: int = 1,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker_app",
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=INFO",
            f"--hostname={name}@%h",
            f"--queues={','.join(queues)}",
        ]
        full_env = {**python_env(), **env, "TRIGGERS_TEST_BROKER": broker}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: we stop all of it
            )
        STARTED.append(self)

    def log(self) -> str:
        """Everything the worker logged so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        """Wait until ``text`` appears in the log (fails if the worker died)."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.process.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in {self.name}'s log:\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        self.wait_for_log(" ready.", timeout)
        return self

    def kill(self) -> None:
        """SIGKILL the whole process group (a worker lost mid-task)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> None:
        """Ask for a warm shutdown (SIGTERM) without waiting."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> None:
        """Warm shutdown; SIGKILL if it does not exit within ``timeout``."""
        try:
            self.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.kill()
        finally:
            if self in STARTED:
                STARTED.remove(self)


def stop_all(workers: list[WorkerProcess], timeout: float = 15.0) -> None:
    """Stop several workers at once (SIGTERM to all first, then wait for each)."""
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.stop(timeout)


def queue_for(broker: str) -> str:
    kind = "amqp" if broker.startswith("amqp") else "redis"
    return f"tc-{RUN_ID}-{kind}"


def start_worker(
    name: str,
    broker: str,
    queues: list[str],
    storages: Mapping[str, str],
    log_dir: Path,
    *,
    conf: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    pool: str = "solo",
    concurrency: int = 1,
) -> WorkerProcess:
    """Start a worker on ``queues``; ``conf`` adds Celery settings (JSON values).

    ``env`` adds environment variables (e.g. ``TRIGGERS_STORAGE_URL``); ``pool``
    and ``concurrency`` are the worker's (``solo`` by default, ``prefork`` where
    pool processes die).
    """
    full_env = {
        "TRIGGERS_TEST_QUEUE": queues[0],
        "TRIGGERS_TEST_STORAGES": json.dumps(dict(storages)),
        "TRIGGERS_TEST_EFFECTS": PG_DSN,
        "TRIGGERS_TEST_CONF": json.dumps(dict(conf or {})),
        **(env or {}),
    }
    return WorkerProcess(
        name, broker, queues, full_env, log_dir, pool=pool, concurrency=concurrency
    )
