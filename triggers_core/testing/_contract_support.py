"""What the shipped contract suites share: a runner that only records, a patient manager,
and processes that race each other."""

from __future__ import annotations

import multiprocessing
import queue
import threading
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from triggers_core.engine.effects import ScheduleInstance
from triggers_core.runtime.manager import TriggerManager
from triggers_core.runtime.ports import SessionManager, TaskRunner

__all__ = ["PatientManager", "RecordingRunner", "race_processes", "report_to"]


def race_processes(
    worker: Callable[..., None], *, processes: int, timeout: float, what: str, **kwargs: Any
) -> list[Any]:
    """Run ``worker`` in ``processes`` spawned OS processes released at the same moment.

    Each process calls ``worker(index=i, start=event, results=queue, **kwargs)``
    (a module-level function, so that it can be spawned); the worker waits for
    ``start`` and reports through :func:`report_to`. Returns the payloads the
    processes reported, in the order they finished. Fails the test if one does
    not report within ``timeout`` seconds (``what`` names the race) or reports
    an error; processes still alive at the end are terminated.
    """
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()
    workers = [
        context.Process(
            target=worker,
            kwargs={**kwargs, "index": index, "start": start, "results": results},
            daemon=True,
        )
        for index in range(processes)
    ]
    for process in workers:
        process.start()
    payloads: list[Any] = []
    errors: list[str] = []
    try:
        start.set()
        for _ in workers:
            try:
                kind, payload = results.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"the {what} did not finish within {timeout}s")
            if kind == "ok":
                payloads.append(payload)
            else:
                errors.append(payload)
    finally:
        for process in workers:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join()
        results.close()
        results.join_thread()
    assert not errors, "a racing process failed:\n" + "\n".join(errors)
    return payloads


def report_to(results: Any, index: int, work: Callable[[], Any]) -> None:
    """In a racing process: put ``("ok", work())`` on ``results``, or the traceback."""
    try:
        results.put(("ok", work()))
    except BaseException:
        results.put(("error", f"process {index}:\n{traceback.format_exc()}"))


class RecordingRunner(TaskRunner):
    """A runner that only records which instances it was asked to run."""

    name = "contract-recording"

    def __init__(self) -> None:
        self.dispatched: list[str] = []
        self._lock = threading.Lock()

    def dispatch(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        with self._lock:
            self.dispatched.append(effect.instance_name)


class PatientManager(TriggerManager):
    """A manager for races: they check correctness, not fairness.

    Eight processes on a small machine may lose many rounds in a row, so it
    allows more attempts than the default.
    """

    max_attempts = 2000
