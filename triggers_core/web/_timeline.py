"""A session's timeline: what happened to its instances, when, for how long, and why.

Built from what the instances record (the session keeps no separate log):
``created``, ``timestamps`` (status -> the time it last entered that status),
``parent`` (a replayed clone's failed original), ``exceptionType`` and
``exceptionInfo``. From those come the *events* (an instance created by a
fire, scheduled, running, finished and firing its name, failed, lost,
expired, replayed, skipped, abandoned) and one *bar* per instance (waiting
for triggers, queued, running), each with its duration. A clone is a retry
or a replay: it names its original and the reason the original failed. An
instance whose ``exceptionType`` is ``triggers_core.errors.WorkerLost`` was
*lost* (its worker died); an instance whose status is ``expired`` missed its
time window.

Cost: O(n log n) for the n instances drawn (the page of the instance table),
plus one dict lookup per clone for its original.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from triggers_core.engine.state import TaskInstance
from triggers_core.runtime.redaction import redact
from triggers_core.tools.explain import summary_line
from triggers_core.web._present import (
    LOST_EXCEPTION,
    format_duration,
    metadata_text,
    parse_time,
)

__all__ = ["Bar", "Event", "Segment", "Timeline", "build_timeline"]

#: The phases of a bar, in order: entered at the first status, left at the next.
_PHASES = (("unstarted", "waiting"), ("scheduled", "queued"), ("running", "running"))
_ENDS = ("finished", "failed", "skipped", "replayed", "abandoned", "expired")

#: Geometry of the drawing (SVG user units).
LABEL_WIDTH = 260
PLOT_WIDTH = 700
ROW_HEIGHT = 20


@attrs.frozen
class Event:
    """One thing that happened to an instance."""

    at: datetime
    instance: str
    #: ``created``, a status (``scheduled`` ...), ``lost``, ``cascade``.
    kind: str
    detail: str = ""


@attrs.frozen
class Segment:
    """A stretch of a bar: ``phase`` from ``start`` to ``end``, drawn at x..x+width."""

    phase: str
    start: datetime
    end: datetime
    x: float
    width: float

    @property
    def duration(self) -> str:
        """The stretch's length, in words."""
        return format_duration(self.end - self.start)


@attrs.frozen
class Bar:
    """One instance's row of the timeline."""

    instance: str
    status: str
    y: float
    segments: tuple[Segment, ...]
    #: Where the row ends (x), and how (a status, ``lost``, or "" while in flight).
    end_x: float
    end_kind: str
    #: The instance this one is a clone of (a retry or a replay), and why that one failed.
    parent: str = ""
    retry_reason: str = ""
    actor: str = ""

    @property
    def label(self) -> str:
        """What the row says about the instance."""
        return self.instance + (f" (retry of {self.parent})" if self.parent else "")


@attrs.frozen
class Timeline:
    """The events (oldest first) and the bars of the instances drawn."""

    events: tuple[Event, ...]
    bars: tuple[Bar, ...]
    start: datetime | None
    end: datetime | None
    #: Height of the drawing, and where the axis ticks go (x, text).
    height: float
    ticks: tuple[tuple[float, str], ...]
    label_width: int = LABEL_WIDTH
    plot_width: int = PLOT_WIDTH

    @property
    def span(self) -> str:
        """From the first to the last event, in words."""
        if self.start is None or self.end is None:
            return ""
        return format_duration(self.end - self.start)


def _stamps(instance: TaskInstance) -> dict[str, datetime]:
    raw = instance.metadata.get("timestamps")
    found: dict[str, datetime] = {}
    if isinstance(raw, Mapping):
        for status, value in raw.items():
            at = parse_time(value)
            if at is not None and isinstance(status, str):
                found[status] = at
    created = parse_time(instance.metadata.get("created"))
    if created is not None:
        found.setdefault("unstarted", created)
    return found


def failure_reason(instance: TaskInstance) -> str:
    """The line that says why ``instance`` failed (its exception's summary), redacted."""
    info = metadata_text(instance.metadata, "exceptionInfo")
    kind = metadata_text(instance.metadata, "exceptionType")
    line = summary_line(info) if info else ""
    return redact(line or kind)


def is_lost(instance: TaskInstance) -> bool:
    """The instance failed because its worker died (``WorkerLost``)."""
    return metadata_text(instance.metadata, "exceptionType") == LOST_EXCEPTION


