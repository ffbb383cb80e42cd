"""An operator's tools: force a status, merge metadata, acknowledge logs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from triggers_core.engine.effects import TriggerFired
from triggers_core.engine.fire import apply_fire
from triggers_core.engine.state import SessionState, Status
from triggers_core.engine.transition import (
    DEFAULT_MAX_CASCADE_DEPTH,
    Builder,
    Transition,
    cascade_depth_of,
    merged_metadata,
    set_status,
)
from triggers_core.engine.values import to_json_mapping

__all__ = ["mark_logs_resolved", "update_metadata", "update_status"]


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
