"""What a task's ``after``/``andEvery``/``unless`` ask for, and what an instance still lacks.

The workflow tools (:mod:`~triggers_core.lint`, :mod:`~triggers_core.explain`,
:mod:`~triggers_core.render`) read a task's conditions only through these
functions, so a richer kind of condition is taught to all of them here, in
one place. Everything is pure and reads a :class:`~triggers_core.config.TaskConfig`
and, for an instance, its recorded ``kwargs`` and ``unless_fired``.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from triggers_core.config import TaskConfig
from triggers_core.state import TaskInstance

__all__ = [
    "Reference",
    "after_triggers",
    "is_complete",
    "missing_after",
    "missing_unless",
    "references",
    "unless_complete",
    "unless_recorded",
    "unless_triggers",
]


@attrs.frozen
class Reference:
    """One trigger name a task's configuration refers to, and where."""

    #: The task whose directive names it.
    task: str
    trigger: str
    #: ``after``, ``andEvery`` or ``unless``.
    directive: str
    #: The path of the reference in the configuration (``t_score.after[1]``).
    path: str


def references(task: TaskConfig) -> list[Reference]:
    """Every trigger name the task's ``after``, ``andEvery`` and ``unless`` name, with paths."""
    found = [
        Reference(task.name, trigger, "after", f"{task.name}.after[{i}]")
        for i, trigger in enumerate(task.after)
    ]
    if task.and_every is not None:
        found.append(Reference(task.name, task.and_every, "andEvery", f"{task.name}.andEvery"))
    found.extend(
        Reference(task.name, trigger, "unless", f"{task.name}.unless[{i}]")
        for i, trigger in enumerate(task.unless)
    )
    return found


def after_triggers(task: TaskConfig) -> tuple[str, ...]:
    """The triggers that must all fire before an instance is ready (``andEvery`` last)."""
    names = list(task.after)
    if task.and_every is not None and task.and_every not in names:
        names.append(task.and_every)
    return tuple(names)


def unless_triggers(task: TaskConfig) -> tuple[str, ...]:
    """The triggers that, once all have fired, abandon unstarted instances."""
    return task.unless


def missing_after(task: TaskConfig, recorded: Mapping[str, object]) -> tuple[str, ...]:
    """The ``after``/``andEvery`` triggers not in ``recorded`` (an instance's ``kwargs``)."""
    return tuple(t for t in after_triggers(task) if t not in recorded)


def is_complete(task: TaskConfig, instance: TaskInstance) -> bool:
    """Every trigger the instance waits for is recorded (it is, or would be, ready)."""
    return not missing_after(task, instance.kwargs)


def unless_recorded(task: TaskConfig, instance: TaskInstance) -> tuple[str, ...]:
    """The task's ``unless`` triggers the instance recorded, in configuration order."""
    return tuple(t for t in task.unless if t in instance.unless_fired)


def missing_unless(task: TaskConfig, instance: TaskInstance) -> tuple[str, ...]:
    """The task's ``unless`` triggers the instance has not recorded."""
    return tuple(t for t in task.unless if t not in instance.unless_fired)


def unless_complete(task: TaskConfig, instance: TaskInstance) -> bool:
    """The task has ``unless`` triggers and the instance recorded them all (it is abandoned)."""
    return bool(task.unless) and not missing_unless(task, instance)
