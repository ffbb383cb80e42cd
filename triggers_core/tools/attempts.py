"""Attempts: why an instance failed, and the chain of replays and retries behind it.

A failed instance keeps what went wrong in its metadata (``exceptionType``,
``exceptionInfo``, ``timestamps.failed``) when it is replayed, and the
engine links the instances of one piece of work: a replay (by an operator,
or by the task's own ``retry()``) names its ``parent``, the replaced
instance names its ``replayedAs``. :func:`failure_of` reads one instance's
failure; :func:`attempts` walks the ``parent`` chain of an instance, oldest
first, so a tool can show every attempt's reason, exception type and time.

Stored metadata is read defensively: a value of the wrong type counts as
absent, a ``parent`` chain that loops or names an instance that is not
loaded ends there.

Cost: :func:`failure_of` is O(length of ``exceptionInfo``);
:func:`attempts` is O(depth of the chain) lookups plus those reads, with at
most :data:`MAX_ATTEMPTS` attempts returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from triggers_core.engine.state import Status, TaskInstance

__all__ = ["MAX_ATTEMPTS", "Attempt", "attempts", "failure_of", "stamp", "summary_line"]

#: :func:`attempts` returns at most this many (the most recent ones).
MAX_ATTEMPTS = 100


def summary_line(info: str) -> str:
    """The line that says what went wrong: in a traceback, the first line after its last
    frame (``RuntimeError: it broke``, also when the message goes on over more lines);
    else the first line."""
    lines = [line for line in info.splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Traceback (most recent call last)"):
        frames = [i for i, line in enumerate(lines) if line.startswith((" ", "\t"))]
        after = frames[-1] + 1 if frames else 1
        return lines[after] if after < len(lines) else lines[-1]
    return lines[0]


def stamp(instance: TaskInstance, status: Status) -> datetime | None:
    """When ``instance`` entered ``status`` (``timestamps``), if recorded and readable."""
    timestamps = instance.metadata.get("timestamps")
    value = timestamps.get(status.value) if isinstance(timestamps, Mapping) else None
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


@attrs.frozen
class Attempt:
    """One instance of a piece of work, and how it ended (or where it is)."""

    instance: str
    status: Status
    #: ``module.Name`` of what it raised ("" if it did not fail).
    exception_type: str = ""
    #: The line that says what went wrong (see :func:`summary_line`; "" if it did not fail).
    reason: str = ""
    #: When it failed (None if it did not, or the time is not recorded).
    failed_at: datetime | None = None
    #: The instance that replaced it (a replay or a retry), if any.
    replayed_as: str | None = None

    @property
    def failed(self) -> bool:
        """It failed (it may have been replayed or skipped since)."""
        return bool(self.exception_type or self.reason or self.failed_at)

    def words(self) -> str:
        """One line: ``t#0 failed at TIME: LookupError: no address (builtins.LookupError)``.

        A replaced attempt ends with ``; replayed as t#1``.
        """
        if not self.failed:
            return f"{self.instance} {self.status}"
        at = "" if self.failed_at is None else f" at {self.failed_at.isoformat()}"
        what = self.reason or self.exception_type or "no reason recorded"
        kind = f" ({self.exception_type})" if self.exception_type and self.reason else ""
        then = "" if self.replayed_as is None else f"; replayed as {self.replayed_as}"
        return f"{self.instance} failed{at}: {what}{kind}{then}"

    def to_json(self) -> dict[str, Any]:
        """As a JSON-compatible mapping."""
        return {
            "instance": self.instance,
            "status": self.status.value,
            "exceptionType": self.exception_type or None,
            "reason": self.reason or None,
            "failedAt": None if self.failed_at is None else self.failed_at.isoformat(),
            "replayedAs": self.replayed_as,
        }


def failure_of(instance: TaskInstance) -> Attempt:
    """What ``instance`` recorded about how it ended (see :class:`Attempt`)."""
    meta = instance.metadata
    kind = meta.get("exceptionType")
    info = meta.get("exceptionInfo")
    replayed_as = meta.get("replayedAs")
    return Attempt(
        instance=instance.name,
        status=instance.status,
        exception_type=kind if isinstance(kind, str) else "",
        reason=summary_line(info) if isinstance(info, str) else "",
        failed_at=stamp(instance, Status.FAILED),
        replayed_as=replayed_as if isinstance(replayed_as, str) else None,
    )


def attempts(instances: Mapping[str, TaskInstance], name: str) -> tuple[Attempt, ...]:
    """Every attempt of the work ``name`` belongs to, up to ``name``, oldest first.

    Follows ``parent`` from ``name`` back to the first instance; ``name``
    itself is the last attempt. Stops at a loop, at a parent not in
    ``instances``, or after :data:`MAX_ATTEMPTS` attempts.
    """
    chain: list[Attempt] = []
    seen: set[str] = set()
    current = instances.get(name)
    while current is not None and current.name not in seen and len(chain) < MAX_ATTEMPTS:
        seen.add(current.name)
        chain.append(failure_of(current))
        parent = current.metadata.get("parent")
        current = instances.get(parent) if isinstance(parent, str) else None
    return tuple(reversed(chain))
