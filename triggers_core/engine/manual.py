"""An operator's tools: force a status, merge metadata, acknowledge logs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from triggers_core.engine.effects import TriggerFired
from triggers_core.engine.fire import apply_fire
from triggers_core.engine.levels import ERROR
from triggers_core.engine.state import SessionState, Status
from triggers_core.engine.transition import (
    DEFAULT_MAX_CASCADE_DEPTH,
    Builder,
    Transition,
    cascade_depth_of,
    failed_instance,
    merged_metadata,
    set_status,
)
from triggers_core.engine.values import to_json_mapping
from triggers_core.errors import InvalidTransitionError

__all__ = [
    "FAILED_BY_OPERATOR_TYPE",
    "fail_by_operator",
    "mark_logs_resolved",
    "update_metadata",
    "update_status",
]

#: ``exceptionType`` of an instance an operator failed (``fail_by_operator``).
FAILED_BY_OPERATOR_TYPE = "triggers_core.errors.FailedByOperator"


def fail_by_operator(
    state: SessionState,
    name: str,
    *,
    now: datetime,
    reason: str,
    actor: str | None = None,
) -> Transition:
    """An operator fails an instance that is ``unstarted``, ``scheduled`` or ``running``.

    It ends ``failed`` (replayable) with ``exceptionType``
    ``triggers_core.errors.FailedByOperator`` and ``reason`` as its
    ``exceptionInfo``; ``actor`` (who asked) is recorded in its metadata. A
    ``running`` instance's body may still be running: its outcome will be
    refused (its lease no longer holds the instance). A ``failed`` or resolved
    instance is refused with :class:`InvalidTransitionError` saying why.
    """
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError(f"reason must be a non-empty string, got {reason!r}")
    b = Builder(state, now)
    instance = b.get(name)
    if instance.status not in (Status.UNSTARTED, Status.SCHEDULED, Status.RUNNING):
        why = (
            "it has failed already: replay or skip it"
            if instance.status is Status.FAILED
            else "it is resolved and never changes again"
        )
        raise InvalidTransitionError("be failed", name, instance.status.value, why)
    extra = {} if actor is None else {"actor": actor}
    b.put(
        failed_instance(
            instance,
            b.ts,
            exception_type=FAILED_BY_OPERATOR_TYPE,
            exception_info=reason,
            exception_context={} if actor is None else {"actor": actor},
            log_level=ERROR,
            metadata=extra,
        )
    )
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
    b = Builder(state, now, max_cascade_depth)
    instance = b.get(name)
    extra = to_json_mapping(metadata, "metadata")
    data = to_json_mapping(cascade_kwargs, "cascade_kwargs")
    b.put(set_status(instance, new_status, b.ts, **extra))
    if cascade:
        b.cascade_depth = cascade_depth_of(instance) + 1
        scheduled = apply_fire(b, instance.task_name, data)
        b.effects.append(TriggerFired(instance.task_name, scheduled))
    return b.build()


def update_metadata(
    state: SessionState, name: str, metadata: Mapping[str, Any], *, now: datetime
) -> Transition:
    """Merge ``metadata`` into an instance's metadata; status unchanged.

    The engine's own ``created``, ``timestamps``, ``depth`` and ``parent`` are kept.
    """
    b = Builder(state, now)
    instance = b.get(name)
    extra = to_json_mapping(metadata, "metadata")
    b.put(attrs.evolve(instance, metadata=merged_metadata(instance, extra, b.ts)))
    return b.build()


def mark_logs_resolved(state: SessionState, name: str, *, now: datetime) -> Transition:
    """Acknowledge an instance's ERROR-level logs (``logs_resolved`` becomes True)."""
    b = Builder(state, now)
    instance = b.get(name)
    b.put(
        attrs.evolve(
            instance,
            logs_marked_resolved=True,
            metadata={**instance.metadata, "lastModified": b.ts},
        )
    )
    return b.build()
