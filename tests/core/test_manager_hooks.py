"""End-to-end behaviour: hook call sequences, hooks that raise, runners that fail to dispatch.

Hook *sequences* are checked with :class:`ManualRunner`, which queues
dispatched instances and runs them only when the test says so: hooks called
from task threads would otherwise interleave with the caller's in any order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from triggers_core import (
    DispatchError,
    ScheduleInstance,
    Status,
    Storage,
    TaskInstance,
    TaskRunner,
    ThreadingTaskRunner,
    TriggerManager,
)
from triggers_core.runtime.ports import SessionManager
from triggers_core.testing.assertions import (
    assert_instance_failed,
    assert_instance_finished,
    assert_instance_missing,
    assert_instance_replayed,
    assert_instance_skipped,
    assert_unresolved_instances,
)
from triggers_core.testing.sample_tasks import (
    DevNullTask,
    FailingTask,
    PassThruTask,
    SelfRetryingTask,
)

PASS = PassThruTask.name
NULL = DevNullTask.name
FAIL = FailingTask.name


class ManualRunner(TaskRunner):
    """Queues instances; :meth:`run_all` runs them (and their cascades) in this thread."""

    name: ClassVar[str] = "manual"

    def __init__(self) -> None:
        self.queue: list[tuple[TriggerManager, str]] = []

    def dispatch(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        self.queue.append((manager, effect.instance_name))

    def run_all(self) -> None:
        while self.queue:
            manager, name = self.queue.pop(0)
            manager.run_instance(name)


class BrokenRunner(TaskRunner):
    """A runner whose broker is down."""

    name: ClassVar[str] = "broken"

    def dispatch(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        raise ConnectionError(f"broker down, could not send {effect.instance_name}")


Call = tuple[Any, ...]


class RecordingManager(TriggerManager):
    """Records every hook call; raises from the hooks named in ``raise_in``."""

    def __init__(self, *args: Any, raise_in: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[Call] = []
        self.raise_in = raise_in
        self._lock = threading.Lock()

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)
        if call[0] in self.raise_in or f"{call[0]}:{call[1]}" in self.raise_in:
            raise RuntimeError(f"hook {call[0]} broke")

    def _post_fire(self, trigger_name: str, scheduled_instances: list[TaskInstance]) -> None:
        scheduled = [(i.name, i.status.value) for i in scheduled_instances]
        self._record(("fire", trigger_name, scheduled))

    def _post_replay(self, replayed_instance: TaskInstance) -> None:
        self._record(("replay", replayed_instance.name, replayed_instance.status.value))

    def _post_skip(self, instance: TaskInstance, cascade: bool) -> None:
        self._record(("skip", instance.name, instance.status.value, cascade))

    def take_calls(self) -> list[Call]:
        with self._lock:
            calls, self.calls = self.calls, []
        return calls


@pytest.fixture
def storage(storage_factory: Callable[[str], Storage], session_uid: str) -> Storage:
    return storage_factory(session_uid)


@pytest.fixture
def manual() -> ManualRunner:
    return ManualRunner()


@pytest.fixture
def manager(storage: Storage, manual: ManualRunner) -> RecordingManager:
    return RecordingManager(storage, runners={"manual": manual}, default_runner="manual")


@pytest.fixture
def runner() -> Iterator[ThreadingTaskRunner]:
    runner = ThreadingTaskRunner()
    yield runner
    runner.join_all()


def threaded(storage: Storage, runner: ThreadingTaskRunner, **kwargs: Any) -> RecordingManager:
    return RecordingManager(storage, runners={"threading": runner}, **kwargs)


# -- call sequences ----------------------------------------------------------------------------


def test_post_fire_gets_the_scheduled_instances(
    manager: RecordingManager, manual: ManualRunner
) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": NULL}, "t_b": {"after": ["t_a"], "run": NULL}}
    )
    manager.fire("x")
    assert manager.take_calls() == [("fire", "x", [("t_a#0", "scheduled")])]
    manual.run_all()
    assert manager.take_calls() == [
        ("fire", "t_a", [("t_b#0", "scheduled")]),
        ("fire", "t_b", []),
    ]


def test_post_fire_for_a_trigger_nobody_uses(manager: RecordingManager) -> None:
    manager.fire("nobodyListens", {"a": 1})
    assert manager.take_calls() == [("fire", "nobodyListens", [])]
    manager.update_configuration({"t_a": {"after": ["x"], "run": NULL}})
    manager.fire("stillNobody")
    assert manager.take_calls() == [("fire", "stillNobody", [])]


def test_post_fire_when_the_instance_still_waits(manager: RecordingManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x", "y"], "run": NULL}})
    manager.fire("x")
    assert manager.take_calls() == [("fire", "x", [])]


def test_post_fire_lists_instances_in_dispatch_order(
    manager: RecordingManager, manual: ManualRunner
) -> None:
    manager.update_configuration(
        {
            "t_z": {"after": ["start"], "run": NULL},
            "t_page": {"after": ["start"], "andEvery": "page", "run": NULL},
        }
    )
    manager.fire("page")
    manager.fire("page")
    manager.take_calls()
    manager.fire("start")
    expected = [("t_page#0", "scheduled"), ("t_page#1", "scheduled"), ("t_z#0", "scheduled")]
    assert manager.take_calls() == [("fire", "start", expected)]
    assert [name for _, name in manual.queue] == ["t_page#0", "t_page#1", "t_z#0"]


def test_replay_calls_post_replay_and_not_post_fire(
    manager: RecordingManager, manual: ManualRunner
) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "run": FAIL}})
    manager.fire("x")
    manual.run_all()
    assert_instance_failed(manager, "t_a#0", RuntimeError)
    manager.take_calls()
    clone = manager.replay_failed_instance("t_a#0")
    assert manager.take_calls() == [("replay", "t_a#0", "replayed")]
    assert [name for _, name in manual.queue] == [clone.name]
    manual.run_all()  # the clone fails again: no cascade, no hook
    assert manager.take_calls() == []


def test_replayed_clone_cascades_through_post_fire(
    manager: RecordingManager, manual: ManualRunner
) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "run": FAIL}})
    manager.fire("x")
    manual.run_all()
    manager.update_configuration({"t_a": {"after": ["x"], "run": NULL}})
    manager.take_calls()
    manager.replay_failed_instance("t_a#0")
    manual.run_all()
    assert manager.take_calls() == [("replay", "t_a#0", "replayed"), ("fire", "t_a", [])]


def test_skip_without_cascade_calls_only_post_skip(
    manager: RecordingManager, manual: ManualRunner
) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": FAIL}, "t_b": {"after": ["t_a"], "run": NULL}}
    )
    manager.fire("x")
    manual.run_all()
    manager.take_calls()
    manager.skip_failed_instance("t_a#0")
    assert manager.take_calls() == [("skip", "t_a#0", "skipped", False)]
    assert manual.queue == []


def test_post_skip_comes_after_its_cascade(manager: RecordingManager, manual: ManualRunner) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": FAIL}, "t_b": {"after": ["t_a"], "run": NULL}}
    )
    manager.fire("x")
    manual.run_all()
    manager.take_calls()
    manager.skip_failed_instance("t_a#0", cascade=True, result={"r": 1})
    assert manager.take_calls() == [
        ("fire", "t_a", [("t_b#0", "scheduled")]),
        ("skip", "t_a#0", "skipped", True),
    ]
    manual.run_all()
    assert manager.take_calls() == [("fire", "t_b", [])]


def test_self_retry_calls_post_replay(manager: RecordingManager, manual: ManualRunner) -> None:
    manager.update_configuration(
        {
            "t_r": {
                "after": ["x"],
                "run": SelfRetryingTask.name,
                "withParams": {"retries": {"max": 1}},
            }
        }
    )
    manager.fire("x")
    manual.run_all()
    assert manager.take_calls() == [
        ("fire", "x", [("t_r#0", "scheduled")]),
        ("replay", "t_r#0", "replayed"),
        ("fire", "t_r", []),
    ]


def test_run_instance_reports_the_start_before_the_task_runs(
    manager: RecordingManager, manual: ManualRunner
) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "run": NULL}})
    manager.fire("x")
    seen: list[tuple[str, str, str]] = []

    def on_started(instance: TaskInstance) -> None:
        stored = manager.storage[instance.name].status.value
        seen.append((instance.name, instance.status.value, stored))

    assert manual.queue == [(manager, "t_a#0")]
    finished = manager.run_instance("t_a#0", on_started=on_started)
    assert finished is not None
    assert finished.status is Status.FINISHED
    assert seen == [("t_a#0", "running", "running")]
    # an instance that is no longer scheduled is not started: no call
    assert manager.run_instance("t_a#0", on_started=on_started) is None
    assert len(seen) == 1


def test_update_instance_status_calls_post_fire_only_when_cascading(
    manager: RecordingManager, manual: ManualRunner
) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x", "y"], "run": NULL}, "t_b": {"after": ["t_a"], "run": NULL}}
    )
    manager.fire("x")
    manager.take_calls()
    manager.update_instance_status("t_a#0", "failed")
    assert manager.take_calls() == []
    manager.update_instance_status("t_a#0", "finished", cascade=True)
    assert manager.take_calls() == [("fire", "t_a", [("t_b#0", "scheduled")])]
    manager.update_instance_metadata("t_a#0", {"k": 1})
    manager.mark_instance_logs_resolved("t_a#0")
    assert manager.take_calls() == []


# -- hooks that raise ---------------------------------------------------------------------------


def test_post_fire_that_raises_leaves_the_fire_committed(
    storage: Storage, runner: ThreadingTaskRunner
) -> None:
    manager = threaded(storage, runner, raise_in=("fire:x",))
    manager.update_configuration({"t_a": {"after": ["x"], "run": PASS}})
    with pytest.raises(RuntimeError, match="hook fire broke"):
        manager.fire("x", {"n": 1})
    # Committed and dispatched before the hook ran: the instance still runs.
    assert_instance_finished(manager, "t_a#0", {"kwargs": {"x": {"n": 1}}})
    assert storage.latest_kwargs["x"] == {"n": 1}
    with pytest.raises(RuntimeError, match="hook fire broke"):
        manager.fire("x", {"n": 2})
    assert list(storage.instances) == ["t_a#0"]
    assert_unresolved_instances(manager, [])


def test_post_fire_that_raises_in_a_cascade_reaches_join_all(
    storage: Storage, runner: ThreadingTaskRunner
) -> None:
    manager = threaded(storage, runner, raise_in=("fire:t_a",))
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": PASS}, "t_b": {"after": ["t_a"], "run": PASS}}
    )
    manager.fire("x")
    with pytest.raises(RuntimeError, match="hook fire broke"):
        runner.join_all()
    checker = TriggerManager(storage)  # no runner needed to inspect
    assert_instance_finished(checker, "t_a#0", {"kwargs": {"x": {}}})
    assert_instance_finished(checker, "t_b#0", {"kwargs": {"t_a": {"kwargs": {"x": {}}}}})


def test_post_replay_that_raises_leaves_the_replay_committed(
    storage: Storage, runner: ThreadingTaskRunner
) -> None:
    manager = threaded(storage, runner, raise_in=("replay",))
    manager.update_configuration({"t_a": {"after": ["x"], "run": FAIL}})
    manager.fire("x")
    assert_instance_failed(manager, "t_a#0", RuntimeError)
    manager.update_configuration({"t_a": {"after": ["x"], "run": PASS}})
    with pytest.raises(RuntimeError, match="hook replay broke"):
        manager.replay_failed_instance("t_a#0")
    assert_instance_replayed(manager, "t_a#0")
    assert_instance_finished(manager, "t_a#1", {"kwargs": {"x": {}}})


def test_post_skip_that_raises_leaves_the_skip_committed(
    storage: Storage, runner: ThreadingTaskRunner
) -> None:
    manager = threaded(storage, runner, raise_in=("skip",))
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": FAIL}, "t_b": {"after": ["t_a"], "run": PASS}}
    )
    manager.fire("x")
    assert_instance_failed(manager, "t_a#0", RuntimeError)
    with pytest.raises(RuntimeError, match="hook skip broke"):
        manager.skip_failed_instance("t_a#0", cascade=True, result={"r": 1})
    assert_instance_skipped(manager, "t_a#0")
    assert_instance_finished(manager, "t_b#0", {"kwargs": {"t_a": {"r": 1}}})


# -- runners that fail to dispatch ----------------------------------------------------------------


def test_dispatch_failure_fails_the_instance_and_reaches_the_caller(
    storage: Storage, runner: ThreadingTaskRunner
) -> None:
    manager = RecordingManager(storage, runners={"broken": BrokenRunner()}, default_runner="broken")
    manager.update_configuration({"t_a": {"after": ["x"], "run": PASS}})
    with pytest.raises(DispatchError) as caught:
        manager.fire("x", {"n": 1})
    assert [name for name, _ in caught.value.failures] == ["t_a#0"]
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert "could not dispatch t_a#0: ConnectionError: broker down" in str(caught.value)
    failed = assert_instance_failed(manager, "t_a#0", ConnectionError)
    assert failed.metadata["exceptionContext"] == {"dispatch": "broken"}
    assert "broker down, could not send t_a#0" in failed.metadata["exceptionInfo"]
    assert failed.can_replay
    # The hook ran before the runner got the instance: it saw what the fire committed.
    assert manager.take_calls() == [("fire", "x", [("t_a#0", "scheduled")])]
    assert storage.latest_kwargs == {"x": {"n": 1}}
    # Once a working runner is available, the instance is replayable.
    working = TriggerManager(storage, runners={"threading": runner})
    working.replay_failed_instance("t_a#0")
    assert_instance_replayed(working, "t_a#0")
    assert_instance_finished(working, "t_a#1", {"kwargs": {"x": {"n": 1}}})


def test_dispatch_failure_of_one_instance_does_not_stop_the_others(
    storage: Storage, runner: ThreadingTaskRunner
) -> None:
    manager = TriggerManager(storage, runners={"threading": runner, "broken": BrokenRunner()})
    manager.update_configuration(
        {
            "t_a": {"after": ["x"], "run": PASS, "using": "broken"},
            "t_b": {"after": ["x"], "run": PASS},
        }
    )
    with pytest.raises(DispatchError) as caught:
        manager.fire("x")
    assert [name for name, _ in caught.value.failures] == ["t_a#0"]
    assert_instance_failed(manager, "t_a#0", ConnectionError)
    assert_instance_finished(manager, "t_b#0", {"kwargs": {"x": {}}})


def test_dispatch_failure_in_a_cascade_reaches_join_all(
    storage: Storage, runner: ThreadingTaskRunner
) -> None:
    manager = TriggerManager(storage, runners={"threading": runner, "broken": BrokenRunner()})
    manager.update_configuration(
        {
            "t_a": {"after": ["x"], "run": PASS},
            "t_b": {"after": ["t_a"], "run": PASS, "using": "broken"},
        }
    )
    manager.fire("x")
    with pytest.raises(DispatchError):
        runner.join_all()
    checker = TriggerManager(storage)
    assert_instance_finished(checker, "t_a#0", {"kwargs": {"x": {}}})
    assert_instance_failed(checker, "t_b#0", ConnectionError)
    assert_instance_missing(checker, "t_b#1")
    assert checker.storage["t_b#0"].status is Status.FAILED
