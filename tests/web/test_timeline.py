"""The timeline built from what instances record: events, bars, retries, lost and expired."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from triggers_core import Status, TaskInstance
from triggers_core.web._present import format_duration, shown_json, shown_text
from triggers_core.web._timeline import build_timeline, run_duration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def instance(name: str, status: Any, stamps: dict[str, float], **meta: Any) -> TaskInstance:
    return TaskInstance(
        name,
        name.partition("#")[0],
        status,
        metadata={
            "created": at(stamps.get("unstarted", 0)),
            "timestamps": {k: at(v) for k, v in stamps.items()},
            **meta,
        },
    )


class Later(enum.Enum):
    """A status this engine does not have yet (time conditions add ``expired``)."""

    EXPIRED = "expired"


def test_a_lost_instance_and_its_retry() -> None:
    lost = instance(
        "t_a#0",
        Status.REPLAYED,
        {"unstarted": 0, "scheduled": 0, "running": 1, "failed": 31, "replayed": 31},
        exceptionType="triggers_core.errors.WorkerLost",
        exceptionInfo="worker host-1 (pid 7) stopped renewing its lease",
    )
    clone = instance(
        "t_a#1",
        Status.FINISHED,
        {"unstarted": 31, "scheduled": 31, "running": 32, "finished": 35},
        parent="t_a#0",
    )
    timeline = build_timeline([lost, clone], {"t_a#0": lost, "t_a#1": clone}, now=T0)
    kinds = [(e.instance, e.kind) for e in timeline.events]
    assert ("t_a#0", "lost") in kinds
    assert ("t_a#0", "failed") not in kinds
    created = next(e for e in timeline.events if e.instance == "t_a#1" and e.kind == "created")
    assert created.detail == "retry of t_a#0: worker host-1 (pid 7) stopped renewing its lease"
    first, second = timeline.bars
    assert first.end_kind == "lost"
    assert second.parent == "t_a#0"
    assert second.label == "t_a#1 (retry of t_a#0)"
    assert [s.phase for s in second.segments] == ["queued", "running"]
    assert second.segments[1].duration == "3.0 s"
    assert run_duration(lost) == timedelta(seconds=30)
    # Same-time events come in the order they happen; the cascade after the finish.
    finished = [e.kind for e in timeline.events if e.instance == "t_a#1"]
    assert finished == ["created", "scheduled", "running", "finished", "cascade"]


def test_an_expired_instance_is_marked() -> None:
    expired = instance("t_w#0", Later.EXPIRED, {"unstarted": 0, "expired": 60})
    timeline = build_timeline([expired], {"t_w#0": expired}, now=T0 + timedelta(hours=1))
    assert [(e.kind, e.at) for e in timeline.events][-1] == ("expired", T0 + timedelta(minutes=1))
    (bar,) = timeline.bars
    assert bar.end_kind == "expired"
    assert bar.segments[0].phase == "waiting"
    assert bar.segments[0].duration == "1m"


def test_in_flight_bars_reach_now_and_unknown_times_are_ignored() -> None:
    running = instance("t_r#0", Status.RUNNING, {"unstarted": 0, "scheduled": 1, "running": 2})
    broken = TaskInstance(
        "t_b#0", "t_b", Status.UNSTARTED, metadata={"created": "yesterday", "timestamps": [1]}
    )
    now = T0 + timedelta(seconds=10)
    timeline = build_timeline([running, broken], {}, now=now)
    assert timeline.end == now
    assert timeline.bars[0].segments[-1].end == now
    assert timeline.bars[1].segments == ()
    assert build_timeline([], {}, now=now).bars == ()


def test_the_actor_is_named_on_the_change_they_made() -> None:
    skipped = instance(
        "t_s#0",
        Status.SKIPPED,
        {"unstarted": 0, "scheduled": 0, "running": 1, "failed": 2, "skipped": 9},
        actor="web:ann",
        exceptionInfo="ValueError: no",
    )
    events = {e.kind: e.detail for e in build_timeline([skipped], {}, now=T0).events}
    assert events["skipped"] == "by web:ann"
    assert events["failed"] == "ValueError: no"


@given(st.floats(min_value=0, max_value=10**7, allow_nan=False))
def test_durations_are_short_words(seconds: float) -> None:
    words = format_duration(timedelta(seconds=seconds))
    assert words
    assert len(words.split()) <= 2


def test_values_are_cut_with_their_size() -> None:
    assert shown_text("abc").note == ""
    big = shown_json({"k": "é" * 30_000})
    assert len(big.text) == 20_000
    assert big.note.startswith("truncated: the first 20,000 characters of 60.0 KB")
    assert shown_text("postgresql://u:secret@h/db", redacted=True).text == "postgresql://u@h/db"
