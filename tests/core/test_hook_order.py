"""Cause before effect: an operation's hooks run before any hook of the work it scheduled.

The scenario is the original framework's own hook test: ``t_alpha`` runs after
``targetAcquired``, ``t_bravo`` after ``targetAcquired`` and ``t_alpha``. Firing
``targetAcquired`` must call ``_post_fire`` for ``targetAcquired``, then
``t_alpha``, then ``t_bravo`` -- on the threading runner, where the cascade
runs in other threads, every single time. The scenario is repeated many times
because a race shows only in some runs.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any, ClassVar

import pytest

from triggers_core import (
    DispatchError,
    MemoryStorage,
    MemoryStore,
    ScheduleInstance,
    Status,
    TaskInstance,
    TaskRunner,
    ThreadingTaskRunner,
    TriggerManager,
)
from triggers_core.runtime.ports import SessionManager
from triggers_core.testing.sample_tasks import DevNullTask

REPEATS = 200

CONFIG = {
    "t_alpha": {"after": ["targetAcquired"], "run": DevNullTask.name},
    "t_bravo": {"after": ["targetAcquired", "t_alpha"], "run": DevNullTask.name},
}
EXPECTED = [
    ("targetAcquired", ["t_alpha#0"]),
    ("t_alpha", ["t_bravo#0"]),
    ("t_bravo", []),
]


class OrderManager(TriggerManager):
    """Records ``_post_fire`` calls (trigger, scheduled instance names) from any thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, list[str]]] = []
        self.seen_statuses: list[Status] = []
        self._lock = threading.Lock()

    def _post_fire(self, trigger_name: str, scheduled_instances: list[TaskInstance]) -> None:
        with self._lock:
            self.calls.append((trigger_name, [i.name for i in scheduled_instances]))
            self.seen_statuses.extend(i.status for i in scheduled_instances)


def _run_scenario(runner: ThreadingTaskRunner) -> OrderManager:
    storage = MemoryStorage(f"order-{uuid.uuid4().hex}", MemoryStore())
    manager = OrderManager(storage, runners={"threading": runner})
    manager.update_configuration(CONFIG)
    manager.fire("targetAcquired")
    runner.join_all()
    return manager


def test_hooks_run_cause_before_effect_on_the_threading_runner() -> None:
    runner = ThreadingTaskRunner()
    orders = [_run_scenario(runner).calls for _ in range(REPEATS)]
    wrong = [calls for calls in orders if calls != EXPECTED]
    assert wrong == [], f"{len(wrong)} of {REPEATS} runs out of order, e.g. {wrong[0]}"


def test_post_fire_sees_the_committed_scheduled_instances() -> None:
    manager = _run_scenario(ThreadingTaskRunner())
    assert manager.seen_statuses == [Status.SCHEDULED, Status.SCHEDULED]
    assert manager.storage["t_bravo#0"].status is Status.FINISHED


class GatedRunner(ThreadingTaskRunner):
    """A threading runner whose dispatch records whether the hook had run already."""

    name: ClassVar[str] = "threading"

    def __init__(self, manager_calls: list[tuple[str, list[str]]]) -> None:
        super().__init__()
        self.calls_at_dispatch: list[int] = []
        self._manager_calls = manager_calls

    def dispatch(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        self.calls_at_dispatch.append(len(self._manager_calls))
        super().dispatch(manager, effect)


def test_runners_get_the_work_only_after_the_hooks_ran() -> None:
    storage = MemoryStorage(f"order-{uuid.uuid4().hex}", MemoryStore())
    calls: list[tuple[str, list[str]]] = []
    runner = GatedRunner(calls)
    manager = OrderManager(storage, runners={"threading": runner})
    manager.calls = calls
    manager.update_configuration(CONFIG)
    manager.fire("targetAcquired")
    runner.join_all()
    # t_alpha#0 was dispatched after one hook call, t_bravo#0 after two.
    assert runner.calls_at_dispatch == [1, 2]


class RaisingHookManager(TriggerManager):
    def _post_fire(self, trigger_name: str, scheduled_instances: list[TaskInstance]) -> None:
        raise RuntimeError(f"hook for {trigger_name} broke")


class RefusingRunner(TaskRunner):
    name: ClassVar[str] = "refusing"

    def dispatch(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        raise ConnectionError(f"cannot take {effect.instance_name}")


def test_a_hook_that_raises_does_not_strand_the_scheduled_work() -> None:
    storage = MemoryStorage(f"order-{uuid.uuid4().hex}", MemoryStore())
    runner = ThreadingTaskRunner()
    manager = RaisingHookManager(storage, runners={"threading": runner})
    manager.update_configuration({"t_a": {"after": ["x"], "run": DevNullTask.name}})
    with pytest.raises(RuntimeError, match="hook for x broke"):
        manager.fire("x")
    with pytest.raises(RuntimeError, match="hook for t_a broke"):
        runner.join_all()  # the cascade's hook raised in the task thread
    assert storage["t_a#0"].status is Status.FINISHED


def test_dispatch_failure_after_a_raising_hook_still_fails_the_instance() -> None:
    storage = MemoryStorage(f"order-{uuid.uuid4().hex}", MemoryStore())
    manager = RaisingHookManager(
        storage, runners={"refusing": RefusingRunner()}, default_runner="refusing"
    )
    manager.update_configuration({"t_a": {"after": ["x"], "run": DevNullTask.name}})
    with pytest.raises(DispatchError) as caught:
        manager.fire("x")
    assert isinstance(caught.value.__context__, RuntimeError)  # the hook's error
    failed = storage["t_a#0"]
    assert failed.status is Status.FAILED
    assert failed.metadata["exceptionType"] == "builtins.ConnectionError"
