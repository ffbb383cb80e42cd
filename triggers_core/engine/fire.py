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
   (non-empty; every entry satisfied, see :mod:`triggers_core.engine.conditions`) is
   abandoned; otherwise, if its ``after`` condition is satisfied and its
   ``andEvery`` recorded (:meth:`~triggers_core.engine.config.TaskConfig.is_ready`), it
   is scheduled (a ``ScheduleInstance`` effect, kwargs merged over
   ``withParams``). Without groups, that is: every trigger recorded.

Finally the session records ``K`` as ``X``'s latest kwargs.

Time conditions (SPEC section 10; the timers are applied by
:func:`triggers_core.engine.timers.advance`):

* ``within``: an instance's window opens when it records its first required
  trigger (seeded ones count at its creation): its ``deadline`` (metadata) is
  fixed then, ``now`` + ``within``, and never moves. Before step 1, every loaded
  unstarted instance of ``T`` whose deadline passed (and that is not delayed)
  *expires* first (:func:`expire`) when the fire reads every unstarted
  instance of ``T`` (``X`` is not settled for ``T``), so a fire that comes
  after the deadline never completes the old window: it goes to the next one.
  (A fire of a settled trigger changes no instance of ``T``: the clock expires
  them.)
* ``delay``: in step 3 a ready instance of a task with ``delay`` is not
  scheduled; it stays unstarted with ``delayedUntil`` (``now`` + ``delay``),
  still recording (and abandoned by) its ``unless`` triggers, until ``advance``
  schedules it.

Cascade depth: an external fire has depth 0; the cascade of a finished
instance has that instance's ``cascadeDepth`` plus one. An instance records the
deepest trigger it recorded as its ``cascadeDepth`` (metadata; absent means 0;
a replay keeps it). An instance that becomes ready deeper than
``max_cascade_depth`` is ``failed`` instead (``CascadeDepthExceeded``), so a
configuration whose tasks keep creating each other stops; replaying it runs it.

Idempotent fires (:mod:`triggers_core.engine.idempotency`): ``fire`` with an
``idempotency_key`` whose fire record the state holds changes nothing: it
returns the state as it is, with a ``DuplicateFire`` effect naming what the
first fire scheduled, and ``commit`` False (there is nothing to store). Without
a record it fires as usual and adds the record (the names it scheduled) to
``fire_records``, which the storage creates in the same compare-and-swap. A
``finish`` with ``guard_cascade`` does the same for its cascade, under the
instance's :func:`~triggers_core.engine.idempotency.cascade_key`: an instance that
already cascaded once finishes again without cascading. The record must be in
the state if it exists (the scope names it); the engine cannot tell a record
not loaded from a key never fired.

Fire-path cost: ``fire`` (and the cascade inside ``finish``/``skip_failed``)
only reads the header (configs, latest kwargs, counters, ``unsettled``,
``settled``) and the unstarted instances of the tasks it can change;
:mod:`triggers_core.engine.scopes` states exactly which, so storages load only those,
and never resolved history. Every operation keeps ``SessionState.unsettled``
exact and ``settled`` conservative for the instances it writes (see
:mod:`triggers_core.engine.scopes`), and reports the instances it created (which must
not exist yet in the store) and whether the configuration changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from triggers_core.engine.conditions import entry_satisfied, entry_to_json
from triggers_core.engine.config import TaskConfig
from triggers_core.engine.effects import DuplicateFire, TriggerFired
from triggers_core.engine.idempotency import FireKey, fire_key
from triggers_core.engine.leases import parse_time
from triggers_core.engine.levels import ERROR
from triggers_core.engine.names import name_problem
from triggers_core.engine.scopes import reads_every_unstarted
from triggers_core.engine.state import SessionState, Status, TaskInstance, instance_name
from triggers_core.engine.transition import (
    CASCADE_DEPTH_EXCEEDED_TYPE,
    NOTHING,
    Builder,
    Transition,
    cascade_depth_of,
    failed_instance,
    schedule,
    set_status,
    timestamp,
    with_fields,
)
from triggers_core.engine.values import to_json_mapping
from triggers_core.errors import InvalidKwargsError

