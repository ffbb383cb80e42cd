"""Recovery of failed instances: replay (a clone takes over) and skip."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from triggers_core.engine.effects import InstanceReplayed, InstanceSkipped, TriggerFired
from triggers_core.engine.fire import apply_fire
from triggers_core.engine.state import SessionState, Status, TaskInstance, instance_name
from triggers_core.engine.transition import (
    DEFAULT_MAX_CASCADE_DEPTH,
    Builder,
    Transition,
    cascade_depth_of,
    config_for,
    require,
    schedule,
    set_status,
)
from triggers_core.engine.values import to_json_mapping
from triggers_core.errors import InvalidKwargsError

__all__ = ["replay_clone", "replay_failed", "skip_failed"]


def replay_clone(
    b: Builder,
    instance: TaskInstance,
    replacement_kwargs: Mapping[str, Any] | None,
    *,
    retries: int,
    cooldown: float | None,
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
    }
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
    b.put(set_status(instance, Status.REPLAYED, b.ts, replayedAs=clone_name))
    schedule(b, task, clone, cooldown)
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
    b = Builder(state, now)
    instance = b.get(name)
    require(instance, "replay", Status.FAILED)
    replay_clone(b, instance, replacement_kwargs, retries=0, cooldown=None)
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
    b = Builder(state, now, max_cascade_depth)
    instance = b.get(name)
    require(instance, "skip", Status.FAILED)
    data = to_json_mapping(result, "result")
    b.put(set_status(instance, Status.SKIPPED, b.ts))
    if cascade:
        b.cascade_depth = cascade_depth_of(instance) + 1
        scheduled = apply_fire(b, instance.task_name, data)
        b.effects.append(TriggerFired(instance.task_name, scheduled))
    b.effects.append(InstanceSkipped(instance.name, cascade))
    return b.build()
