"""End-to-end: whatever a task returns or raises, its instance is resolved.

SPEC section 4 and issue 10: a result, metadata or retry argument that cannot
be recorded as it is fails the instance with a message saying why; it is never
left ``running`` (nor a clone ``scheduled`` forever).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NoReturn

import pytest

from triggers_core import (
    Status,
    TaskContext,
    ThreadingTaskRunner,
    TriggerManager,
    TriggerTask,
    with_context,
)
from triggers_core.testing.assertions import (
    assert_instance_failed,
    assert_instance_finished,
    assert_instance_missing,
    wait_for_tasks,
)
from triggers_core.testing.storage_contract import RecordingRunner


class CustomStop(BaseException):
    """A BaseException that is neither KeyboardInterrupt nor SystemExit."""


def _deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"k": value}
    return value


def _self_referencing() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["me"] = loop
    return loop


def _raise(exc: BaseException) -> NoReturn:
    raise exc


#: case -> what the task does with itself (the task instance) when it runs.
CASES: dict[str, Callable[[TriggerTask], Any]] = {
    "huge int": lambda task: {"v": 10**5000},
    "too deep": lambda task: _deep(2000),
    "self-referencing": lambda task: _self_referencing(),
    "nan result": lambda task: {"v": math.nan},
    "set result": lambda task: {"v": {1}},
    "negative cooldown": lambda task: task.retry(cooldown=-1),
    "nan cooldown": lambda task: task.retry(cooldown=math.nan),
    "infinite cooldown": lambda task: task.retry(cooldown=math.inf),
    "huge cooldown": lambda task: task.retry(cooldown=1e300),
    "bool cooldown": lambda task: task.retry(cooldown=True),  # type: ignore[arg-type]
    "bad retry metadata": lambda task: task.retry(metadata={"when": object()}),
    "bad replacement kwargs": lambda task: task.retry(replacement_kwargs={"x": 1}),
    "deep replacement kwargs": lambda task: task.retry(replacement_kwargs={"x": _deep(100)}),
    "bad skip metadata": lambda task: task.skip({"v": math.inf}),
    "base exception": lambda task: _raise(CustomStop("stop right there")),
    "cancelled": lambda task: _raise(asyncio.CancelledError()),
    "generator exit": lambda task: _raise(GeneratorExit()),
    "bad context": lambda task: _raise(with_context(RuntimeError("boom"), {"x": object()})),
}

#: case -> (exceptionType, text the exceptionInfo must contain).
EXPECTED: dict[str, tuple[str, str]] = {
    "huge int": (
        "triggers_core.errors.InvalidKwargsError",
        "result.v: an integer of 16610 bits is out of range",
    ),
    "too deep": (
        "triggers_core.errors.InvalidKwargsError",
        "nested deeper than 64 levels",
    ),
    "self-referencing": ("triggers_core.errors.InvalidKwargsError", "result.me: refers to itself"),
    "nan result": ("triggers_core.errors.InvalidKwargsError", "result.v: nan is not"),
    "set result": ("triggers_core.errors.InvalidKwargsError", "result.v: set is not"),
    "negative cooldown": (
        "builtins.ValueError",
        "cooldown must be a number of seconds from 0 to 86400",
    ),
    "nan cooldown": ("builtins.ValueError", "got nan"),
    "infinite cooldown": ("builtins.ValueError", "got inf"),
    "huge cooldown": ("builtins.ValueError", "got 1e+300"),
    "bool cooldown": ("builtins.ValueError", "got True"),
    "bad retry metadata": (
        "triggers_core.errors.InvalidKwargsError",
        "metadata.when: object is not JSON-serializable",
    ),
    "bad replacement kwargs": (
        "triggers_core.errors.InvalidKwargsError",
        "replacement_kwargs.x: expected a mapping (kwargs per trigger), got int",
    ),
    "deep replacement kwargs": (
        "triggers_core.errors.InvalidKwargsError",
        "nested deeper than 64",
    ),
    "bad skip metadata": (
        "triggers_core.errors.InvalidKwargsError",
        "metadata.v: inf is not representable in JSON",
    ),
    "base exception": (f"{__name__}.CustomStop", "stop right there"),
    "cancelled": ("asyncio.exceptions.CancelledError", "CancelledError"),
    "generator exit": ("builtins.GeneratorExit", "GeneratorExit"),
    "bad context": ("builtins.RuntimeError", "with_context() data was dropped"),
}


class OutcomeTask(TriggerTask):
    """Does what ``CASES[kwargs["x"]["case"]]`` says."""

    name: ClassVar[str] = "tests.core.outcomes.Outcome"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        result: Mapping[str, Any] = CASES[context.trigger_kwargs["x"]["case"]](self)
        return result


class BadMaxRetriesTask(TriggerTask):
    name: ClassVar[str] = "tests.core.outcomes.BadMaxRetries"
    max_retries = "3"  # type: ignore[assignment]

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        self.retry()


class StopTask(TriggerTask):
    name: ClassVar[str] = "tests.core.outcomes.Stop"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        raise KeyboardInterrupt


def configure(manager: TriggerManager, run: str) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": run}, "t_b": {"after": ["t_a"], "run": run}}
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_any_outcome_resolves_the_instance(manager: TriggerManager, case: str) -> None:
    assert set(CASES) == set(EXPECTED)
    configure(manager, OutcomeTask.name)
    manager.fire("x", {"case": case})
    wait_for_tasks(manager)

    exc_type, text = EXPECTED[case]
    failed = assert_instance_failed(manager, "t_a#0", exc_type)
    assert text in failed.metadata["exceptionInfo"]
    assert failed.log_level >= 40
    assert_instance_missing(manager, "t_b#0")  # nothing cascaded
    assert [i.status for i in manager.storage.instances.values()] == [Status.FAILED]
    # It can be replayed like any failure (the clone fails the same way).
    clone = manager.replay_failed_instance("t_a#0")
    wait_for_tasks(manager)
    assert_instance_failed(manager, clone.name, exc_type)


def test_a_bad_max_retries_is_a_failure_not_a_stuck_instance(manager: TriggerManager) -> None:
    configure(manager, BadMaxRetriesTask.name)
    manager.fire("x")
    wait_for_tasks(manager)
    failed = assert_instance_failed(manager, "t_a#0", ValueError)
    assert "max_retries must be an integer >= 0, got '3'" in failed.metadata["exceptionInfo"]


def test_keyboard_interrupt_stops_the_caller(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "run": StopTask.name}})
    by_hand = TriggerManager(  # schedules only; the test runs the instance itself
        manager.storage, runners={"rec": RecordingRunner()}, default_runner="rec"
    )
    by_hand.fire("x")
    with pytest.raises(KeyboardInterrupt):
        by_hand.run_instance("t_a#0")
    # The process is stopping: the instance stays running, for get_stale_instances().
    assert manager.storage["t_a#0"].status is Status.RUNNING


def test_a_valid_cooldown_still_retries(
    manager: TriggerManager, runner: ThreadingTaskRunner
) -> None:
    """On real time: the store's clock thread (every second) runs the retry when due."""
    configure(manager, RetryOnceTask.name)
    manager.fire("x")
    wait_for_tasks(manager)
    assert manager.storage["t_a#0"].status is Status.REPLAYED
    deadline = time.monotonic() + 20
    while manager.storage["t_a#1"].status is not Status.FINISHED:
        assert time.monotonic() < deadline, manager.storage.debug_repr()
        time.sleep(0.05)
    runner.join_all()
    assert_instance_finished(manager, "t_a#1", {"retried": True})


class RetryOnceTask(TriggerTask):
    name: ClassVar[str] = "tests.core.outcomes.RetryOnce"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        if context.retries == 0:
            self.retry(cooldown=0.01, metadata={"why": "once"})
        return {"retried": True}
