"""What every engine operation returns, and the one builder that makes it.

:class:`Transition` is the result of an operation: the new state, the names of
the instances it created or changed, and the effects the shell performs
*after* the new state is committed. :class:`Builder` accumulates one
transition (the only mutable thing in the engine); the helpers below it are
shared by the operations in :mod:`~triggers_core.engine.fire`,
:mod:`~triggers_core.engine.running`, :mod:`~triggers_core.engine.recovery`,
:mod:`~triggers_core.engine.manual` and
:mod:`~triggers_core.engine.reconfigure`.

Every operation keeps ``SessionState.unsettled`` exact and ``settled``
conservative for the instances it writes (see
:mod:`triggers_core.engine.scopes`), and reports the instances it created
(which must not exist yet in the store) and whether the configuration changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import attrs

from triggers_core.engine.config import TaskConfig
from triggers_core.engine.effects import DuplicateFire, Effect, ScheduleInstance
from triggers_core.engine.idempotency import FireKey
from triggers_core.engine.latest import LatestKwargs
from triggers_core.engine.leases import Due, due_of
from triggers_core.engine.scopes import (
    Changes,
    is_unsettled,
    settled_triggers,
    still_settled,
    task_triggers,
)
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.engine.values import deep_merge, to_json_mapping
from triggers_core.errors import InvalidTransitionError, UnknownInstanceError

__all__ = [
    "CASCADE_DEPTH_EXCEEDED_TYPE",
    "DEFAULT_MAX_CASCADE_DEPTH",
    "MAX_COOLDOWN",
    "MAX_RETRIES_EXCEEDED_TYPE",
    "RETRY_TYPE",
    "Builder",
    "Transition",
    "check_cooldown",
    "task_kwargs",
]

_K = TypeVar("_K")
_V = TypeVar("_V")

NOTHING: frozenset[str] = frozenset()
NO_RECORDS: Mapping[FireKey, tuple[str, ...]] = MappingProxyType({})
NO_DUE: Mapping[str, Due | None] = MappingProxyType({})

#: ``exceptionType`` recorded when a task retries past its ``max_retries``.
MAX_RETRIES_EXCEEDED_TYPE = "triggers_core.errors.MaxRetriesExceeded"
#: ``exceptionType`` recorded when an instance would run deeper than ``max_cascade_depth``.
CASCADE_DEPTH_EXCEEDED_TYPE = "triggers_core.errors.CascadeDepthExceeded"
#: How many cascades may lead to an instance before it fails instead of running.
DEFAULT_MAX_CASCADE_DEPTH = 1000
#: The longest ``retry(cooldown=...)`` in seconds (one day).
MAX_COOLDOWN = 86_400.0
#: ``exceptionType`` of a retry without an exception: the class ``TriggerTask.retry`` raises.
RETRY_TYPE = "triggers_core.tasks.RetryTask"


@attrs.frozen
class Transition:
    """The result of an operation: the new state, what changed, what to do next."""

    state: SessionState
    effects: tuple[Effect, ...] = ()
    #: Names of instances created or changed (a storage writes just these).
    changed: frozenset[str] = frozenset()
    #: The subset of ``changed`` this transition created (new names).
    created: frozenset[str] = frozenset()
    #: The task configuration changed (only ``update_configuration`` does that).
    config_changed: bool = False
    #: Fire records this transition creates (key -> the names its fire scheduled).
    fire_records: Mapping[FireKey, tuple[str, ...]] = attrs.field(default=NO_RECORDS, hash=False)
    #: False when there is nothing to store (a duplicate fire): the shell does not
    #: compare-and-swap, so a duplicate writes nothing at all.
    commit: bool = True
    #: Due-index entries that changed (see :mod:`triggers_core.engine.leases`).
    due: Mapping[str, Due | None] = attrs.field(default=NO_DUE, hash=False)

    @property
    def scheduled(self) -> tuple[str, ...]:
        """Names of the instances this transition scheduled, in dispatch order."""
        return tuple(e.instance_name for e in self.effects if isinstance(e, ScheduleInstance))

    @property
    def duplicate(self) -> DuplicateFire | None:
        """The fire this transition did not apply again, if any (see ``DuplicateFire``)."""
        for effect in self.effects:
            if isinstance(effect, DuplicateFire):
                return effect
        return None

    @property
    def changes(self) -> Changes:
        """What a storage writes besides the header."""
        return Changes(
            instances=self.changed,
            created=self.created,
            config=self.config_changed,
            fire_records=self.fire_records,
            due=self.due,
        )


class Builder:
    """Accumulates one transition; the only mutable thing in the engine."""

    def __init__(
        self,
        state: SessionState,
        now: datetime,
        max_cascade_depth: int = DEFAULT_MAX_CASCADE_DEPTH,
    ) -> None:
        self.tasks = state.tasks
        self.instances = dict(state.instances)
        # The header mappings are copied on first change only (most operations change
        # none of them): the new state may share an unchanged one with the old state.
        self._latest = CopyOnWrite(state.latest_kwargs)
        self._counters = CopyOnWrite(state.counters)
        self._unsettled = CopyOnWrite(state.unsettled)
        self._settled = CopyOnWrite(state.settled)
        #: ``settled`` as the operation's scope saw it: decides what a fire reads.
        self.initial_settled = state.settled
        self.effects: list[Effect] = []
        self.changed: set[str] = set()
        self.created: set[str] = set()
        self.ts = timestamp(now)
        #: The operation's time (aware): decides which timers are due.
        self.now = now
        #: The cascade depth of the trigger being applied (0: fired from outside).
        self.cascade_depth = 0
        self.max_cascade_depth = check_max_depth(max_cascade_depth)
        # task -> its unstarted instances by name; built on first use, then kept current.
        self._unstarted: dict[str, dict[str, TaskInstance]] | None = None
        #: The fire records the state holds, and those this operation creates.
        self.records = state.fire_records
        self.new_records: dict[FireKey, tuple[str, ...]] | None = None
        #: The instances as the operation found them (their due entries before it).
        self.original = state.instances

    def put(self, instance: TaskInstance) -> None:
        name, task_name = instance.name, instance.task_name
        self.instances[name] = instance
        self.changed.add(name)
        unstarted = instance.status is Status.UNSTARTED
        if self._unstarted is not None:
            if unstarted:
                self._unstarted.setdefault(task_name, {})[name] = instance
            else:
                self._unstarted.get(task_name, {}).pop(name, None)
        # Keep ``unsettled`` exact, judged against the task's current configuration.
        current = self._unsettled.view.get(task_name, frozenset())
        if unstarted and is_unsettled(self.tasks.get(task_name), instance):
            if name not in current:
                self._unsettled.writable()[task_name] = current | {name}
        elif name in current:
            rest = current - {name}
            if rest:
                self._unsettled.writable()[task_name] = rest
            else:
                del self._unsettled.writable()[task_name]
        # ``settled`` only shrinks here: to what this unstarted instance has recorded.
        if unstarted:
            settled = self._settled.view.get(task_name)
            if settled:
                task = self.tasks.get(task_name)
                if task is not None:
                    kept = still_settled(task, instance, settled)
                    if kept is not settled:
                        self._set_settled(task_name, kept)

    def _set_settled(self, task_name: str, triggers: frozenset[str]) -> None:
        current = self._settled.view.get(task_name, NOTHING)
        if current is triggers or current == triggers:
            return
        if triggers:
            self._settled.writable()[task_name] = triggers
        else:
            del self._settled.writable()[task_name]

    def resettle(self, task: TaskConfig) -> None:
        """Recompute ``settled`` of ``task`` exactly: every unstarted instance of it is loaded."""
        triggers = task_triggers(task)
        for instance in self.unstarted(task.name):
            triggers &= settled_triggers(task, instance)
        self._set_settled(task.name, triggers)

    @property
    def latest(self) -> Mapping[str, Mapping[str, Any]]:
        return self._latest.view

    def counter(self, task_name: str) -> int:
        return self._counters.view.get(task_name, 0)

    def next_number(self, task_name: str) -> int:
        """Take the next instance number of a task (its counter goes up by one)."""
        number = self.counter(task_name)
        self._counters.writable()[task_name] = number + 1
        return number

    def set_latest(self, trigger: str, kwargs: Mapping[str, Any]) -> None:
        view = self._latest.view
        if isinstance(view, LatestKwargs):  # read on demand: set without reading the rest
            self._latest.view = view.updated(trigger, kwargs)
            return
        self._latest.writable()[trigger] = kwargs

    @property
    def counters(self) -> Mapping[str, int]:
        return self._counters.view

    def unstarted_index(self) -> Mapping[str, Mapping[str, TaskInstance]]:
        """Task -> its loaded unstarted instances by name (kept current by ``put``)."""
        index = self._unstarted
        if index is None:
            index = self._unstarted = {}
            for instance in self.instances.values():
                if instance.status is Status.UNSTARTED:
                    index.setdefault(instance.task_name, {})[instance.name] = instance
        return index

    def unstarted(self, task_name: str) -> list[TaskInstance]:
        """The loaded unstarted instances of one task, oldest first."""
        index = self._unstarted
        found = (self.unstarted_index() if index is None else index).get(task_name)
        if not found:
            return []
        if len(found) == 1:
            return list(found.values())
        return sorted(found.values(), key=instance_number)

    def get(self, name: str) -> TaskInstance:
        try:
            return self.instances[name]
        except KeyError:
            raise UnknownInstanceError(name) from None

    def build(self) -> Transition:
        new = self.new_records
        state = SessionState(
            tasks=self.tasks,
            instances=self.instances,
            latest_kwargs=self._latest.view,
            counters=self._counters.view,
            unsettled=self._unsettled.view,
            settled=self._settled.view,
            fire_records={**self.records, **new} if new else self.records,
        )
        return Transition(
            state,
            tuple(self.effects),
            frozenset(self.changed),
            frozenset(self.created),
            fire_records=new or NO_RECORDS,
            due=self._due_changes(),
        )

    def _due_changes(self) -> Mapping[str, Due | None]:
        """Due-index entries of the changed instances that differ from what they were."""
        changes: dict[str, Due | None] = {}
        original = self.original
        for name in self.changed:
            before = original.get(name)
            after = due_of(self.instances[name])
            if after != (None if before is None or name in self.created else due_of(before)):
                changes[name] = after
        return changes or NO_DUE


class CopyOnWrite(Generic[_K, _V]):
    """A mapping the builder reads as given and copies on its first change."""

    __slots__ = ("_copy", "view")

    def __init__(self, source: Mapping[_K, _V]) -> None:
        self.view: Mapping[_K, _V] = source
        self._copy: dict[_K, _V] | None = None

    def writable(self) -> dict[_K, _V]:
        if self._copy is None:
            self._copy = dict(self.view)
            self.view = self._copy
        return self._copy


def instance_number(instance: TaskInstance) -> int:
    return instance.number


def timestamp(now: datetime) -> str:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be a timezone-aware datetime, got naive {now!r}")
    return now.astimezone(UTC).isoformat()


#: Metadata the engine keeps (and reads back); merged user metadata never replaces it.
BOOKKEEPING = ("created", "timestamps", "depth", "parent", "cascadeDepth")


def check_max_depth(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"max_cascade_depth must be an integer >= 0, got {value!r}")
    return value


def cascade_depth_of(instance: TaskInstance) -> int:
    depth = instance.metadata.get("cascadeDepth", 0)
    return depth if isinstance(depth, int) and not isinstance(depth, bool) else 0


def check_cooldown(cooldown: object) -> float | None:
    """``cooldown`` as seconds, or None; :class:`ValueError` naming it if out of range.

    A cooldown is a finite number of seconds from 0 to :data:`MAX_COOLDOWN`.
    """
    if cooldown is None:
        return None
    if (
        not isinstance(cooldown, int | float)
        or isinstance(cooldown, bool)
        or not 0 <= cooldown <= MAX_COOLDOWN  # False for NaN too
    ):
        raise ValueError(
            f"cooldown must be a number of seconds from 0 to {MAX_COOLDOWN:g}, got {cooldown!r}"
        )
    return float(cooldown)


def merged_metadata(instance: TaskInstance, extra: Mapping[str, Any], ts: str) -> dict[str, Any]:
    kept = {k: instance.metadata[k] for k in BOOKKEEPING if k in instance.metadata}
    return {**instance.metadata, **extra, **kept, "lastModified": ts}


def set_status(instance: TaskInstance, status: Status, ts: str, /, **metadata: Any) -> TaskInstance:
    # positional-only, so user metadata may use any key ("status", "ts", ...)
    timestamps = dict(instance.metadata.get("timestamps", {}))
    timestamps[status.value] = ts
    meta = {**merged_metadata(instance, metadata, ts), "timestamps": timestamps}
    return with_fields(instance, status=status, metadata=meta)


def with_fields(
    instance: TaskInstance,
    *,
    status: Status | None = None,
    kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    unless_fired: frozenset[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> TaskInstance:
    """``attrs.evolve`` for the fields a fire changes, without its introspection (fire path)."""
    return TaskInstance(
        name=instance.name,
        task_name=instance.task_name,
        status=instance.status if status is None else status,
        kwargs=instance.kwargs if kwargs is None else kwargs,
        unless_fired=instance.unless_fired if unless_fired is None else unless_fired,
        metadata=instance.metadata if metadata is None else metadata,
        retries=instance.retries,
        log_level=instance.log_level,
        logs_marked_resolved=instance.logs_marked_resolved,
    )


def require(instance: TaskInstance, operation: str, *allowed: Status) -> None:
    if instance.status not in allowed:
        names = " or ".join(s.value for s in allowed)
        raise InvalidTransitionError(
            operation,
            instance.name,
            instance.status.value,
            f"only {names} instances can {operation}",
        )


def config_for(b: Builder, instance: TaskInstance) -> TaskConfig:
    try:
        return b.tasks[instance.task_name]
    except KeyError:
        raise InvalidTransitionError(
            "schedule",
            instance.name,
            instance.status.value,
            f"task {instance.task_name!r} is not configured",
        ) from None


def task_kwargs(task: TaskConfig, recorded: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Kwargs a task receives: ``withParams`` deep-merged under the recorded kwargs."""
    return deep_merge(task.with_params, recorded)


