"""What the shipped contract suites share: the base of the storage contract's parts, a
runner that only records, a patient manager, and processes that race each other."""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import pytest

from triggers_core.engine.config import TaskConfig
from triggers_core.engine.effects import ScheduleInstance
from triggers_core.engine.state import SessionState, TaskInstance
from triggers_core.runtime.manager import TriggerManager
from triggers_core.runtime.ports import SessionManager, TaskRunner
from triggers_core.runtime.storage import Storage

__all__ = [
    "EVERY_TICK",
    "PatientManager",
    "RecordingRunner",
    "StorageContractBase",
    "race_in_threads",
    "race_processes",
    "report_to",
    "state_with",
]

#: One task that gets a new instance on every ``tick`` (the races and the counter tests).
EVERY_TICK: Mapping[str, Any] = {
    "t_every": {"after": ["tick"], "andEvery": "tick", "run": "contract_task"}
}


def state_with(
    tasks: Mapping[str, TaskConfig],
    instances: Iterable[TaskInstance],
    *,
    latest_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
) -> SessionState:
    """A state over ``tasks`` holding ``instances``; each task's counter follows its instances."""
    found = {i.name: i for i in instances}
    counters: dict[str, int] = {}
    for instance in found.values():
        counters[instance.task_name] = max(counters.get(instance.task_name, 0), instance.number + 1)
    return SessionState(
        tasks=tasks,
        instances=found,
        latest_kwargs=dict(latest_kwargs or {}),
        counters=counters,
    )


def race_in_threads(
    work: Callable[[int, threading.Barrier], Any], *, threads: int, timeout: float
) -> list[Any]:
    """Run ``work(index, start)`` in ``threads`` threads and return their results by index.

    Each thread prepares what it needs, then calls ``start.wait(timeout=30)``
    so that all of them go at the same moment. Fails the test if a thread
    raises (with its traceback) or if they do not all finish within ``timeout``
    seconds.
    """
    start = threading.Barrier(threads)
    results: list[Any] = [None] * threads
    errors: list[str] = []

    def run(index: int) -> None:
        try:
            results[index] = work(index, start)
        except BaseException:  # reported below, from the test's own thread
            errors.append(f"thread {index}:\n{traceback.format_exc()}")

    pool = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in pool:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    late = [index for index, thread in enumerate(pool) if thread.is_alive()]
    if late:
        pytest.fail(f"racing threads {late} did not finish within {timeout}s")
    assert not errors, "a racing thread failed:\n" + "\n".join(errors)
    return results


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


class StorageContractBase:
    """What every part of ``StorageContract`` needs: the storage, a UID, the race sizes.

    The parts (the fire-record tests, the compare-and-swap tests, ...) each
    subclass this; ``StorageContract`` inherits all of them, and a backend's
    test class overrides what is here.
    """

    #: Sessions are visible to other OS processes (not true of ``MemoryStorage``).
    supports_multiprocess: ClassVar[bool] = False
    #: Threads racing on one version.
    race_threads: ClassVar[int] = 8
    #: Processes in each multi-process race.
    race_processes: ClassVar[int] = 8
    #: Seconds a multi-process race may take before it fails.
    race_timeout: ClassVar[float] = 240.0

    # -- what subclasses provide ------------------------------------------------------

    def make_storage(self, uid: str) -> Storage:
        """A storage for session ``uid``; storages for one uid must share the session."""
        raise NotImplementedError("subclasses of StorageContract implement make_storage(uid)")

    def process_url(self, storage: Storage) -> str:
        """The URL child processes reopen ``storage`` from (default: its reference)."""
        reference = storage.reference()
        if reference is None:
            pytest.fail(f"{storage!r} has no reference(); override process_url()")
        return reference

    # -- helpers ----------------------------------------------------------------------

    @pytest.fixture
    def uid(self) -> str:
        """A fresh session UID per test."""
        return f"contract-{uuid.uuid4().hex}"

    def _manager(self, uid: str) -> tuple[TriggerManager, RecordingRunner]:
        """A manager on a new storage for ``uid`` whose runner only records."""
        runner = RecordingRunner()
        manager = TriggerManager(
            self.make_storage(uid), runners={"rec": runner}, default_runner="rec"
        )
        return manager, runner

    @classmethod
    def _include_test(cls, owner: type, name: str, wanted: bool) -> None:
        """Leave ``owner``'s test ``name`` out of ``cls`` unless ``wanted``.

        Called from ``__init_subclass__``. Left out, not skipped: a skip in CI
        always means a missing service (which CI treats as a failure). A subclass
        that wants the test again gets it back, even below one that left it out.
        """
        if not wanted:
            setattr(cls, name, None)
        elif getattr(cls, name) is None:
            setattr(cls, name, getattr(owner, name))
