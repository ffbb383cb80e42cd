"""Effects: what the pure engine asks the shell to do once the state is committed.

The engine never performs I/O. Each transition returns its effects in order;
the shell calls the hooks (``TriggerFired``, ``InstanceReplayed``,
``InstanceSkipped``) in that order, then hands the ``ScheduleInstance`` effects
to their runners in that order. ``DuplicateFire`` calls no hook: the shell
only logs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "DuplicateFire",
    "Effect",
    "InstanceReplayed",
    "InstanceSkipped",
    "ScheduleInstance",
    "TriggerFired",
]


@attrs.frozen
class ScheduleInstance:
    """Hand a ready instance to its runner.

    ``trigger_kwargs`` are already deep-merged with the task's ``withParams``;
    ``depth`` counts replays. The runner starts it as soon as it can: a retry's
    cooldown and a ``delay`` are served before, by a durable timer in the storage
    (the instance is scheduled when its timer fires), never by the runner.
    """

    instance_name: str
    task_name: str
    run: str
    using: str | None
    trigger_kwargs: Mapping[str, Any]
    depth: int = 0


@attrs.frozen
class TriggerFired:
    """Call ``_post_fire(trigger_name, scheduled instances)``."""

    trigger_name: str
    scheduled: tuple[str, ...]


@attrs.frozen
class InstanceReplayed:
    """Call ``_post_replay(instance)``; ``clone_name`` is the new instance."""

    instance_name: str
    clone_name: str


@attrs.frozen
class InstanceSkipped:
    """Call ``_post_skip(instance, cascade)`` (after the cascade's own effects)."""

    instance_name: str
    cascade: bool


@attrs.frozen
class DuplicateFire:
    """A fire that was applied before was not applied again (no hook is called).

    A keyed fire whose key the session already recorded (``instance_name`` is
    None), or the cascade of an instance that already cascaded once
    (``instance_name`` is the instance, ``trigger_name`` its task).
    ``scheduled`` names what the first fire scheduled.
    """

    trigger_name: str
    scheduled: tuple[str, ...]
    instance_name: str | None = None


Effect = ScheduleInstance | TriggerFired | InstanceReplayed | InstanceSkipped | DuplicateFire