def _instance_events(
    instance: TaskInstance, stamps: Mapping[str, datetime], parent: TaskInstance | None
) -> list[Event]:
    name = instance.name
    events: list[Event] = []
    created = stamps.get("unstarted")
    if created is not None:
        if parent is not None:
            why = failure_reason(parent)
            detail = f"retry of {parent.name}" + (f": {why}" if why else "")
        else:
            recorded = ", ".join(sorted(instance.kwargs))
            detail = f"recorded {recorded}" if recorded else ""
        events.append(Event(created, name, "created", detail))
    for status, at in stamps.items():
        if status == "unstarted":
            continue
        detail = ""
        kind = status
        if status == "failed":
            detail = failure_reason(instance)
            if is_lost(instance):
                kind = "lost"
        elif status == "finished":
            events.append(Event(at, name, "cascade", f"fired {instance.task_name!r}"))
        actor = metadata_text(instance.metadata, "actor")
        if actor and status == instance.status.value:  # the actor did the latest change
            detail = f"{detail} (by {actor})" if detail else f"by {actor}"
        events.append(Event(at, name, kind, detail))
    return events


#: Events at the same time, in the order they happen.
_RANK = {"created": 0, "unstarted": 0, "scheduled": 1, "running": 2, "cascade": 4}


def _event_order(event: Event) -> tuple[datetime, str, int]:
    return (event.at, event.instance, _RANK.get(event.kind, 3))


def build_timeline(
    instances: Sequence[TaskInstance],
    everything: Mapping[str, TaskInstance],
    *,
    now: datetime,
) -> Timeline:
    """The timeline of ``instances`` (``everything``: the session's instances, for originals).

    Bars of instances still in flight reach ``now``.
    """
    rows: list[tuple[TaskInstance, dict[str, datetime], TaskInstance | None]] = []
    events: list[Event] = []
    for instance in instances:
        stamps = _stamps(instance)
        parent_name = instance.metadata.get("parent")
        parent = everything.get(parent_name) if isinstance(parent_name, str) else None
        rows.append((instance, stamps, parent))
        events.extend(_instance_events(instance, stamps, parent))
    events.sort(key=_event_order)
    times = [at for _, stamps, _ in rows for at in stamps.values()]
    in_flight = any(not i.is_resolved and i.status.value != "failed" for i, _, _ in rows)
    if in_flight and times:
        times.append(now)
    if not times:
        return Timeline((), (), None, None, ROW_HEIGHT, ())
    start, end = min(times), max(times)
    total = max((end - start).total_seconds(), 1e-6)

    def x(at: datetime) -> float:
        return LABEL_WIDTH + PLOT_WIDTH * (at - start).total_seconds() / total

    bars = []
    for row, (instance, stamps, parent) in enumerate(rows):
        bars.append(_bar(instance, stamps=stamps, parent=parent, row=row, x=x, now=now))
    ticks = tuple(
        (x(start + (end - start) * (i / 4)), format_duration((end - start) * (i / 4)) or "0")
        for i in range(5)
    )
    height = ROW_HEIGHT * (len(bars) + 1.5)
    return Timeline(tuple(events), tuple(bars), start, end, height, ticks)


def _first(item: tuple[datetime, str]) -> datetime:
    return item[0]


def _bar(
    instance: TaskInstance,
    *,
    stamps: Mapping[str, datetime],
    parent: TaskInstance | None,
    row: int,
    x: Any,
    now: datetime,
) -> Bar:
    status = instance.status.value
    # The first end it reached (a replayed instance failed first, then was replayed).
    ending = min((stamps[s] for s in _ENDS if s in stamps), default=None)
    entered = sorted(((stamps[s], phase) for s, phase in _PHASES if s in stamps), key=_first)
    segments = []
    for index, (begin, phase) in enumerate(entered):
        if index + 1 < len(entered):
            finish = entered[index + 1][0]
        elif ending is not None:
            finish = ending
        else:
            finish = begin if instance.is_resolved else now
        finish = max(finish, begin)
        if finish == begin and index + 1 < len(entered):
            continue  # no time in that phase (created ready, say): nothing to draw
        left = x(begin)
        segments.append(Segment(phase, begin, finish, left, max(x(finish) - left, 1.0)))
    if ending is not None:
        end_x = x(ending)
    elif segments:
        end_x = segments[-1].x + segments[-1].width
    else:
        end_x = float(LABEL_WIDTH)
    if is_lost(instance) and "failed" in stamps:
        end_kind = "lost"
    else:
        end_kind = status if status in _ENDS else ""
    return Bar(
        instance=instance.name,
        status=status,
        y=ROW_HEIGHT * (row + 1),
        segments=tuple(segments),
        end_x=end_x,
        end_kind=end_kind,
        parent=parent.name if parent is not None else "",
        retry_reason=failure_reason(parent) if parent is not None else "",
        actor=metadata_text(instance.metadata, "actor"),
    )


def run_duration(instance: TaskInstance) -> timedelta | None:
    """How long the instance ran (running -> its end), if both times are recorded."""
    stamps = _stamps(instance)
    began = stamps.get("running")
    ended = min((stamps[s] for s in _ENDS if s in stamps), default=None)
    if began is None or ended is None or ended < began:
        return None
    return ended - began
