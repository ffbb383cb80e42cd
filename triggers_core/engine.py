"""The pure transition engine: ``operation(state, ...) -> Transition(state, effects)``.

No I/O, no clock, no randomness: the time comes in as ``now``. Every operation
either raises (the input does not apply to the state, and nothing changes) or
returns the new state, the names of the instances it created or changed, and
the effects the shell performs *after* the new state is committed.

The rules of ``fire`` (trigger ``X`` with kwargs ``K``), for every task ``T``
whose ``after``/``andEvery``/``unless`` uses ``X`` (found through the task
table's index, never by scanning every task), tasks in name order:

1. If ``T`` has no instance yet (its counter is 0), create one. Otherwise offer
   ``X`` to each *unstarted* instance of ``T``: if ``X`` is a trigger name in
   ``T``'s ``after`` (anywhere, groups included) or its ``andEvery``, and the
   instance has not recorded it, it is recorded with ``K`` (first kwargs win);
   if ``X`` is a name in ``T``'s ``unless`` and not recorded, it is recorded.
   If ``X`` is ``T``'s ``andEvery`` and no unstarted instance recorded it just
   now, create a new instance.
2. A new instance is seeded with the session's *latest* kwargs of ``T``'s other
   after/andEvery trigger names and with ``T``'s other ``unless`` names that
   already fired; then ``X`` is applied to it.
3. Each unstarted instance of ``T`` whose ``unless`` condition is satisfied
   (non-empty; every entry satisfied, see :mod:`triggers_core.conditions`) is
   abandoned; otherwise, if its ``after`` condition is satisfied and its
   ``andEvery`` recorded (:meth:`~triggers_core.config.TaskConfig.is_ready`), it
   is scheduled (a ``ScheduleInstance`` effect, kwargs merged over
   ``withParams``). Without groups, that is: every trigger recorded.

Finally the session records ``K`` as ``X``'s latest kwargs.

Cascade depth: an external fire has depth 0; the cascade of a finished
instance has that instance's ``cascadeDepth`` plus one. An instance records the
deepest trigger it recorded as its ``cascadeDepth`` (metadata; absent means 0;
a replay keeps it). An instance that becomes ready deeper than
``max_cascade_depth`` is ``failed`` instead (``CascadeDepthExceeded``), so a
configuration whose tasks keep creating each other stops; replaying it runs it.

Idempotent fires (:mod:`triggers_core.idempotency`): ``fire`` with an
``idempotency_key`` whose fire record the state holds changes nothing: it
returns the state as it is, with a ``DuplicateFire`` effect naming what the
first fire scheduled, and ``commit`` False (there is nothing to store). Without
a record it fires as usual and adds the record (the names it scheduled) to
``fire_records``, which the storage creates in the same compare-and-swap. A
``finish`` with ``guard_cascade`` does the same for its cascade, under the
instance's :func:`~triggers_core.idempotency.cascade_key`: an instance that
already cascaded once finishes again without cascading. The record must be in
the state if it exists (the scope names it); the engine cannot tell a record
not loaded from a key never fired.

Fire-path cost: ``fire`` (and the cascade inside ``finish``/``skip_failed``)
only reads the header (configs, latest kwargs, counters, ``unsettled``,
``settled``) and the unstarted instances of the tasks it can change;
:mod:`triggers_core.scopes` states exactly which, so storages load only those,
and never resolved history. Every operation keeps ``SessionState.unsettled``
exact and ``settled`` conservative for the instances it writes (see
:mod:`triggers_core.scopes`), and reports the instances it created (which must
not exist yet in the store) and whether the configuration changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import attrs

from triggers_core._util import deep_merge, name_problem, to_json_mapping
from triggers_core.config import TaskConfig, cycle_problems, parse_configuration
from triggers_core.effects import (
    DuplicateFire,
    Effect,
    InstanceReplayed,
    InstanceSkipped,
    ScheduleInstance,
    TriggerFired,
)
from triggers_core.errors import (
    ConfigurationError,
    InvalidKwargsError,
    InvalidTransitionError,
    UnknownInstanceError,
)
from triggers_core.idempotency import FireKey, cascade_key, fire_key
from triggers_core.scopes import (
    Changes,
    is_unsettled,
    reads_every_unstarted,
    settled_of,
    settled_triggers,
    still_settled,
    task_triggers,
    unsettled_of,
)
from triggers_core.state import SessionState, Status, TaskInstance, instance_name

__all__ = [
    "CASCADE_DEPTH_EXCEEDED_TYPE",
    "DEFAULT_MAX_CASCADE_DEPTH",
    "MAX_COOLDOWN",
    "MAX_RETRIES_EXCEEDED_TYPE",
    "Transition",
    "check_cooldown",
    "check_trigger_name",
    "fail",
    "finish",
    "fire",
    "fire_checked",
    "mark_logs_resolved",
    "mark_running",
    "replay_failed",
    "retry_self",
    "skip_failed",
    "skip_self",
    "task_kwargs",
    "update_configuration",
    "update_metadata",
    "update_status",
]

_K = TypeVar("_K")
_V = TypeVar("_V")

_NOTHING: frozenset[str] = frozenset()
_NO_RECORDS: Mapping[FireKey, tuple[str, ...]] = MappingProxyType({})

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
    fire_records: Mapping[FireKey, tuple[str, ...]] = attrs.field(default=_NO_RECORDS, hash=False)
    #: False when there is nothing to store (a duplicate fire): the shell does not
    #: compare-and-swap, so a duplicate writes nothing at all.
    commit: bool = True

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
        )


class _Builder:
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
        self._latest = _CopyOnWrite(state.latest_kwargs)
        self._counters = _CopyOnWrite(state.counters)
        self._unsettled = _CopyOnWrite(state.unsettled)
        self._settled = _CopyOnWrite(state.settled)
        #: ``settled`` as the operation's scope saw it: decides what a fire reads.
        self.initial_settled = state.settled
        self.effects: list[Effect] = []
        self.changed: set[str] = set()
        self.created: set[str] = set()
        self.ts = _timestamp(now)
        #: The cascade depth of the trigger being applied (0: fired from outside).
        self.cascade_depth = 0
        self.max_cascade_depth = _check_max_depth(max_cascade_depth)
        # task -> its unstarted instances by name; built on first use, then kept current.
        self._unstarted: dict[str, dict[str, TaskInstance]] | None = None
        #: The fire records the state holds, and those this operation creates.
        self.records = state.fire_records
        self.new_records: dict[FireKey, tuple[str, ...]] | None = None

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
        current = self._settled.view.get(task_name, _NOTHING)
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
        return sorted(found.values(), key=_number)

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
            fire_records=new or _NO_RECORDS,
        )


class _CopyOnWrite(Generic[_K, _V]):
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


def _number(instance: TaskInstance) -> int:
    return instance.number


def _timestamp(now: datetime) -> str:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be a timezone-aware datetime, got naive {now!r}")
    return now.astimezone(UTC).isoformat()


#: Metadata the engine keeps (and reads back); merged user metadata never replaces it.
_BOOKKEEPING = ("created", "timestamps", "depth", "parent", "cascadeDepth")


def _check_max_depth(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"max_cascade_depth must be an integer >= 0, got {value!r}")
    return value


def _cascade_depth(instance: TaskInstance) -> int:
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


def _merged_metadata(instance: TaskInstance, extra: Mapping[str, Any], ts: str) -> dict[str, Any]:
    kept = {k: instance.metadata[k] for k in _BOOKKEEPING if k in instance.metadata}
    return {**instance.metadata, **extra, **kept, "lastModified": ts}


def _set_status(
    instance: TaskInstance, status: Status, ts: str, /, **metadata: Any
) -> TaskInstance:
    # positional-only, so user metadata may use any key ("status", "ts", ...)
    timestamps = dict(instance.metadata.get("timestamps", {}))
    timestamps[status.value] = ts
    meta = {**_merged_metadata(instance, metadata, ts), "timestamps": timestamps}
    return _with(instance, status=status, metadata=meta)


def _with(
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


def _require(instance: TaskInstance, operation: str, *allowed: Status) -> None:
    if instance.status not in allowed:
        names = " or ".join(s.value for s in allowed)
        raise InvalidTransitionError(
            operation,
            instance.name,
            instance.status.value,
            f"only {names} instances can {operation}",
        )


def _config_for(b: _Builder, instance: TaskInstance) -> TaskConfig:
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


# -- fire --------------------------------------------------------------------


def _new_instance(b: _Builder, task: TaskConfig, trigger: str) -> TaskInstance:
    number = b.next_number(task.name)
    seeded = {t: b.latest[t] for t in task.required_triggers if t != trigger and t in b.latest}
    unless = frozenset(u for u in task.unless_triggers if u != trigger and u in b.latest)
    name = instance_name(task.name, number)
    b.created.add(name)
    return TaskInstance(
        name=name,
        task_name=task.name,
        status=Status.UNSTARTED,
        kwargs=seeded,
        unless_fired=unless,
        metadata={
            "created": b.ts,
            "lastModified": b.ts,
            "timestamps": {Status.UNSTARTED.value: b.ts},
            "depth": 0,
        },
    )


def _offer(
    instance: TaskInstance,
    task: TaskConfig,
    trigger: str,
    kwargs: Mapping[str, Any],
    depth: int = 0,
) -> TaskInstance:
    """Record ``trigger`` (of cascade ``depth``) on an unstarted instance if it has not yet."""
    new_kwargs = instance.kwargs
    if trigger in task.required_triggers and trigger not in instance.kwargs:
        new_kwargs = {**instance.kwargs, trigger: kwargs}
    new_unless = instance.unless_fired
    if trigger in task.unless_triggers and trigger not in instance.unless_fired:
        new_unless = instance.unless_fired | {trigger}
    if new_kwargs is instance.kwargs and new_unless is instance.unless_fired:
        return instance
    metadata = instance.metadata
    if depth > _cascade_depth(instance):  # the deepest cascade it recorded
        metadata = {**metadata, "cascadeDepth": depth}
    return _with(instance, kwargs=new_kwargs, unless_fired=new_unless, metadata=metadata)


def _schedule(
    b: _Builder, task: TaskConfig, instance: TaskInstance, cooldown: float | None = None
) -> None:
    b.put(_set_status(instance, Status.SCHEDULED, b.ts))
    b.effects.append(
        ScheduleInstance(
            instance_name=instance.name,
            task_name=task.name,
            run=task.run,
            using=task.using,
            trigger_kwargs=task_kwargs(task, instance.kwargs),
            cooldown=cooldown,
            depth=int(instance.metadata.get("depth", 0)),
        )
    )


def _apply_fire(b: _Builder, trigger: str, kwargs: dict[str, Any]) -> tuple[str, ...]:
    scheduled: list[str] = []
    tasks = b.tasks
    # ``settled`` as the scope saw it (the header before this operation) decides which
    # tasks the fire read in full; those get their ``settled`` recomputed.
    settled = b.initial_settled
    renewed = tasks.renewed_by(trigger)
    loaded = b.unstarted_index()
    counters = b.counters
    # A task using the trigger that has instances, none of them loaded unstarted, that
    # the trigger does not renew (andEvery) and has settled (so it was not read in
    # full), stays as it is: skip it without a call (a repeat fire may reach thousands).
    reached = [
        t
        for t in tasks.using(trigger)
        if t in loaded
        or t in renewed
        or trigger not in settled.get(t, _NOTHING)
        or not counters.get(t)
    ]
    for task_name in reached:
        task = tasks[task_name]
        read_all = reads_every_unstarted(task, trigger, settled)
        required = task.required_triggers
        unless = task.unless_triggers
        if b.counter(task_name) == 0:
            b.put(_offer(_new_instance(b, task, trigger), task, trigger, kwargs, b.cascade_depth))
        else:
            # What _offer would change, decided once per task: most instances of a
            # task that many fires reach have recorded the trigger already.
            records, marks = trigger in required, trigger in unless
            recorded_every = False
            for instance in b.unstarted(task_name):
                if (records and trigger not in instance.kwargs) or (
                    marks and trigger not in instance.unless_fired
                ):
                    b.put(_offer(instance, task, trigger, kwargs, b.cascade_depth))
                    if trigger == task.and_every:
                        recorded_every = True
            if trigger == task.and_every and not recorded_every:
                b.put(
                    _offer(_new_instance(b, task, trigger), task, trigger, kwargs, b.cascade_depth)
                )
        for instance in b.unstarted(task_name):
            if unless and task.is_abandoned_by(instance.unless_fired):
                b.put(_set_status(instance, Status.ABANDONED, b.ts))
            elif task.is_ready(instance.kwargs):
                if _cascade_depth(instance) > b.max_cascade_depth:
                    b.put(_too_deep(b, instance))
                    continue
                _schedule(b, task, instance)
                scheduled.append(instance.name)
        if read_all:
            b.resettle(task)
    b.set_latest(trigger, kwargs)
    return tuple(scheduled)


def _too_deep(b: _Builder, instance: TaskInstance) -> TaskInstance:
    """Fail a ready instance that cascades deeper than ``max_cascade_depth`` fed."""
    depth = _cascade_depth(instance)
    detail = (
        f"{instance.name} was not run: a trigger it waited for is the end of a chain of "
        f"{depth} cascades (finished instances firing their task names), more than "
        f"max_cascade_depth={b.max_cascade_depth}. Tasks that keep creating each other "
        "through andEvery never stop; fix the configuration, or replay this instance "
        "to run it anyway."
    )
    return _failed(
        instance,
        b.ts,
        exception_type=CASCADE_DEPTH_EXCEEDED_TYPE,
        exception_info=detail,
        exception_context={"cascadeDepth": depth, "maxCascadeDepth": b.max_cascade_depth},
        log_level=logging.ERROR,
    )


def check_trigger_name(trigger_name: object) -> str:
    """``trigger_name`` if it is a usable trigger name, else :class:`InvalidKwargsError`."""
    if not isinstance(trigger_name, str) or not trigger_name:
        raise InvalidKwargsError(
            "trigger_name", f"expected a non-empty string, got {trigger_name!r}"
        )
    problem = name_problem(trigger_name)
    if problem is not None:
        raise InvalidKwargsError("trigger_name", f"{trigger_name!r} {problem}")
    return trigger_name


def fire(
    state: SessionState,
    trigger_name: str,
    trigger_kwargs: Mapping[str, Any] | None = None,
    *,
    now: datetime,
    idempotency_key: str | None = None,
) -> Transition:
    """Fire ``trigger_name`` with ``trigger_kwargs`` (see the module docstring).

    With ``idempotency_key``, ``state`` must hold the key's fire record if it
    exists (``fire_scope(trigger, key)`` names it): then nothing changes and
    the transition says so (``duplicate``, ``commit`` False); else the fire
    applies and creates the record.
    """
    name = check_trigger_name(trigger_name)
    kwargs = to_json_mapping(trigger_kwargs, "trigger_kwargs")
    key = None if idempotency_key is None else fire_key(name, idempotency_key)
    return fire_checked(state, name, kwargs, now=now, key=key)


def fire_checked(
    state: SessionState,
    trigger_name: str,
    trigger_kwargs: dict[str, Any],
    *,
    now: datetime,
    key: FireKey | None = None,
) -> Transition:
    """:func:`fire` for a caller that checked its input already, once for many attempts.

    ``trigger_name`` passed :func:`check_trigger_name`, ``trigger_kwargs`` is
    the caller's own result of ``to_json_mapping`` (never changed afterwards)
    and ``key`` came from :func:`~triggers_core.idempotency.fire_key`. The
    manager checks before any I/O and retries conflicts with the same values.
    """
    name, kwargs = trigger_name, trigger_kwargs
    if key is not None:
        first = state.fire_records.get(key)
        if first is not None:
            _timestamp(now)  # the same checks as a fire that applies
            return Transition(state, (DuplicateFire(name, first),), commit=False)
    b = _Builder(state, now)
    scheduled = _apply_fire(b, name, kwargs)
    b.effects.append(TriggerFired(name, scheduled))
    if key is not None:
        b.new_records = {key: scheduled}
    return b.build()


def update_configuration(state: SessionState, config: Mapping[str, Any]) -> Transition:
    """Add or replace tasks by name; other tasks stay. Never re-applies old triggers.

    ``config`` is either raw directives (validated all-or-nothing) or
    already-parsed :class:`TaskConfig` values. ``state`` must hold every
    unstarted instance of the tasks replaced: their ``unsettled`` and
    ``settled`` sets are recomputed against the new configuration.
    """
    if (
        isinstance(config, Mapping)
        and config
        and all(isinstance(v, TaskConfig) for v in config.values())
    ):
        parsed: dict[str, TaskConfig] = {}
        problems = []
        for key, value in config.items():
            if key != value.name:
                problems.append(f"{key}: key does not match TaskConfig name {value.name!r}")
            parsed[key] = value
        if problems:
            raise ConfigurationError(problems)
    else:
        parsed = parse_configuration(config)
    merged = state.tasks.replaced(parsed)
    problems = cycle_problems(merged)  # the new tasks may close a cycle with stored ones
    if problems:
        raise ConfigurationError(problems)
    if not any(state.tasks.get(name) != task for name, task in parsed.items()):
        return Transition(state)
    unsettled = {name: v for name, v in state.unsettled.items() if name not in parsed}
    for name, names in unsettled_of(parsed, state.instances.values()).items():
        unsettled[name] = names
    settled = {name: v for name, v in state.settled.items() if name not in parsed}
    settled.update(settled_of(parsed, state.instances.values()))
    return Transition(
        attrs.evolve(state, tasks=merged, unsettled=unsettled, settled=settled),
        config_changed=True,
    )


# -- running an instance ----------------------------------------------------------


def mark_running(state: SessionState, name: str, *, now: datetime) -> Transition:
    """A runner starts a scheduled instance; records ``actualKwargs``."""
    b = _Builder(state, now)
    instance = b.get(name)
    _require(instance, "run", Status.SCHEDULED)
    task = _config_for(b, instance)
    actual = task_kwargs(task, instance.kwargs)
    b.put(_set_status(instance, Status.RUNNING, b.ts, actualKwargs=actual))
    return b.build()


def finish(
    state: SessionState,
    name: str,
    result: Mapping[str, Any] | None,
    *,
    now: datetime,
    log_level: int = logging.NOTSET,
    max_cascade_depth: int = DEFAULT_MAX_CASCADE_DEPTH,
    guard_cascade: bool = False,
) -> Transition:
    """A running instance returned ``result``: finish it and cascade, atomically.

    Raises :class:`InvalidKwargsError` (and changes nothing) if ``result`` is
    not a JSON-compatible mapping; the shell records that as a failure.
    Instances the cascade makes ready deeper than ``max_cascade_depth`` fail.

    With ``guard_cascade`` the cascade is recorded under the instance's
    :func:`~triggers_core.idempotency.cascade_key`, which ``state`` must hold
    if it exists: an instance that already cascaded once then finishes
    without cascading (a ``DuplicateFire`` effect says so).
    """
    b = _Builder(state, now, max_cascade_depth)
    instance = b.get(name)
    _require(instance, "finish", Status.RUNNING)
    data = to_json_mapping(result, "result")
    finished = _set_status(instance, Status.FINISHED, b.ts, result=data)
    b.put(attrs.evolve(finished, log_level=max(instance.log_level, log_level)))
    task_name = instance.task_name
    key = cascade_key(task_name, name) if guard_cascade else None
    if key is not None:
        first = state.fire_records.get(key)
        if first is not None:
            b.effects.append(DuplicateFire(task_name, first, name))
            return b.build()
    b.cascade_depth = _cascade_depth(instance) + 1
    scheduled = _apply_fire(b, task_name, data)
    b.effects.append(TriggerFired(task_name, scheduled))
    if key is not None:
        b.new_records = {key: scheduled}
    return b.build()


def _failed(
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
    failed = _set_status(
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


def fail(
    state: SessionState,
    name: str,
    *,
    now: datetime,
    exception_type: str,
    exception_info: str,
    exception_context: Mapping[str, Any] | None = None,
    log_level: int = logging.ERROR,
    metadata: Mapping[str, Any] | None = None,
) -> Transition:
    """A running instance raised, or a scheduled one could not be dispatched."""
    b = _Builder(state, now)
    instance = b.get(name)
    _require(instance, "fail", Status.RUNNING, Status.SCHEDULED)
    b.put(
        _failed(
            instance,
            b.ts,
            exception_type=exception_type,
            exception_info=exception_info,
            exception_context=exception_context,
            log_level=log_level,
            metadata=metadata,
        )
    )
    return b.build()


def skip_self(
    state: SessionState,
    name: str,
    *,
    now: datetime,
    metadata: Mapping[str, Any] | None = None,
    log_level: int = logging.NOTSET,
) -> Transition:
    """A running instance skipped itself: ``skipped``, no cascade."""
    b = _Builder(state, now)
    instance = b.get(name)
    _require(instance, "skip itself", Status.RUNNING)
    extra = to_json_mapping(metadata, "metadata")
    skipped = _set_status(instance, Status.SKIPPED, b.ts, **extra)
    b.put(attrs.evolve(skipped, log_level=max(instance.log_level, log_level)))
    return b.build()


def _replay(
    b: _Builder,
    instance: TaskInstance,
    replacement_kwargs: Mapping[str, Any] | None,
    *,
    retries: int,
    cooldown: float | None,
) -> str:
    task = _config_for(b, instance)
    if replacement_kwargs is None:
        kwargs = instance.kwargs
    else:
        kwargs = to_json_mapping(replacement_kwargs, "replacement_kwargs")
        for trigger, value in kwargs.items():
            if not isinstance(value, Mapping):
                raise InvalidKwargsError(
                    f"replacement_kwargs.{trigger}",
                    f"expected a mapping (kwargs per trigger), got {type(value).__name__}",
                )
    number = b.next_number(task.name)
    clone_name = instance_name(task.name, number)
    b.created.add(clone_name)
    depth = int(instance.metadata.get("depth", 0)) + 1
    metadata: dict[str, Any] = {
        "created": b.ts,
        "lastModified": b.ts,
        "timestamps": {Status.UNSTARTED.value: b.ts},
        "parent": instance.name,
        "depth": depth,
    }
    if cascade_depth := _cascade_depth(instance):  # a replay is no cascade: keep the depth
        metadata["cascadeDepth"] = cascade_depth
    clone = TaskInstance(
        name=clone_name,
        task_name=task.name,
        status=Status.UNSTARTED,
        kwargs=kwargs,
        unless_fired=instance.unless_fired,
        metadata=metadata,
        retries=retries,
    )
    b.put(_set_status(instance, Status.REPLAYED, b.ts, replayedAs=clone_name))
    _schedule(b, task, clone, cooldown)
    b.effects.append(InstanceReplayed(instance.name, clone_name))
    return clone_name


def replay_failed(
    state: SessionState,
    name: str,
    replacement_kwargs: Mapping[str, Any] | None = None,
    *,
    now: datetime,
) -> Transition:
    """Replay a failed instance: it becomes ``replayed``; a scheduled clone takes over.

    The clone gets the same kwargs, or ``replacement_kwargs`` (which replace
    them wholly), the task's *current* config, and metadata ``parent``/``depth``.
    """
    b = _Builder(state, now)
    instance = b.get(name)
    _require(instance, "replay", Status.FAILED)
    _replay(b, instance, replacement_kwargs, retries=0, cooldown=None)
    return b.build()


def retry_self(
    state: SessionState,
    name: str,
    *,
    now: datetime,
    max_retries: int,
    exception_type: str | None = None,
    exception_info: str | None = None,
    exception_context: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    replacement_kwargs: Mapping[str, Any] | None = None,
    cooldown: float | None = None,
    log_level: int = logging.NOTSET,
) -> Transition:
    """A running instance asked to retry: fail it and replay it after ``cooldown``.

    Once its retries reach ``max_retries`` it fails with ``MaxRetriesExceeded``.
    """
    b = _Builder(state, now)
    instance = b.get(name)
    _require(instance, "retry", Status.RUNNING)
    cooldown = check_cooldown(cooldown)
    if instance.retries >= max_retries:
        detail = f"{instance.name} asked to retry after {instance.retries} retries"
        detail += f" (max_retries={max_retries})"
        if exception_type:
            detail += f"; last error {exception_type}:\n{exception_info or ''}"
        b.put(
            _failed(
                instance,
                b.ts,
                exception_type=MAX_RETRIES_EXCEEDED_TYPE,
                exception_info=detail,
                exception_context=exception_context,
                log_level=max(log_level, logging.ERROR),
                metadata=metadata,
            )
        )
        return b.build()
    failed = _failed(
        instance,
        b.ts,
        exception_type=exception_type or RETRY_TYPE,
        exception_info=exception_info or f"{instance.name} asked to retry",
        exception_context=exception_context,
        log_level=log_level,
        metadata=metadata,
    )
    b.put(failed)
    _replay(b, failed, replacement_kwargs, retries=instance.retries + 1, cooldown=cooldown)
    return b.build()


def skip_failed(
    state: SessionState,
    name: str,
    *,
    now: datetime,
    cascade: bool = False,
    result: Mapping[str, Any] | None = None,
    max_cascade_depth: int = DEFAULT_MAX_CASCADE_DEPTH,
) -> Transition:
    """An operator skips a failed instance; with ``cascade`` its task name fires."""
    b = _Builder(state, now, max_cascade_depth)
    instance = b.get(name)
    _require(instance, "skip", Status.FAILED)
    data = to_json_mapping(result, "result")
    b.put(_set_status(instance, Status.SKIPPED, b.ts))
    if cascade:
        b.cascade_depth = _cascade_depth(instance) + 1
        scheduled = _apply_fire(b, instance.task_name, data)
        b.effects.append(TriggerFired(instance.task_name, scheduled))
    b.effects.append(InstanceSkipped(instance.name, cascade))
    return b.build()


def update_status(
    state: SessionState,
    name: str,
    status: Status | str,
    *,
    now: datetime,
    metadata: Mapping[str, Any] | None = None,
    cascade: bool = False,
    cascade_kwargs: Mapping[str, Any] | None = None,
    max_cascade_depth: int = DEFAULT_MAX_CASCADE_DEPTH,
) -> Transition:
    """Force an instance's status (an operator's tool); optionally cascade.

    Setting ``scheduled`` does not dispatch anything: replay a failed
    instance to run it again.
    """
    try:
        new_status = status if isinstance(status, Status) else Status(status)
    except ValueError:
        known = ", ".join(s.value for s in Status)
        raise ValueError(f"unknown status {status!r}; known: {known}") from None
    b = _Builder(state, now, max_cascade_depth)
    instance = b.get(name)
    extra = to_json_mapping(metadata, "metadata")
    data = to_json_mapping(cascade_kwargs, "cascade_kwargs")
    b.put(_set_status(instance, new_status, b.ts, **extra))
    if cascade:
        b.cascade_depth = _cascade_depth(instance) + 1
        scheduled = _apply_fire(b, instance.task_name, data)
        b.effects.append(TriggerFired(instance.task_name, scheduled))
    return b.build()


def update_metadata(
    state: SessionState, name: str, metadata: Mapping[str, Any], *, now: datetime
) -> Transition:
    """Merge ``metadata`` into an instance's metadata; status unchanged.

    The engine's own ``created``, ``timestamps``, ``depth`` and ``parent`` are kept.
    """
    b = _Builder(state, now)
    instance = b.get(name)
    extra = to_json_mapping(metadata, "metadata")
    b.put(attrs.evolve(instance, metadata=_merged_metadata(instance, extra, b.ts)))
    return b.build()


def mark_logs_resolved(state: SessionState, name: str, *, now: datetime) -> Transition:
    """Acknowledge an instance's ERROR-level logs (``logs_resolved`` becomes True)."""
    b = _Builder(state, now)
    instance = b.get(name)
    b.put(
        attrs.evolve(
            instance,
            logs_marked_resolved=True,
            metadata={**instance.metadata, "lastModified": b.ts},
        )
    )
    return b.build()
