"""Throughput in one process, and the latency of a short cascade.

* fires/s without a task: ``tick`` creates and schedules an instance per fire;
  a recording runner leaves it there.
* fires/s with a no-op task run to completion: the threading runner runs
  ``triggers.DevNullTask`` for every instance (three commits per fire: fire,
  start, finish); timed until ``join_all()`` returns. The same with a queue
  runner (one worker thread) shows what the commit path sustains on its own.
* cascade: ``t1`` after ``a``, ``t2`` after ``t1``, ``t3`` after ``t2`` (no-op
  tasks, threading runner); from ``fire("a")`` until all three finished.
"""

from __future__ import annotations

import queue
import statistics
import threading
import time

from benchmarks.common import StorageFactory, median_ms, recording_manager, uid
from triggers_core import Status, ThreadingTaskRunner, TriggerManager
from triggers_core.engine.effects import ScheduleInstance
from triggers_core.runtime.ports import SessionManager, TaskRunner
from triggers_core.testing.sample_tasks import DevNullTask

EVERY = {"t_every": {"after": ["tick"], "andEvery": "tick", "run": DevNullTask.name}}
CASCADE = {
    "t1": {"after": ["a"], "run": DevNullTask.name},
    "t2": {"after": ["t1"], "run": DevNullTask.name},
    "t3": {"after": ["t2"], "run": DevNullTask.name},
}


class QueueRunner(TaskRunner):
    """Runs instances one after another in a single worker thread (benchmark only)."""

    name = "bench-queue"

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[TriggerManager, str] | None] = queue.Queue()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def dispatch(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        self._queue.put((manager, effect.instance_name))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                item[0].run_instance(item[1])
            except BaseException as exc:
                self._errors.append(exc)
            finally:
                self._queue.task_done()

    def join_all(self) -> None:
        self._queue.join()
        self._queue.put(None)
        self._thread.join(timeout=60)
        if self._errors:
            raise self._errors[0]


def fires_per_second(make: StorageFactory, fires: int, *, runner: str, repeats: int = 3) -> float:
    """Median over ``repeats`` runs of ``fires`` fires of ``tick``, each in a new session.

    ``runner``: ``recording`` (no task runs), ``threading`` or ``queue`` (a no-op
    task runs to completion for every fire).
    """
    rates = []
    for _ in range(repeats):
        storage = make(uid("throughput"))
        recording = None
        join = None
        if runner == "recording":
            manager, recording = recording_manager(storage)
        else:
            runs: ThreadingTaskRunner | QueueRunner
            runs = ThreadingTaskRunner() if runner == "threading" else QueueRunner()
            manager = TriggerManager(storage, runners={"run": runs}, default_runner="run")
            join = runs.join_all
        manager.update_configuration(EVERY)
        began = time.perf_counter()
        for n in range(fires):
            manager.fire("tick", {"n": n})
        if join is not None:
            join()
        rates.append(fires / (time.perf_counter() - began))
        state = storage.load_full().state
        expected = Status.SCHEDULED if recording is not None else Status.FINISHED
        assert len(state.instances) == fires
        assert {i.status for i in state.instances.values()} == {expected}
        if recording is not None:
            assert len(recording.dispatched) == fires
    return statistics.median(rates)


def cascade(make: StorageFactory, repeats: int, warmup: int) -> float:
    """Median ms from ``fire("a")`` to t1, t2 and t3 finished."""
    runner = ThreadingTaskRunner()
    samples = []
    for n in range(warmup + repeats):
        manager = TriggerManager(make(uid("cascade")), runners={"threading": runner})
        manager.update_configuration(CASCADE)
        began = time.perf_counter()
        manager.fire("a", {"n": n})
        runner.join_all(timeout=60)
        elapsed = time.perf_counter() - began
        statuses = {i.name: i.status for i in manager.storage.instances.values()}
        assert statuses == {f"t{k}#0": Status.FINISHED for k in (1, 2, 3)}, statuses
        if n >= warmup:
            samples.append(elapsed)
    return median_ms(samples)
