"""Running an instance: start it, then record its outcome.

``mark_running`` starts a scheduled instance; ``finish`` records its result and
cascades (its task's name fires with the result) in the same transition, so a
crash between them cannot lose the cascade; ``fail``, ``skip_self`` and
``retry_self`` record the other outcomes (a retry fails the instance and
replays it as a clone, see :mod:`triggers_core.engine.recovery`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from triggers_core.engine.effects import DuplicateFire, TriggerFired
from triggers_core.engine.fire import apply_fire
from triggers_core.engine.idempotency import cascade_key
from triggers_core.engine.leases import Lease, lease_owner
from triggers_core.engine.levels import ERROR, NOTSET
from triggers_core.engine.recovery import replay_clone
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.engine.transition import (
    DEFAULT_MAX_CASCADE_DEPTH,
    MAX_RETRIES_EXCEEDED_TYPE,
    RETRY_TYPE,
    Builder,
    Transition,
    cascade_depth_of,
    check_cooldown,
    config_for,
    failed_instance,
    require,
    set_status,
    task_kwargs,
    timestamp,
)
from triggers_core.engine.values import to_json_mapping
from triggers_core.errors import InvalidTransitionError

__all__ = ["fail", "finish", "mark_running", "retry_self", "skip_self"]


def mark_running(
    state: SessionState, name: str, *, now: datetime, lease: Lease | None = None
) -> Transition:
    """A runner starts a scheduled instance; records ``actualKwargs``.

    With a ``lease`` it also records who runs it (``owner``, ``worker``) and
    until when (``leaseExpires``, ``leaseSeconds``): see
    :mod:`triggers_core.engine.leases`. Without one (a storage that keeps no
    leases) nothing can tell later whether its runner is alive.
    """
    b = Builder(state, now)
    instance = b.get(name)
    require(instance, "run", Status.SCHEDULED)
    task = config_for(b, instance)
    actual = task_kwargs(task, instance.kwargs)
    if lease is None:
        b.put(set_status(instance, Status.RUNNING, b.ts, actualKwargs=actual))
    else:
        b.put(
            set_status(
                instance,
                Status.RUNNING,
                b.ts,
                actualKwargs=actual,
                owner=lease.owner,
                worker=to_json_mapping(lease.worker, "worker"),
                leaseExpires=timestamp(lease.expires),
                leaseSeconds=lease.seconds,
            )
        )
    return b.build()


def _check_owner(instance: TaskInstance, owner: str | None, operation: str) -> None:
    """Refuse an outcome from a run that no longer holds the instance."""
    if owner is None:
        return
    holder = lease_owner(instance)
    if holder is not None and holder != owner:
        raise InvalidTransitionError(
            operation,
            instance.name,
            instance.status.value,
            "it was taken over by another run (its lease expired, or it was started again)",
        )


def finish(
    state: SessionState,
    name: str,
    result: Mapping[str, Any] | None,
    *,
    now: datetime,
    log_level: int = NOTSET,
    max_cascade_depth: int = DEFAULT_MAX_CASCADE_DEPTH,
    guard_cascade: bool = False,
    owner: str | None = None,
) -> Transition:
    """A running instance returned ``result``: finish it and cascade, atomically.

    Raises :class:`InvalidKwargsError` (and changes nothing) if ``result`` is
    not a JSON-compatible mapping; the shell records that as a failure.
    Instances the cascade makes ready deeper than ``max_cascade_depth`` fail.

    With ``guard_cascade`` the cascade is recorded under the instance's
    :func:`~triggers_core.engine.idempotency.cascade_key`, which ``state`` must hold
    if it exists: an instance that already cascaded once then finishes
    without cascading (a ``DuplicateFire`` effect says so).

    With ``owner`` (the token of the run that reports), an instance another
    run holds now refuses the outcome (:class:`InvalidTransitionError`); the
    same holds for ``fail``, ``skip_self`` and ``retry_self``.
    """
    b = Builder(state, now, max_cascade_depth)
    instance = b.get(name)
    require(instance, "finish", Status.RUNNING)
    _check_owner(instance, owner, "finish")
    data = to_json_mapping(result, "result")
    finished = set_status(instance, Status.FINISHED, b.ts, result=data)
    b.put(attrs.evolve(finished, log_level=max(instance.log_level, log_level)))
    task_name = instance.task_name
    key = cascade_key(task_name, name) if guard_cascade else None
    if key is not None:
        first = state.fire_records.get(key)
        if first is not None:
            b.effects.append(DuplicateFire(task_name, first, name))
            return b.build()
    b.cascade_depth = cascade_depth_of(instance) + 1
    scheduled = apply_fire(b, task_name, data)
    b.effects.append(TriggerFired(task_name, scheduled))
    if key is not None:
        b.new_records = {key: scheduled}
    return b.build()


def fail(
    state: SessionState,
    name: str,
    *,
    now: datetime,
    exception_type: str,
    exception_info: str,
    exception_context: Mapping[str, Any] | None = None,
    log_level: int = ERROR,
    metadata: Mapping[str, Any] | None = None,
    owner: str | None = None,
) -> Transition:
    """A running instance raised, or a scheduled one could not be dispatched."""
    b = Builder(state, now)
    instance = b.get(name)
    require(instance, "fail", Status.RUNNING, Status.SCHEDULED)
    _check_owner(instance, owner, "fail")
    b.put(
        failed_instance(
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
    log_level: int = NOTSET,
    owner: str | None = None,
) -> Transition:
    """A running instance skipped itself: ``skipped``, no cascade."""
    b = Builder(state, now)
    instance = b.get(name)
    require(instance, "skip itself", Status.RUNNING)
    _check_owner(instance, owner, "skip itself")
    extra = to_json_mapping(metadata, "metadata")
    skipped = set_status(instance, Status.SKIPPED, b.ts, **extra)
    b.put(attrs.evolve(skipped, log_level=max(instance.log_level, log_level)))
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
    log_level: int = NOTSET,
    owner: str | None = None,
) -> Transition:
    """A running instance asked to retry: fail it and replay it after ``cooldown``.

    Without a cooldown (None or 0) the clone is scheduled at once; with one it
    waits unstarted for a durable timer (``delayedUntil``, see
    :func:`~triggers_core.engine.recovery.cooling`), which ``advance`` applies.
    Once its retries reach ``max_retries`` it fails with ``MaxRetriesExceeded``.
    """
    b = Builder(state, now)
    instance = b.get(name)
    require(instance, "retry", Status.RUNNING)
    _check_owner(instance, owner, "retry")
    cooldown = check_cooldown(cooldown)
    if instance.retries >= max_retries:
        detail = f"{instance.name} asked to retry after {instance.retries} retries"
        detail += f" (max_retries={max_retries})"
        if exception_type:
            detail += f"; last error {exception_type}:\n{exception_info or ''}"
        b.put(
            failed_instance(
                instance,
                b.ts,
                exception_type=MAX_RETRIES_EXCEEDED_TYPE,
                exception_info=detail,
                exception_context=exception_context,
                log_level=max(log_level, ERROR),
                metadata=metadata,
            )
        )
        return b.build()
    failed = failed_instance(
        instance,
        b.ts,
        exception_type=exception_type or RETRY_TYPE,
        exception_info=exception_info or f"{instance.name} asked to retry",
        exception_context=exception_context,
        log_level=log_level,
        metadata=metadata,
    )
    b.put(failed)
    replay_clone(b, failed, replacement_kwargs, retries=instance.retries + 1, cooldown=cooldown)
    return b.build()