def failed_instance(
    instance: TaskInstance,
    ts: str,
    *,
    exception_type: str,
    exception_info: str,
    exception_context: Mapping[str, Any] | None,
    log_level: int,
    metadata: Mapping[str, Any] | None = None,
) -> TaskInstance:
    level = max(instance.log_level, log_level)
    # Exception text may hold lone surrogates (from bytes decoded with surrogateescape).
    exception_type = exception_type.encode("utf-8", "backslashreplace").decode("utf-8")
    exception_info = exception_info.encode("utf-8", "backslashreplace").decode("utf-8")
    extra = to_json_mapping(metadata, "metadata")
    context = to_json_mapping(exception_context, "exception_context")
    failed = set_status(
        instance,
        Status.FAILED,
        ts,
        **{
            **extra,  # the recorded exception wins over same-named user metadata
            "exceptionType": exception_type,
            "exceptionInfo": exception_info,
            "exceptionContext": context,
            "logLevel": level,
        },
    )
    return attrs.evolve(failed, log_level=level)


def schedule(b: Builder, task: TaskConfig, instance: TaskInstance, **metadata: Any) -> None:
    """Make ``instance`` ``scheduled`` and hand it to its runner at once.

    (A retry's cooldown is a timer of the unstarted clone, see
    :func:`triggers_core.engine.recovery.replay_clone`, never a delayed dispatch.)
    """
    b.put(set_status(instance, Status.SCHEDULED, b.ts, **metadata))
    b.effects.append(
        ScheduleInstance(
            instance_name=instance.name,
            task_name=task.name,
            run=task.run,
            using=task.using,
            trigger_kwargs=task_kwargs(task, instance.kwargs),
            depth=int(instance.metadata.get("depth", 0)),
        )
    )
