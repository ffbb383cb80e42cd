"""The threading runner reuses idle threads, never limits them, and lets idle ones end."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

from triggers_core import (
    MemoryStorage,
    MemoryStore,
    TaskContext,
    ThreadingTaskRunner,
    TriggerManager,
    TriggerTask,
)
from triggers_core.testing.assertions import assert_instance_finished, assert_instance_unstarted
from triggers_core.testing.clock import FakeClock

#: The threads that ran ThreadRecordingTask, in order.
_threads: list[threading.Thread] = []
#: Set by WaitedForTask; WaitingTask and RetryThenWaitTask wait for it.
_waited_for_ran = threading.Event()


class ThreadRecordingTask(TriggerTask):
    """Returns (and records) the thread it runs in."""

    name: ClassVar[str] = "tests.core.pool.ThreadRecording"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        thread = threading.current_thread()
        _threads.append(thread)
        return {"ident": thread.ident, "thread": thread.name}


class WaitedForTask(TriggerTask):
    """What the waiting tasks wait for."""

    name: ClassVar[str] = "tests.core.pool.WaitedFor"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        _waited_for_ran.set()
        return {"ident": threading.get_ident()}


class WaitingTask(TriggerTask):
    """Fires ``b`` (which schedules WaitedForTask), then waits for that task to run."""

    name: ClassVar[str] = "tests.core.pool.Waiting"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        context.manager.fire("b")
        return {"saw_b": _waited_for_ran.wait(timeout=30), "ident": threading.get_ident()}


class RetryThenWaitTask(TriggerTask):
    """Retries once after a cooldown; the retry waits for WaitedForTask to run."""

    name: ClassVar[str] = "tests.core.pool.RetryThenWait"
    max_retries: ClassVar[int] = 1

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        if context.retries == 0:
            self.retry(cooldown=0.3)
        return {"saw_b": _waited_for_ran.wait(timeout=30)}


def make_manager(runner: ThreadingTaskRunner, config: Mapping[str, Any]) -> TriggerManager:
    storage = MemoryStorage(f"pool-{uuid.uuid4().hex}", MemoryStore())
    manager = TriggerManager(storage, runners={"threading": runner})
    manager.update_configuration(config)
    return manager


EVERY_X = {"t_a": {"after": ["x"], "andEvery": "x", "run": ThreadRecordingTask.name}}


def test_sequential_instances_run_on_one_reused_thread() -> None:
    _threads.clear()
    runner = ThreadingTaskRunner(keep_alive=60)
    manager = make_manager(runner, EVERY_X)
    results = []
    for n in range(5):
        manager.fire("x", {"n": n})
        runner.join_all()
        results.append(manager.storage[f"t_a#{n}"].metadata["result"])
    # A thread is idle again before join_all sees its instance done: always reused.
    assert len(_threads) == 5
    assert all(thread is _threads[0] for thread in _threads), _threads
    # Named after the instance it runs, as a thread of its own would be.
    assert [r["thread"] for r in results] == [f"triggers:t_a#{n}" for n in range(5)]


def test_an_idle_thread_ends_after_keep_alive_and_work_gets_a_new_one() -> None:
    _threads.clear()
    runner = ThreadingTaskRunner(keep_alive=0.05)
    manager = make_manager(runner, EVERY_X)
    manager.fire("x", {"n": 0})
    runner.join_all()
    first = _threads[0]
    first.join(timeout=30)
    assert not first.is_alive()
    manager.fire("x", {"n": 1})
    runner.join_all()
    assert_instance_finished(
        manager, "t_a#1", {"ident": _threads[1].ident, "thread": "triggers:t_a#1"}
    )
    assert _threads[1] is not first


def test_a_task_waiting_for_another_task_never_starves_it() -> None:
    """No pool limit: the waited-for task gets a thread although the only idle one is busy."""
    _waited_for_ran.clear()
    runner = ThreadingTaskRunner(keep_alive=60)
    manager = make_manager(
        runner,
        {
            **EVERY_X,
            "t_waiting": {"after": ["a"], "run": WaitingTask.name},
            "t_waited_for": {"after": ["b"], "run": WaitedForTask.name},
        },
    )
    manager.fire("x")  # leaves exactly one idle thread
    runner.join_all()
    manager.fire("a")
    runner.join_all()
    waiting = assert_instance_finished(manager, "t_waiting#0")
    assert waiting.metadata["result"]["saw_b"] is True
    waited_for = manager.storage["t_waited_for#0"].metadata["result"]
    assert waited_for["ident"] != waiting.metadata["result"]["ident"]


def test_a_retry_cooldown_holds_no_thread() -> None:
    """The cooldown is a timer in the storage: no runner thread sleeps through it."""
    _waited_for_ran.clear()
    runner = ThreadingTaskRunner(keep_alive=60)
    clock = FakeClock()
    storage = MemoryStorage(f"pool-{uuid.uuid4().hex}", MemoryStore())
    manager = TriggerManager(storage, runners={"threading": runner}, clock=clock)
    manager.update_configuration(
        {
            "t_retry": {"after": ["a"], "run": RetryThenWaitTask.name},
            "t_waited_for": {"after": ["b"], "run": WaitedForTask.name},
        }
    )
    manager.fire("a")
    runner.join_all(timeout=5)  # returns at once: nothing runs during the cooldown
    assert runner.pending == 0
    assert_instance_unstarted(manager, "t_retry#1")
    manager.fire("b")
    runner.join_all()
    clock.advance(0.3)  # the cooldown ends: the retry is scheduled and runs
    runner.join_all()
    assert_instance_finished(manager, "t_retry#1", {"saw_b": True})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # 3.12+: fork with threads
def test_a_forked_child_does_not_hand_work_to_its_parents_idle_threads() -> None:
    runner = ThreadingTaskRunner(keep_alive=60)
    manager = make_manager(runner, EVERY_X)
    manager.fire("x")
    runner.join_all()  # one idle thread, which the child will not have
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            manager.fire("x")
            runner.join_all(timeout=20)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_keep_alive_must_be_positive(value: float) -> None:
    with pytest.raises(ValueError, match="keep_alive must be a number of seconds > 0"):
        ThreadingTaskRunner(keep_alive=value)
