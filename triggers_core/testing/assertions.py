"""Assertions about a session's instances, shared by the unittest mixin and pytest.

Each helper takes a :class:`~triggers_core.TriggerManager` (or a bare
:class:`~triggers_core.Storage`) and first waits for the manager's
:class:`~triggers_core.ThreadingTaskRunner` instances (:func:`wait_for_tasks`),
so a test can fire triggers and assert straight away. On failure they raise
``AssertionError`` with the instance's status, metadata and traceback
(``exceptionInfo``), or the session's instances when one is missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from triggers_core.engine.state import Status, TaskInstance
from triggers_core.errors import UnknownInstanceError
from triggers_core.runtime.runners import ThreadingTaskRunner
from triggers_core.runtime.storage import Storage

if TYPE_CHECKING:
    from triggers_core.runtime.manager import TriggerManager

__all__ = [
    "assert_instance_abandoned",
    "assert_instance_expired",
    "assert_instance_failed",
    "assert_instance_finished",
    "assert_instance_missing",
    "assert_instance_replayed",
    "assert_instance_skipped",
    "assert_instance_status",
    "assert_instance_unstarted",
    "assert_unresolved_instances",
    "assert_unresolved_tasks",
    "describe_instance",
    "describe_session",
    "exception_type_label",
    "wait_for_tasks",
]

#: How long the assertions wait for task threads before giving up (seconds).
JOIN_TIMEOUT = 60.0


def wait_for_tasks(target: TriggerManager | Storage, timeout: float | None = JOIN_TIMEOUT) -> None:
    """Wait for every instance (and cascade) run by ``target``'s threading runners.

    A bare storage has no runner, so there is nothing to wait for. Errors a task
    thread hit outside the task itself (for example a hook that raised during
    a cascade) are re-raised here.
    """
    if isinstance(target, Storage):
        return
    # Only the threading runner can be waited for in-process.
    for runner in target.runners.values():
        if isinstance(runner, ThreadingTaskRunner):
            runner.join_all(timeout)


def _storage(target: TriggerManager | Storage) -> Storage:
    return target if isinstance(target, Storage) else target.storage


def exception_type_label(exc_type: type[BaseException] | str) -> str:
    """The ``exceptionType`` a failure of ``exc_type`` records (``module.Name``).

    Built-in exceptions include their module too: ``builtins.RuntimeError``.
    """
    if isinstance(exc_type, str):
        return exc_type
    return f"{exc_type.__module__}.{exc_type.__qualname__}"


def describe_instance(instance: TaskInstance, expected: str | None = None) -> str:
    """A multi-line description of an instance (status, kwargs, metadata, traceback)."""
    metadata = {k: v for k, v in instance.metadata.items() if k != "exceptionInfo"}
    headline = f"instance {instance.name!r} is {instance.status.value}"
    if expected is not None:
        headline += f", expected {expected}"
    lines = [
        headline,
        f"kwargs: {_json(instance.kwargs)}",
        f"metadata: {_json(metadata)}",
    ]
    if instance.unless_fired:
        lines.append(f"unless fired: {sorted(instance.unless_fired)}")
    info = instance.metadata.get("exceptionInfo")
    if info:
        lines.append("traceback (exceptionInfo):")
        lines.append(str(info).rstrip())
    return "\n".join(lines)


def describe_session(storage: Storage) -> str:
    """One line per instance (``name: status``), for assertion messages."""
    instances = storage.instances
    if not instances:
        return "the session has no instances"
    return "instances: " + ", ".join(f"{n}: {i.status.value}" for n, i in instances.items())


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, indent=2, default=repr)


def _get(target: TriggerManager | Storage, name: str) -> TaskInstance:
    wait_for_tasks(target)
    storage = _storage(target)
    try:
        return storage[name]
    except UnknownInstanceError:
        raise AssertionError(
            f"instance {name!r} does not exist; {describe_session(storage)}"
        ) from None


def assert_instance_status(
    target: TriggerManager | Storage, name: str, status: Status | str
) -> TaskInstance:
    """Assert that instance ``name`` exists and has ``status``; return it."""
    expected = Status(status)
    instance = _get(target, name)
    if instance.status is not expected:
        raise AssertionError(describe_instance(instance, expected.value))
    return instance


def assert_instance_finished(
    target: TriggerManager | Storage, name: str, result: Mapping[str, Any] | None = None
) -> TaskInstance:
    """Assert ``name`` finished and, if ``result`` is given, returned exactly that."""
    instance = assert_instance_status(target, name, Status.FINISHED)
    if result is not None:
        actual = instance.metadata.get("result")
        if actual != result:
            raise AssertionError(
                f"result of {name!r} differs:\nexpected: {_json(result)}\n"
                f"actual:   {_json(actual)}\n{describe_instance(instance)}"
            )
    return instance


def assert_instance_failed(
    target: TriggerManager | Storage, name: str, exc_type: type[BaseException] | str
) -> TaskInstance:
    """Assert ``name`` failed with ``exc_type`` (a class, or its ``module.Name``)."""
    instance = assert_instance_status(target, name, Status.FAILED)
    expected = exception_type_label(exc_type)
    actual = instance.metadata.get("exceptionType")
    if actual != expected:
        raise AssertionError(
            f"{name!r} failed with {actual}, expected {expected}\n{describe_instance(instance)}"
        )
    return instance


def assert_instance_abandoned(target: TriggerManager | Storage, name: str) -> TaskInstance:
    """Assert ``name`` was abandoned (all its ``unless`` triggers fired first)."""
    return assert_instance_status(target, name, Status.ABANDONED)


def assert_instance_expired(target: TriggerManager | Storage, name: str) -> TaskInstance:
    """Assert ``name`` expired (its ``within`` window closed before its ``after`` was met)."""
    return assert_instance_status(target, name, Status.EXPIRED)


def assert_instance_replayed(target: TriggerManager | Storage, name: str) -> TaskInstance:
    """Assert ``name`` failed and was replaced by a clone."""
    return assert_instance_status(target, name, Status.REPLAYED)


def assert_instance_skipped(target: TriggerManager | Storage, name: str) -> TaskInstance:
    """Assert ``name`` was skipped (by itself or by an operator)."""
    return assert_instance_status(target, name, Status.SKIPPED)


def assert_instance_unstarted(target: TriggerManager | Storage, name: str) -> TaskInstance:
    """Assert ``name`` exists and still waits for triggers."""
    return assert_instance_status(target, name, Status.UNSTARTED)


def assert_instance_missing(target: TriggerManager | Storage, name: str) -> None:
    """Assert that no instance called ``name`` exists."""
    wait_for_tasks(target)
    storage = _storage(target)
    if name in storage:
        raise AssertionError(
            f"expected no instance {name!r}, but it exists\n{describe_instance(storage[name])}"
        )


def assert_unresolved_tasks(target: TriggerManager | Storage, names: Iterable[str]) -> None:
    """Assert exactly ``names`` are the unresolved tasks (in any order)."""
    wait_for_tasks(target)
    storage = _storage(target)
    actual = sorted(t.name for t in storage.get_unresolved_tasks())
    expected = sorted(names)
    if actual != expected:
        raise AssertionError(
            f"unresolved tasks are {actual}, expected {expected}\n{describe_session(storage)}"
        )


def assert_unresolved_instances(target: TriggerManager | Storage, names: Iterable[str]) -> None:
    """Assert exactly ``names`` are the unresolved instances (in any order)."""
    wait_for_tasks(target)
    storage = _storage(target)
    found = storage.get_unresolved_instances()
    actual = sorted(i.name for i in found)
    expected = sorted(names)
    if actual != expected:
        details = "\n".join(describe_instance(i) for i in found)
        raise AssertionError(f"unresolved instances are {actual}, expected {expected}\n{details}")
