"""Recovery of failed instances: replay (a clone takes over) and skip."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from triggers_core.engine.effects import InstanceReplayed, InstanceSkipped, TriggerFired
from triggers_core.engine.fire import apply_fire
from triggers_core.engine.leases import (
    RETRY_COOLDOWN,
    WORKER_LOST_TYPE,
    LostPolicy,
    due_of,
    lease_owner,
    run_key,
)
from triggers_core.engine.levels import ERROR
from triggers_core.engine.state import SessionState, Status, TaskInstance, instance_name
from triggers_core.engine.transition import (
    DEFAULT_MAX_CASCADE_DEPTH,
    Builder,
    Transition,
    cascade_depth_of,
    config_for,
    failed_instance,
    require,
    schedule,
    set_status,
    timestamp,
)
from triggers_core.engine.values import to_json_mapping
from triggers_core.errors import InvalidKwargsError, InvalidTransitionError

__all__ = ["cooling", "redispatch", "replay_clone", "replay_failed", "skip_failed", "take_over"]


def replay_clone(
    b: Builder,
    instance: TaskInstance,
    replacement_kwargs: Mapping[str, Any] | None,
    *,
    retries: int,
    cooldown: float | None,
    lost_retries: int = 0,
    actor: str | None = None,
) -> str:
    task = config_for(b, instance)
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
        "runKey": run_key(instance),  # the same for every clone of a chain
    }
    if lost_retries:
        metadata["lostRetries"] = lost_retries
    if cascade_depth := cascade_depth_of(instance):  # a replay is no cascade: keep the depth
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
    done = (
        {"replayedAs": clone_name} if actor is None else {"replayedAs": clone_name, "actor": actor}
    )
    b.put(set_status(instance, Status.REPLAYED, b.ts, **done))
    if cooldown:
        b.put(cooling(b, clone, cooldown))
    else:
        schedule(b, task, clone)
    b.effects.append(InstanceReplayed(instance.name, clone_name))
    return clone_name


def cooling(b: Builder, clone: TaskInstance, cooldown: float) -> TaskInstance:
    """A retry's clone that waits ``cooldown`` seconds, unstarted, for its timer.

    Like a ``delay`` (:mod:`triggers_core.engine.timers`): ``delayedUntil`` is
    its due time (in the session state and the due index, so a restart loses
    nothing), ``retryCooldown`` the seconds asked for. Meanwhile it records its
    task's ``unless`` triggers and is abandoned when ``unless`` holds; when the
    timer fires (``advance``) it is scheduled.
    """
    until = timestamp(b.now + timedelta(seconds=cooldown))
    metadata = {**clone.metadata, "delayedUntil": until, RETRY_COOLDOWN: cooldown}
    return attrs.evolve(clone, metadata=metadata)


def replay_failed(
    state: SessionState,
    name: str,
    replacement_kwargs: Mapping[str, Any] | None = None,
    *,
    now: datetime,
    actor: str | None = None,
) -> Transition:
    """Replay a failed instance: it becomes ``replayed``; a scheduled clone takes over.

    The clone gets the same kwargs, or ``replacement_kwargs`` (which replace
    them wholly), the task's *current* config, and metadata ``parent``/``depth``.
    ``actor`` (who asked) is recorded in the replayed instance's metadata.
    """
    b = Builder(state, now)
    instance = b.get(name)
    require(instance, "replay", Status.FAILED)
    replay_clone(b, instance, replacement_kwargs, retries=0, cooldown=None, actor=actor)
    return b.build()


def skip_failed(
    state: SessionState,
    name: str,
    *,
    now: datetime,
    cascade: bool = False,
    result: Mapping[str, Any] | None = None,
    max_cascade_depth: int = DEFAULT_MAX_CASCADE_DEPTH,
    actor: str | None = None,
) -> Transition:
    """An operator skips a failed instance; with ``cascade`` its task name fires.

    ``actor`` (who asked) is recorded in the instance's metadata.
    """
    b = Builder(state, now, max_cascade_depth)
    instance = b.get(name)
    require(instance, "skip", Status.FAILED)
    data = to_json_mapping(result, "result")
    b.put(set_status(instance, Status.SKIPPED, b.ts, **({} if actor is None else {"actor": actor})))
    if cascade:
        b.cascade_depth = cascade_depth_of(instance) + 1
        scheduled = apply_fire(b, instance.task_name, data)
        b.effects.append(TriggerFired(instance.task_name, scheduled))
    b.effects.append(InstanceSkipped(instance.name, cascade))
    return b.build()


def _describe(worker: object) -> str:
    if isinstance(worker, Mapping) and worker:
        parts = [f"{key}={worker[key]}" for key in ("host", "pid", "taskId") if key in worker]
        return ", ".join(str(p) for p in parts) or "an unnamed worker"
    return "an unknown worker"


def take_over(
    state: SessionState,
    name: str,
    *,
    now: datetime,
    owner: str,
    policy: LostPolicy = LostPolicy(),  # noqa: B008 - frozen, so sharing it is safe
) -> Transition:
    """A running instance whose lease expired is lost: fail it, then replay it per ``policy``.

    ``owner`` is the token of the run whose lease the caller found expired
    (and claimed, so that run can no longer renew it): an instance that
    another run holds now, or that is no longer ``running``, is refused with
    :class:`InvalidTransitionError` and nothing changes. The instance ends
    ``failed`` with ``exceptionType`` ``triggers_core.errors.WorkerLost``
    naming the worker; with ``policy.retry``, and while the chain of clones
    has been lost fewer than ``policy.max_lost_retries`` times, it is then
    replayed as a clone (``replayed``; the clone is scheduled and keeps the
    ``runKey``), as ``retry()`` does.
    """
    b = Builder(state, now)
    instance = b.get(name)
    require(instance, "be taken over", Status.RUNNING)
    if lease_owner(instance) != owner:
        raise InvalidTransitionError(
            "be taken over",
            name,
            instance.status.value,
            "another run holds it now (it was started again)",
        )
    worker = instance.metadata.get("worker")
    lost = instance.metadata.get("lostRetries", 0)
    lost = lost if isinstance(lost, int) and not isinstance(lost, bool) else 0
    detail = (
        f"{name} was lost: its lease expired at {instance.metadata.get('leaseExpires')} "
        f"while {_describe(worker)} ran it (the worker died, was killed or lost its storage)"
    )
    replay = policy.retry and lost < policy.max_lost_retries
    if policy.retry and not replay:
        detail += f"; not replayed: lost {lost} times (max_lost_retries={policy.max_lost_retries})"
    failed = failed_instance(
        instance,
        b.ts,
        exception_type=WORKER_LOST_TYPE,
        exception_info=detail,
        exception_context={"worker": worker if isinstance(worker, Mapping) else {}},
        log_level=ERROR,
        metadata={"lostRetries": lost},
    )
    b.put(failed)
    if replay:
        replay_clone(
            b, failed, None, retries=instance.retries, cooldown=None, lost_retries=lost + 1
        )
    return b.build()


def redispatch(state: SessionState, name: str, *, now: datetime, since: datetime) -> Transition:
    """Dispatch again a ``scheduled`` instance whose message was lost.

    ``since`` is when the caller saw it scheduled (its due-index entry): an
    instance that started, or that was dispatched again since, is refused
    with :class:`InvalidTransitionError`, so however many sweepers look at
    it, one dispatches it again. It stays ``scheduled`` (its timestamp
    moves to ``now``, ``dispatches`` counts the attempts) and a
    ``ScheduleInstance`` effect hands it to its runner.
    """
    b = Builder(state, now)
    instance = b.get(name)
    require(instance, "be dispatched again", Status.SCHEDULED)
    due = due_of(instance)
    if due is None or due.at != since:
        raise InvalidTransitionError(
            "be dispatched again",
            name,
            instance.status.value,
            f"it was dispatched again at {due.at.isoformat() if due else 'an unknown time'}",
        )
    task = config_for(b, instance)
    count = instance.metadata.get("dispatches", 1)
    count = count if isinstance(count, int) and not isinstance(count, bool) else 1
    # Its retry cooldown (if any; stored before cooldowns were timers) is over: the due
    # index must not wait for it again.
    fresh = {k: v for k, v in instance.metadata.items() if k != "cooldown"}
    schedule(b, task, attrs.evolve(instance, metadata=fresh), dispatches=count + 1)
    return b.build()
