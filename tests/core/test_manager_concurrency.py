"""Concurrency through the storage, and the threading runner's join_all."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import pytest

from triggers_core import (
    MemoryStorage,
    ScheduleInstance,
    Status,
    Storage,
    TaskContext,
    ThreadingTaskRunner,
    TriggerManager,
    TriggerTask,
)
from triggers_core.runtime.ports import SessionManager
from triggers_core.testing.assertions import (
    assert_instance_failed,
    assert_instance_finished,
    assert_unresolved_instances,
)
from triggers_core.testing.sample_tasks import DevNullTask, PassThruTask

THREADS = 8
#: The full race (8 x 200 = 1600 instances) runs on MemoryStorage. A durable
#: backend commits ~5 ms per write (3 writes per fire here), so it runs a shorter
#: race; the storage contract suite races 8 processes on it as well.
FIRES_PER_THREAD = 200
DURABLE_FIRES_PER_THREAD = 25


class CountingRunner(ThreadingTaskRunner):
    """A threading runner that counts how often each instance was dispatched."""

    def __init__(self) -> None:
        super().__init__()
        self.dispatched: collections.Counter[str] = collections.Counter()
        self._count_lock = threading.Lock()

    def dispatch(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        with self._count_lock:
            self.dispatched[effect.instance_name] += 1
        super().dispatch(manager, effect)


_gate = threading.Event()


class GatedTask(TriggerTask):
    """Waits until the test opens the gate (to observe work in progress)."""

    name: ClassVar[str] = "tests.core.concurrency.Gated"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        if not _gate.wait(timeout=30):
            raise TimeoutError("the gate never opened")
        return {}


class JoinFromTaskTask(TriggerTask):
    """Calls join_all from inside a task thread, which must be refused."""

    name: ClassVar[str] = "tests.core.concurrency.JoinFromTask"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        runner = context.manager.get_runner()
        assert isinstance(runner, ThreadingTaskRunner)
        runner.join_all()
        return {}


@pytest.fixture
def runner() -> Iterator[CountingRunner]:
    runner = CountingRunner()
    yield runner
    runner.join_all()


@pytest.fixture
def storage_for(
    storage_factory: Callable[[str], Storage], session_uid: str
) -> Callable[[], Storage]:
    """A new storage object on the same session each call (one per thread)."""
    return lambda: storage_factory(session_uid)


def test_concurrent_and_every_fires_schedule_each_instance_exactly_once(
    storage_for: Callable[[], Storage], runner: CountingRunner
) -> None:
    setup = TriggerManager(storage_for(), runners={"threading": runner})
    setup.update_configuration(
        {"t_page": {"after": [], "andEvery": "page", "run": DevNullTask.name}}
    )
    memory = isinstance(setup.storage, MemoryStorage)
    fires = FIRES_PER_THREAD if memory else DURABLE_FIRES_PER_THREAD
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def fire_pages(thread: int) -> None:
        manager = TriggerManager(storage_for(), runners={"threading": runner})
        start.wait()
        try:
            for n in range(fires):
                manager.fire("page", {"thread": thread, "n": n})
        except BaseException as exc:
            errors.append(exc)
            raise

    threads = [threading.Thread(target=fire_pages, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runner.join_all(timeout=120)
    assert errors == []

    total = THREADS * fires
    expected_names = {f"t_page#{n}" for n in range(total)}
    instances = setup.storage.instances
    assert set(instances) == expected_names
    assert set(runner.dispatched) == expected_names
    assert set(runner.dispatched.values()) == {1}
    assert {i.status for i in instances.values()} == {Status.FINISHED}
    # Every firing landed in exactly one instance: no lost update, no duplicate.
    pages = sorted((i.kwargs["page"]["thread"], i.kwargs["page"]["n"]) for i in instances.values())
    assert pages == [(t, n) for t in range(THREADS) for n in range(fires)]
    assert setup.storage.load().state.counters["t_page"] == total
    assert_unresolved_instances(setup, [])


def test_concurrent_fires_of_different_triggers_are_not_lost(
    storage_for: Callable[[], Storage], runner: CountingRunner
) -> None:
    triggers = [f"part{n}" for n in range(THREADS)]
    setup = TriggerManager(storage_for(), runners={"threading": runner})
    setup.update_configuration({"t_all": {"after": triggers, "run": PassThruTask.name}})
    start = threading.Barrier(THREADS)

    def fire(trigger: str) -> None:
        manager = TriggerManager(storage_for(), runners={"threading": runner})
        start.wait()
        manager.fire(trigger, {"from": trigger})

    threads = [threading.Thread(target=fire, args=(t,)) for t in triggers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert_instance_finished(setup, "t_all#0", {"kwargs": {t: {"from": t} for t in triggers}})
    assert list(setup.storage.instances) == ["t_all#0"]
    assert runner.dispatched == {"t_all#0": 1}


# -- ThreadingTaskRunner.join_all ------------------------------------------------------------------


def test_join_all_waits_for_cascades(
    storage_for: Callable[[], Storage], runner: CountingRunner
) -> None:
    manager = TriggerManager(storage_for(), runners={"threading": runner})
    chain = {"t_0": {"after": ["x"], "run": DevNullTask.name}}
    for n in range(1, 6):
        chain[f"t_{n}"] = {"after": [f"t_{n - 1}"], "run": DevNullTask.name}
    manager.update_configuration(chain)
    manager.fire("x")
    runner.join_all()
    assert runner.pending == 0
    statuses = {name: i.status for name, i in manager.storage.instances.items()}
    assert statuses == {f"t_{n}#0": Status.FINISHED for n in range(6)}


def test_join_all_times_out_while_tasks_run(
    storage_for: Callable[[], Storage], runner: CountingRunner
) -> None:
    manager = TriggerManager(storage_for(), runners={"threading": runner})
    manager.update_configuration({"t_a": {"after": ["x"], "run": GatedTask.name}})
    _gate.clear()
    try:
        manager.fire("x")
        with pytest.raises(TimeoutError, match="1 task instance"):
            runner.join_all(timeout=0.05)
        assert runner.pending == 1
    finally:
        _gate.set()
    runner.join_all()
    assert_instance_finished(manager, "t_a#0", {})


def test_join_all_refuses_to_run_in_a_task_thread(
    storage_for: Callable[[], Storage], runner: CountingRunner
) -> None:
    manager = TriggerManager(storage_for(), runners={"threading": runner})
    manager.update_configuration({"t_a": {"after": ["x"], "run": JoinFromTaskTask.name}})
    manager.fire("x")
    failed = assert_instance_failed(manager, "t_a#0", RuntimeError)
    assert "join_all() was called from a task thread" in failed.metadata["exceptionInfo"]
