"""Session state: statuses, task instances and the session as a whole.

All values are frozen. Mappings inside them are never mutated by the library
(every transition builds new ones); treat them as read-only.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from triggers_core.engine.config import TaskConfig
from triggers_core.engine.idempotency import FireKey
from triggers_core.engine.levels import ERROR, NOTSET, level_name
from triggers_core.engine.task_table import TaskTable
from triggers_core.engine.values import copy_json, copy_json_sorted

__all__ = [
    "RESOLVED_STATUSES",
    "SessionState",
    "Status",
    "TaskInstance",
    "copy_instance",
    "instance_name",
]


class Status(enum.Enum):
    """The life cycle of a task instance."""

    UNSTARTED = "unstarted"  #: waiting for (some of) its ``after`` triggers
    SCHEDULED = "scheduled"  #: ready; handed to its runner
    RUNNING = "running"  #: a runner is executing it
    FINISHED = "finished"  #: returned a result; its name fired as a trigger
    FAILED = "failed"  #: raised; may be replayed or skipped
    SKIPPED = "skipped"  #: skipped itself, or a failed instance was skipped
    REPLAYED = "replayed"  #: failed, then replaced by a clone
    ABANDONED = "abandoned"  #: all of its ``unless`` triggers fired before it started
    EXPIRED = "expired"  #: its ``within`` window ran out before its ``after`` was met

    def __str__(self) -> str:
        return self.value


#: Statuses after which an instance never changes again on its own.
RESOLVED_STATUSES = frozenset(
    {Status.FINISHED, Status.SKIPPED, Status.REPLAYED, Status.ABANDONED, Status.EXPIRED}
)


def instance_name(task_name: str, number: int) -> str:
    """Instances are named ``{task}#{n}`` with n counting from 0 per task."""
    return f"{task_name}#{number}"


@attrs.frozen
class TaskInstance:
    """One execution (past, present or future) of a trigger task.

    ``kwargs`` maps each recorded ``after`` trigger to the kwargs it fired with;
    ``unless_fired`` holds the recorded ``unless`` triggers. ``metadata`` holds
    ``created``, ``lastModified``, ``timestamps`` (status -> ISO time), and,
    depending on the outcome, ``actualKwargs``, ``result``, ``exceptionType``,
    ``exceptionInfo``, ``exceptionContext``, ``logLevel``, ``parent``, ``depth``; with
    time conditions ``deadline`` (when its ``within`` window closes), ``delayedUntil``
    (when a delayed ready instance, or a retry's clone waiting for its cooldown, is
    scheduled), ``retryCooldown`` (that cooldown's seconds) and, once expired, ``missing``.
    """

    name: str
    task_name: str
    status: Status
    kwargs: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    unless_fired: frozenset[str] = frozenset()
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    retries: int = 0
    log_level: int = NOTSET
    logs_marked_resolved: bool = False

    @property
    def number(self) -> int:
        """The ``n`` in ``{task}#{n}``."""
        return int(self.name.rsplit("#", 1)[1])

    @property
    def can_run(self) -> bool:
        """A runner may start it (it is scheduled)."""
        return self.status is Status.SCHEDULED

    @property
    def can_schedule(self) -> bool:
        """It still waits for triggers and may become ready."""
        return self.status is Status.UNSTARTED

    @property
    def can_abandon(self) -> bool:
        """Its ``unless`` triggers may still abandon it."""
        return self.status is Status.UNSTARTED

    @property
    def can_replay(self) -> bool:
        """Only failed instances can be replayed."""
        return self.status is Status.FAILED

    @property
    def can_skip(self) -> bool:
        """Only failed instances can be skipped by an operator."""
        return self.status is Status.FAILED

    @property
    def is_resolved(self) -> bool:
        """Finished, skipped, replayed, abandoned or expired: history that never changes."""
        return self.status in RESOLVED_STATUSES

    @property
    def log_level_name(self) -> str:
        """``log_level`` as a name (``NOTSET`` if nothing was logged)."""
        return level_name(self.log_level)

    @property
    def logs_resolved(self) -> bool:
        """False while the instance logged at ERROR or above and nobody resolved it."""
        return self.logs_marked_resolved or self.log_level < ERROR


def _task_table(tasks: Mapping[str, TaskConfig]) -> TaskTable:
    return TaskTable.of(tasks)


def copy_instance(instance: TaskInstance, *, sort_keys: bool = False) -> TaskInstance:
    """The same instance with its own copies of every mutable value (kwargs, metadata).

    With ``sort_keys`` mapping keys come out sorted, as JSON storages return them.
    """
    copy = copy_json_sorted if sort_keys else copy_json
    return TaskInstance(
        name=instance.name,
        task_name=instance.task_name,
        status=instance.status,
        kwargs={trigger: copy(kwargs) for trigger, kwargs in instance.kwargs.items()},
        unless_fired=frozenset(instance.unless_fired),
        metadata=copy(instance.metadata),
        retries=instance.retries,
        log_level=instance.log_level,
        logs_marked_resolved=instance.logs_marked_resolved,
    )


@attrs.frozen
class SessionState:
    """Everything a session knows, or the working set a storage loaded of it.

    A state loaded for an operation holds the *header* (``tasks``,
    ``latest_kwargs``, ``counters``, ``unsettled``, ``settled``) plus the instances that
    operation can read or change (see :mod:`triggers_core.engine.scopes`); it may omit
    everything else. ``counters`` gives the next instance number per task (0 =
    no instance yet), so the engine never needs history to name or count
    instances.

    ``unsettled`` names, per task, the unstarted instances that a fire of the
    task's ``andEvery`` trigger may change although the trigger is none of its
    ``after``/``unless`` triggers: those that have not recorded the ``andEvery``
    trigger, and those already complete or abandonable (after a configuration
    change or a forced status). The engine keeps it up to date; tasks with no
    such instance are omitted.

    ``settled`` names, per task, triggers that every unstarted instance of the
    task has already recorded, in every role the trigger has for the task
    (``kwargs`` for an after/andEvery trigger, ``unless_fired`` for an unless
    trigger); all of its triggers when it has no unstarted instance. A fire of
    a settled trigger changes none of those instances, so it does not read
    them. It is conservative: the engine may leave out a trigger that is
    settled (an absent task means none are known), never include one that is
    not.
    """

    tasks: TaskTable = attrs.field(factory=TaskTable, converter=_task_table)
    instances: Mapping[str, TaskInstance] = attrs.field(factory=dict)
    latest_kwargs: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    counters: Mapping[str, int] = attrs.field(factory=dict)
    unsettled: Mapping[str, frozenset[str]] = attrs.field(factory=dict)
    settled: Mapping[str, frozenset[str]] = attrs.field(factory=dict)
    fire_records: Mapping[FireKey, tuple[str, ...]] = attrs.field(factory=dict)

    def instances_of(self, task_name: str) -> Iterator[TaskInstance]:
        """Loaded instances of one task, in creation order."""
        found = [i for i in self.instances.values() if i.task_name == task_name]
        return iter(sorted(found, key=lambda i: i.number))

    def without_resolved(self) -> SessionState:
        """The working set: this state minus resolved instances."""
        return attrs.evolve(
            self, instances={n: i for n, i in self.instances.items() if not i.is_resolved}
        )