__all__ = [
    "apply_fire",
    "check_trigger_name",
    "delayed",
    "expire",
    "fire",
    "fire_checked",
    "is_overdue",
    "missing_of",
    "too_deep",
]


def _new_instance(
    b: Builder, task: TaskConfig, trigger: str | None, *, seed: bool = True
) -> TaskInstance:
    number = b.next_number(task.name)
    seeded: dict[str, Any] = {}
    unless: frozenset[str] = frozenset()
    if seed:
        seeded = {t: b.latest[t] for t in task.required_triggers if t != trigger and t in b.latest}
        unless = frozenset(u for u in task.unless_triggers if u != trigger and u in b.latest)
    name = instance_name(task.name, number)
    b.created.add(name)
    metadata: dict[str, Any] = {
        "created": b.ts,
        "lastModified": b.ts,
        "timestamps": {Status.UNSTARTED.value: b.ts},
        "depth": 0,
    }
    if seeded and task.within is not None:  # seeded requirements open the window now
        metadata["deadline"] = timestamp(b.now + task.within.delta)
    return TaskInstance(
        name=name,
        task_name=task.name,
        status=Status.UNSTARTED,
        kwargs=seeded,
        unless_fired=unless,
        metadata=metadata,
    )


def is_overdue(instance: TaskInstance, now: datetime) -> bool:
    """An unstarted, undelayed instance whose ``within`` window closed at or before ``now``."""
    metadata = instance.metadata
    if "deadline" not in metadata or "delayedUntil" in metadata:
        return False
    deadline = parse_time(metadata["deadline"])
    return deadline is not None and deadline <= now


def missing_of(task: TaskConfig, instance: TaskInstance) -> list[Any]:
    """The ``after`` entries (names, or groups as written) ``instance`` has not satisfied."""
    recorded = instance.kwargs
    missing: list[Any] = [entry_to_json(e) for e in task.after if not entry_satisfied(e, recorded)]
    if task.and_every is not None and task.and_every not in recorded:
        missing.append(task.and_every)
    return missing


def expire(b: Builder, task: TaskConfig, instance: TaskInstance) -> tuple[str, ...]:
    """End an unstarted instance whose window ran out: ``expired``; then ``onMiss`` fires.

    The instance keeps its kwargs and gains ``missing`` (what it still waited
    for). Unless the task is renewed by ``andEvery`` (then only its ``andEvery``
    trigger makes a new instance, as always), a new empty instance takes its
    place, so the next fire of a requirement opens a new window seeded only
    with fires made after the expiry. The task's ``onMiss`` trigger (current
    configuration) then fires with ``{"task", "instance", "missing",
    "deadline"}``, in the same transition. Returns what that fire scheduled.
    """
    missing = missing_of(task, instance)
    deadline = instance.metadata.get("deadline")
    recorded = (
        {"missing": missing}
        if task.on_miss is None
        else {"missing": missing, "onMiss": task.on_miss}
    )
    b.put(set_status(instance, Status.EXPIRED, b.ts, **recorded))
    scheduled: tuple[str, ...] = ()
    if task.on_miss is not None:
        kwargs = {
            "task": task.name,
            "instance": instance.name,
            "missing": missing,
            "deadline": deadline,
        }
        scheduled = apply_fire(b, task.on_miss, kwargs)
        b.effects.append(TriggerFired(task.on_miss, scheduled))
    if task.and_every is None and not b.unstarted(task.name):
        b.put(_new_instance(b, task, None, seed=False))
    return scheduled


def _open_window(b: Builder, task: TaskConfig, instance: TaskInstance) -> TaskInstance:
    """Fix the deadline of an instance that just recorded its first requirement."""
    if task.within is None or "deadline" in instance.metadata or not instance.kwargs:
        return instance
    deadline = timestamp(b.now + task.within.delta)
    return with_fields(instance, metadata={**instance.metadata, "deadline": deadline})


def delayed(b: Builder, task: TaskConfig, instance: TaskInstance) -> TaskInstance:
    """A ready instance of a task with ``delay``: it waits, unstarted, for its timer."""
    assert task.delay is not None
    until = timestamp(b.now + task.delay.delta)
    return with_fields(instance, metadata={**instance.metadata, "delayedUntil": until})


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
    if depth > cascade_depth_of(instance):  # the deepest cascade it recorded
        metadata = {**metadata, "cascadeDepth": depth}
    return with_fields(instance, kwargs=new_kwargs, unless_fired=new_unless, metadata=metadata)


