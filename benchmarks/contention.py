"""P processes x F fires of one ``andEvery`` trigger on one session.

Every process opens the storage from its reference URL (as a Celery worker
would), waits at a barrier, then fires ``tick`` F times with a recording
runner. Timed from the barrier until the last process reported. Checked
exactly: P*F instances, each scheduled once, every fire's kwargs on exactly
one instance. The in-process memory storage runs P threads instead.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
import traceback
from collections import Counter
from typing import Any

from benchmarks.common import Backend, RecordingRunner, StorageFactory, recording_manager, uid
from triggers_core import Status, Storage, TriggerManager, open_storage

EVERY = {"t_every": {"after": ["tick"], "andEvery": "tick", "run": "bench_task"}}


class PatientManager(TriggerManager):
    """Many writers on one small machine may lose many rounds in a row."""

    max_attempts = 5000


def _fire(storage: Storage, index: int, fires: int) -> list[str]:
    runner = RecordingRunner()
    manager = PatientManager(storage, runners={"rec": runner}, default_runner="rec")
    for n in range(fires):
        manager.fire("tick", {"worker": index, "i": n})
    return runner.dispatched


def _process(*, url: str, session: str, index: int, fires: int, barrier: Any, results: Any) -> None:
    try:
        storage = open_storage(url, session)
        storage.load()  # connect before the start
        barrier.wait(120)
        results.put(("ok", _fire(storage, index, fires)))
        storage.close()
    except BaseException:
        results.put(("error", f"process {index}:\n{traceback.format_exc()}"))


def contention(backend: Backend, make: StorageFactory, processes: int, fires: int) -> float:
    """Seconds for ``processes`` writers to fire ``fires`` times each; checked exactly."""
    session = uid("contention")
    storage = make(session)
    manager, _ = recording_manager(storage)
    manager.update_configuration(EVERY)
    dispatched: list[str] = []
    if backend.shared:
        url = storage.reference()
        assert url is not None
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(processes + 1)
        results = context.Queue()
        workers = [
            context.Process(
                target=_process,
                kwargs={
                    "url": url,
                    "session": session,
                    "index": i,
                    "fires": fires,
                    "barrier": barrier,
                    "results": results,
                },
                daemon=True,
            )
            for i in range(processes)
        ]
        for worker in workers:
            worker.start()
        try:
            barrier.wait(120)
            began = time.perf_counter()
            for _ in workers:
                kind, payload = results.get(timeout=600)
                if kind != "ok":
                    raise RuntimeError(payload)
                dispatched.extend(payload)
            elapsed = time.perf_counter() - began
        finally:
            for worker in workers:
                worker.join(timeout=30)
                if worker.is_alive():
                    worker.terminate()
            results.close()
    else:
        start = threading.Barrier(processes + 1)
        outcomes: queue.Queue[list[str]] = queue.Queue()

        def thread(index: int) -> None:
            own = make(session)
            start.wait(60)
            outcomes.put(_fire(own, index, fires))

        threads = [threading.Thread(target=thread, args=(i,)) for i in range(processes)]
        for each in threads:
            each.start()
        start.wait(60)
        began = time.perf_counter()
        for each in threads:
            each.join(600)
        elapsed = time.perf_counter() - began
        while not outcomes.empty():
            dispatched.extend(outcomes.get())
    _check(storage, dispatched, processes * fires)
    return elapsed


def _check(storage: Storage, dispatched: list[str], total: int) -> None:
    counts = Counter(dispatched)
    assert all(n == 1 for n in counts.values()), "an instance was scheduled twice"
    assert set(counts) == {f"t_every#{n}" for n in range(total)}, "an instance was lost"
    state = storage.load_full().state
    assert len(state.instances) == total
    assert state.counters["t_every"] == total
    assert {i.status for i in state.instances.values()} == {Status.SCHEDULED}
    fired = {(i.kwargs["tick"]["worker"], i.kwargs["tick"]["i"]) for i in state.instances.values()}
    assert len(fired) == total, "a fire was lost or applied twice"