def apply_fire(b: Builder, trigger: str, kwargs: dict[str, Any]) -> tuple[str, ...]:
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
        or trigger not in settled.get(t, NOTHING)
        or not counters.get(t)
    ]
    for task_name in reached:
        task = tasks[task_name]
        read_all = reads_every_unstarted(task, trigger, settled)
        required = task.required_triggers
        unless = task.unless_triggers
        if read_all and task_name in loaded:
            # Time first: a closed window expires before the fire can record into it. Only
            # when the fire reads every unstarted instance of the task (the header decides
            # that, so the working set and the whole session agree); else the trigger is
            # one every instance recorded already, and the clock's tick expires them.
            for instance in b.unstarted(task_name):
                if is_overdue(instance, b.now):
                    expire(b, task, instance)
        if b.counter(task_name) == 0:
            b.put(
                _open_window(
                    b,
                    task,
                    _offer(_new_instance(b, task, trigger), task, trigger, kwargs, b.cascade_depth),
                )
            )
        else:
            # What _offer would change, decided once per task: most instances of a
            # task that many fires reach have recorded the trigger already.
            records, marks = trigger in required, trigger in unless
            recorded_every = False
            for instance in b.unstarted(task_name):
                if (records and trigger not in instance.kwargs) or (
                    marks and trigger not in instance.unless_fired
                ):
                    offered = _offer(instance, task, trigger, kwargs, b.cascade_depth)
                    b.put(_open_window(b, task, offered) if records else offered)
                    if trigger == task.and_every:
                        recorded_every = True
            if trigger == task.and_every and not recorded_every:
                new = _new_instance(b, task, trigger)
                b.put(_open_window(b, task, _offer(new, task, trigger, kwargs, b.cascade_depth)))
        for instance in b.unstarted(task_name):
            if unless and task.is_abandoned_by(instance.unless_fired):
                b.put(set_status(instance, Status.ABANDONED, b.ts))
            elif task.is_ready(instance.kwargs):
                if "delayedUntil" in instance.metadata:
                    continue  # delayed: its timer schedules it (timers.advance)
                if cascade_depth_of(instance) > b.max_cascade_depth:
                    b.put(too_deep(b, instance))
                    continue
                if task.delay is not None:
                    b.put(delayed(b, task, instance))
                    continue
                schedule(b, task, instance)
                scheduled.append(instance.name)
        if read_all:
            b.resettle(task)
    b.set_latest(trigger, kwargs)
    return tuple(scheduled)


def too_deep(b: Builder, instance: TaskInstance) -> TaskInstance:
    """Fail a ready instance that cascades deeper than ``max_cascade_depth`` fed."""
    depth = cascade_depth_of(instance)
    detail = (
        f"{instance.name} was not run: a trigger it waited for is the end of a chain of "
        f"{depth} cascades (finished instances firing their task names), more than "
        f"max_cascade_depth={b.max_cascade_depth}. Tasks that keep creating each other "
        "through andEvery never stop; fix the configuration, or replay this instance "
        "to run it anyway."
    )
    return failed_instance(
        instance,
        b.ts,
        exception_type=CASCADE_DEPTH_EXCEEDED_TYPE,
        exception_info=detail,
        exception_context={"cascadeDepth": depth, "maxCascadeDepth": b.max_cascade_depth},
        log_level=ERROR,
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
    and ``key`` came from :func:`~triggers_core.engine.idempotency.fire_key`. The
    manager checks before any I/O and retries conflicts with the same values.
    """
    name, kwargs = trigger_name, trigger_kwargs
    if key is not None:
        first = state.fire_records.get(key)
        if first is not None:
            timestamp(now)  # the same checks as a fire that applies
            return Transition(state, (DuplicateFire(name, first),), commit=False)
    b = Builder(state, now)
    scheduled = apply_fire(b, name, kwargs)
    b.effects.append(TriggerFired(name, scheduled))
    if key is not None:
        b.new_records = {key: scheduled}
    return b.build()
