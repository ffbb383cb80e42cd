"""Time conditions on the pure engine (SPEC section 10): within, onMiss, delay, advance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from triggers_core import engine
from triggers_core.engine.durations import MAX_DURATION, parse_duration
from triggers_core.engine.effects import ScheduleInstance, TriggerFired
from triggers_core.engine.leases import Due, DueKind, due_of
from triggers_core.engine.scopes import narrowed
from triggers_core.engine.serialization import (
    config_from_json,
    config_to_json,
    state_from_json,
    state_to_json,
)
from triggers_core.engine.state import RESOLVED_STATUSES, SessionState, Status
from triggers_core.engine.timers import timer_scope
from triggers_core.errors import ConfigurationError, InvalidTransitionError

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def configured(config: dict[str, Any]) -> SessionState:
    return engine.update_configuration(SessionState(), config).state


def fire(state: SessionState, trigger: str, when: float = 0, **kwargs: Any) -> SessionState:
    return engine.fire(state, trigger, kwargs, now=at(when)).state


def statuses(state: SessionState) -> dict[str, str]:
    return {name: i.status.value for name, i in sorted(state.instances.items())}


WINDOW = {
    "t_remind": {"after": ["ordered", "paid"], "run": "noop", "within": "24h", "onMiss": "late"},
    "t_chase": {"after": ["late"], "run": "noop"},
}


# -- durations and configuration --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("24h", 86_400),
        ("7d", 604_800),
        ("PT24H", 86_400),
        ("P1DT12H", 129_600),
        ("PT1.5S", 1.5),
        ("P2W", 1_209_600),
    ],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text).seconds == seconds
    assert parse_duration(text).text == text


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("24hr", "did you mean '24h'?"),
        ("15 min", "did you mean '15m'?"),
        ("pt24h", "did you mean 'PT24H'?"),
        ("0s", "must be positive"),
        ("PT0S", "must be positive"),
        ("3651d", "longer than the longest allowed (3650d)"),
        ("P1Y", "not a duration"),
        ("", "not a duration"),
        (90, "expected a duration"),
        ("-5s", "not a duration"),
    ],
)
def test_bad_durations_are_refused_naming_the_problem(value: object, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        configured({"t_a": {"after": ["a"], "run": "noop", "within": value}})
    assert "t_a.within: " in str(caught.value)
    assert message in str(caught.value)


def test_max_duration_is_accepted() -> None:
    state = configured({"t_a": {"after": ["a"], "run": "noop", "delay": "3650d"}})
    assert state.tasks["t_a"].delay is not None
    assert state.tasks["t_a"].delay.delta == MAX_DURATION


@pytest.mark.parametrize(
    ("directives", "message"),
    [
        ({"onMiss": "late"}, "t_a.onMiss: needs within"),
        ({"within": "1h", "onMiss": "a"}, "'a' is one of this task's own after triggers"),
        ({"within": "1h", "onMiss": 3}, "t_a.onMiss: expected a single trigger name"),
        ({"withn": "1h"}, "did you mean 'within'?"),
        ({"onmiss": "x"}, "did you mean 'onMiss'?"),
        ({"dealy": "1h"}, "did you mean 'delay'?"),
    ],
)
def test_time_directive_problems(directives: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        configured({"t_a": {"after": ["a", "b"], "run": "noop", **directives}})
    assert message in str(caught.value)


def test_on_miss_naming_the_and_every_trigger_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="own after triggers"):
        configured(
            {"t_a": {"after": ["a"], "andEvery": "e", "run": "x", "within": "1h", "onMiss": "e"}}
        )


def test_time_directives_read_back_as_written() -> None:
    raw = {"after": ["a"], "run": "noop", "within": "PT24H", "onMiss": "late", "delay": "15m"}
    state = configured({"t_a": raw})
    assert state.tasks["t_a"].to_json() == raw
    assert config_from_json(config_to_json(state.tasks)) == state.tasks


def test_a_version_2_session_keeps_within_as_an_extra() -> None:
    doc = state_to_json(configured({"t_a": {"after": ["a", "b"], "run": "noop"}}))
    doc["schemaVersion"] = 2
    # Keys near a directive's name were plain extras in version 2: they still load.
    doc["tasks"]["t_a"].update({"within": "1h", "onMiss": "late", "delay": 5, "withn": 1})
    state = state_from_json(doc)
    task = state.tasks["t_a"]
    assert task.within is None
    assert task.on_miss is None
    assert task.delay is None
    assert task.extras == {"within": "1h", "onMiss": "late", "delay": 5, "withn": 1}
    # It does not start acting differently: no window opens, nothing expires.
    state = fire(state, "a")
    assert "deadline" not in state.instances["t_a#0"].metadata
    assert engine.advance(state, at(10**7)).commit is False
    # Written again (now at version 3), it keeps its extras as extras.
    again = state_from_json(state_to_json(state))
    assert again.tasks["t_a"].extras == task.extras
    assert again.tasks["t_a"].within is None
    assert config_from_json(config_to_json(state.tasks))["t_a"].extras == task.extras


def test_expired_is_a_resolved_status() -> None:
    assert Status.EXPIRED in RESOLVED_STATUSES
    assert Status("expired") is Status.EXPIRED


# -- within and onMiss ------------------------------------------------------------------


def test_window_opens_at_the_first_requirement_and_closes_at_the_deadline() -> None:
    state = configured(WINDOW)
    state = fire(state, "ordered", 10, order=1)
    waiting = state.instances["t_remind#0"]
    assert waiting.metadata["deadline"] == at(10 + 86_400).isoformat()
    assert due_of(waiting) == Due(DueKind.TIMER, at(10 + 86_400))
    # Not yet due: nothing changes.
    assert engine.advance(state, at(86_409)).commit is False
    t = engine.advance(state, at(86_410))
    expired = t.state.instances["t_remind#0"]
    assert expired.status is Status.EXPIRED
    assert expired.kwargs == {"ordered": {"order": 1}}  # kept, visible
    assert expired.metadata["missing"] == ["paid"]
    # onMiss fired in the same transition, with what was missing.
    late = {"task": "t_remind", "instance": "t_remind#0", "missing": ["paid"]}
    assert t.state.latest_kwargs["late"] == {**late, "deadline": at(86_410).isoformat()}
    assert TriggerFired("late", ("t_chase#0",)) in t.effects
    assert t.scheduled == ("t_chase#0",)
    # A new window waits for the next fire; the old one's due entry is gone.
    assert statuses(t.state) == {
        "t_chase#0": "scheduled",
        "t_remind#0": "expired",
        "t_remind#1": "unstarted",
    }
    assert t.due["t_remind#0"] is None
    assert t.state.instances["t_remind#1"].kwargs == {}
    assert "deadline" not in t.state.instances["t_remind#1"].metadata
    # Idempotent: the same time again changes nothing.
    assert engine.advance(t.state, at(86_410)).commit is False


def test_completing_within_the_window_runs_and_never_expires() -> None:
    state = fire(configured(WINDOW), "ordered", 0)
    t = engine.fire(state, "paid", {}, now=at(86_399))
    assert t.scheduled == ("t_remind#0",)
    assert due_of(t.state.instances["t_remind#0"]).kind is DueKind.DISPATCH  # type: ignore[union-attr]
    assert engine.advance(t.state, at(10**6)).commit is False


def test_after_an_expiry_the_next_window_is_seeded_only_with_later_fires() -> None:
    state = fire(configured(WINDOW), "ordered", 0, order=1)
    state = engine.advance(state, at(86_400)).state
    state = fire(state, "paid", 90_000, amount=5)
    fresh = state.instances["t_remind#1"]
    assert fresh.kwargs == {"paid": {"amount": 5}}  # not the expired window's "ordered"
    assert fresh.metadata["deadline"] == at(90_000 + 86_400).isoformat()
    state = fire(state, "ordered", 90_001, order=2)
    assert state.instances["t_remind#1"].status is Status.SCHEDULED


def test_a_fire_after_the_deadline_goes_to_the_next_window() -> None:
    """The sweeper is late: the fire still finds the window closed, never completes it."""
    state = fire(configured(WINDOW), "ordered", 0, order=1)
    t = engine.fire(state, "paid", {"amount": 1}, now=at(86_401))
    assert statuses(t.state)["t_remind#0"] == "expired"
    assert t.state.instances["t_remind#1"].kwargs == {"paid": {"amount": 1}}
    assert "t_chase#0" in t.scheduled  # its onMiss fired in the same transition


def test_seeded_requirements_open_the_window_at_creation() -> None:
    state = configured({"t_a": {"after": ["a", "b"], "run": "noop"}})
    state = fire(state, "a", 0)
    state = engine.update_configuration(
        state, {"t_b": {"after": ["a", "c"], "run": "noop", "within": "1h"}}
    ).state
    state = fire(state, "x", 100)  # no task: nothing
    state = fire(state, "c", 200)
    # t_b#0 was created by "c", seeded with the earlier "a": ready at once.
    assert state.instances["t_b#0"].status is Status.SCHEDULED
    state = configured({"t_b": {"after": ["a", "c", "d"], "run": "noop", "within": "1h"}})
    state = fire(fire(state, "a", 0), "b", 50)
    assert state.instances["t_b#0"].metadata["deadline"] == at(3600).isoformat()


def test_an_unless_fire_alone_opens_no_window() -> None:
    state = configured({"t_a": {"after": ["a"], "unless": ["u", "v"], "run": "x", "within": "1h"}})
    state = fire(state, "u", 0)
    assert "deadline" not in state.instances["t_a#0"].metadata
    assert due_of(state.instances["t_a#0"]) is None


def test_groups_missing_names_the_unmet_groups() -> None:
    config = {
        "t_a": {
            "after": ["a", {"anyOf": ["b", "c"]}, {"atLeast": 2, "of": ["d", "e", "f"]}],
            "run": "noop",
            "within": "1h",
            "onMiss": "late",
        }
    }
    state = fire(fire(configured(config), "a", 0), "d", 1)
    t = engine.advance(state, at(3600))
    missing = [{"anyOf": ["b", "c"]}, {"atLeast": 2, "of": ["d", "e", "f"]}]
    assert t.state.instances["t_a#0"].metadata["missing"] == missing
    assert t.state.latest_kwargs["late"]["missing"] == missing


def test_and_every_task_is_renewed_only_by_its_and_every_trigger() -> None:
    config = {"t_a": {"after": ["a"], "andEvery": "e", "run": "x", "within": "1h"}}
    state = fire(configured(config), "e", 0)
    assert state.instances["t_a#0"].metadata["deadline"] == at(3600).isoformat()
    state = engine.advance(state, at(3600)).state
    assert statuses(state) == {"t_a#0": "expired"}  # no empty instance: e renews it
    state = fire(state, "a", 3700)
    assert statuses(state) == {"t_a#0": "expired"}
    state = fire(state, "e", 3800)
    assert state.instances["t_a#1"].status is Status.SCHEDULED  # seeded with the later a


def test_update_configuration_never_moves_a_deadline() -> None:
    state = fire(configured(WINDOW), "ordered", 0)
    deadline = state.instances["t_remind#0"].metadata["deadline"]
    changed = {**WINDOW["t_remind"], "within": "1h"}
    state = engine.update_configuration(state, {"t_remind": changed}).state
    assert state.instances["t_remind#0"].metadata["deadline"] == deadline
    assert engine.advance(state, at(3600)).commit is False
    del changed["within"], changed["onMiss"]
    state = engine.update_configuration(state, {"t_remind": changed}).state
    t = engine.advance(state, at(86_400))  # removing within does not cancel it either
    assert t.state.instances["t_remind#0"].status is Status.EXPIRED
    assert "late" not in t.state.latest_kwargs  # the current configuration has no onMiss


def test_replay_and_skip_of_an_expired_instance_are_refused() -> None:
    state = engine.advance(fire(configured(WINDOW), "ordered", 0), at(86_400)).state
    with pytest.raises(InvalidTransitionError, match="expired"):
        engine.replay_failed(state, "t_remind#0", now=at(90_000))
    with pytest.raises(InvalidTransitionError, match="expired"):
        engine.skip_failed(state, "t_remind#0", now=at(90_000))


def test_a_keyed_duplicate_fire_never_opens_a_window() -> None:
    state = configured(WINDOW)
    first = engine.fire(state, "ordered", {}, now=at(0), idempotency_key="k")
    state = engine.advance(first.state, at(86_400)).state
    again = engine.fire(state, "ordered", {}, now=at(86_401), idempotency_key="k")
    assert again.commit is False
    assert "deadline" not in again.state.instances["t_remind#1"].metadata


# -- delay ------------------------------------------------------------------------------

DELAYED = {"t_send": {"after": ["signed"], "unless": ["cancelled"], "run": "x", "delay": "1h"}}


def test_a_delayed_instance_waits_unstarted_then_is_scheduled() -> None:
    state = fire(configured(DELAYED), "signed", 10, who="ann")
    waiting = state.instances["t_send#0"]
    assert waiting.status is Status.UNSTARTED
    assert waiting.metadata["delayedUntil"] == at(3610).isoformat()
    assert due_of(waiting) == Due(DueKind.TIMER, at(3610))
    assert engine.advance(state, at(3609)).commit is False
    state = fire(state, "other", 20)  # unrelated fires change nothing
    t = engine.advance(state, at(3610))
    assert t.scheduled == ("t_send#0",)
    effect = t.effects[0]
    assert isinstance(effect, ScheduleInstance)
    assert effect.trigger_kwargs == {"signed": {"who": "ann"}}
    assert t.state.instances["t_send#0"].status is Status.SCHEDULED
    assert engine.advance(t.state, at(3610)).commit is False


def test_a_delayed_instance_is_abandoned_when_its_unless_holds() -> None:
    state = fire(configured(DELAYED), "signed", 0)
    state = fire(state, "cancelled", 100)
    assert state.instances["t_send#0"].status is Status.ABANDONED
    assert due_of(state.instances["t_send#0"]) is None
    assert engine.advance(state, at(10**6)).commit is False


def test_a_repeat_fire_does_not_reschedule_or_move_a_delay() -> None:
    config = {"t_send": {"after": ["signed"], "andEvery": "tick", "run": "x", "delay": "1h"}}
    state = fire(fire(configured(config), "signed", 0), "tick", 0)
    until = state.instances["t_send#0"].metadata["delayedUntil"]
    state = fire(state, "signed", 100)
    assert state.instances["t_send#0"].metadata["delayedUntil"] == until
    assert state.instances["t_send#0"].status is Status.UNSTARTED


def test_within_and_delay_together() -> None:
    config = {"t_a": {"after": ["a", "b"], "run": "x", "within": "1h", "delay": "2h"}}
    state = fire(fire(configured(config), "a", 0), "b", 10)
    # Met in time: the window no longer matters, the delay does.
    assert due_of(state.instances["t_a#0"]) == Due(DueKind.TIMER, at(10 + 7200))
    assert engine.advance(state, at(3600)).commit is False
    assert engine.advance(state, at(7210)).scheduled == ("t_a#0",)


# -- a retry's cooldown: the same durable timers ------------------------------------------

RETRYING = {"t_try": {"after": ["go"], "unless": ["stop"], "run": "x"}}


def retrying(config: dict[str, Any] = RETRYING, cooldown: float = 60) -> SessionState:
    """``t_try#0`` ran (at 0) and asked to retry after ``cooldown`` seconds (at 5)."""
    state = engine.fire(configured(config), "go", {"n": 1}, now=at(0)).state
    state = engine.mark_running(state, "t_try#0", now=at(0)).state
    return engine.retry_self(state, "t_try#0", now=at(5), max_retries=3, cooldown=cooldown).state


def test_a_retry_cooldown_is_a_timer_that_schedules_the_clone_once() -> None:
    state = retrying()
    clone = state.instances["t_try#1"]
    assert clone.status is Status.UNSTARTED
    assert due_of(clone) == Due(DueKind.TIMER, at(65))
    state = fire(state, "go", 10, n=2)  # a repeat fire neither starts nor moves it
    assert state.instances["t_try#1"] == clone
    assert engine.advance(state, at(64)).commit is False
    t = engine.advance(state, at(65))
    assert t.scheduled == ("t_try#1",)
    assert t.effects[0] == ScheduleInstance(
        "t_try#1", "t_try", "x", None, {"go": {"n": 1}}, depth=1
    )
    assert t.due == {"t_try#1": Due(DueKind.DISPATCH, at(65))}
    assert engine.advance(t.state, at(10**6)).commit is False


def test_an_unless_during_a_retry_cooldown_abandons_the_clone() -> None:
    state = fire(retrying(), "stop", 30)
    assert state.instances["t_try#1"].status is Status.ABANDONED
    assert due_of(state.instances["t_try#1"]) is None
    assert engine.advance(state, at(10**6)).commit is False


def test_a_retry_cooldown_serves_no_delay_and_no_cascade_limit_again() -> None:
    """The run that asked to retry passed its ``delay`` and cascade depth already."""
    config = {"t_try": {"after": ["go"], "run": "x", "delay": "1h"}}
    state = engine.fire(configured(config), "go", {}, now=at(0)).state
    state = engine.advance(state, at(3600)).state
    state = engine.mark_running(state, "t_try#0", now=at(3600)).state
    state = engine.retry_self(state, "t_try#0", now=at(3600), max_retries=1, cooldown=10).state
    assert engine.advance(state, at(3610)).scheduled == ("t_try#1",)
    # Fed by a cascade (depth 1): a clock with a lower limit still runs the retry.
    config = {"t_up": {"after": ["go"], "run": "x"}, "t_try": {"after": ["t_up"], "run": "x"}}
    state = engine.fire(configured(config), "go", {}, now=at(0)).state
    state = engine.mark_running(state, "t_up#0", now=at(0)).state
    state = engine.finish(state, "t_up#0", {}, now=at(0)).state
    state = engine.mark_running(state, "t_try#0", now=at(0)).state
    state = engine.retry_self(state, "t_try#0", now=at(0), max_retries=1, cooldown=10).state
    assert state.instances["t_try#1"].metadata["cascadeDepth"] == 1
    assert engine.advance(state, at(10), max_cascade_depth=0).scheduled == ("t_try#1",)


def test_an_and_every_fire_during_a_retry_cooldown_makes_a_new_instance_as_before() -> None:
    config = {"t_try": {"after": ["go"], "andEvery": "tick", "run": "x"}}
    state = fire(fire(configured(config), "go", 0), "tick", 0)
    state = engine.mark_running(state, "t_try#0", now=at(0)).state
    state = engine.retry_self(state, "t_try#0", now=at(5), max_retries=3, cooldown=60).state
    t = engine.fire(state, "tick", {}, now=at(10))
    assert t.scheduled == ("t_try#2",)  # the clone (#1) keeps waiting for its timer
    assert t.state.instances["t_try#1"].status is Status.UNSTARTED


def test_a_retry_cooldown_is_not_moved_by_a_configuration_change() -> None:
    state = retrying()
    state = engine.update_configuration(
        state, {"t_try": {"after": ["go"], "run": "y", "delay": "2h"}}
    ).state
    assert due_of(state.instances["t_try#1"]) == Due(DueKind.TIMER, at(65))
    t = engine.advance(state, at(65))
    assert [(e.instance_name, e.run) for e in t.effects if isinstance(e, ScheduleInstance)] == [
        ("t_try#1", "y")  # the current configuration runs it; its delay is not served again
    ]


def test_explain_and_inspect_say_when_a_retry_runs() -> None:
    from triggers_core.cli._sessions import _timer, _timer_text
    from triggers_core.tools.explain import explain

    state = retrying()
    explained = explain(state, "t_try#1", now=at(35))
    assert explained.lines[-1] == (
        f"  retrying at {at(65).isoformat()} (a cooldown of 60 s): "
        f"scheduled in 30 s (at {at(65).isoformat()})"
    )
    assert explained.to_json()["retryCooldown"] == 60
    assert explained.to_json()["delayedUntil"] == at(65).isoformat()
    timer = _timer(explained, at(35))
    assert timer == {"kind": "retry", "at": at(65).isoformat(), "inSeconds": 30.0}
    assert _timer_text(timer).startswith(f"retrying at {at(65).isoformat()} (in ")
    late = explain(state, "t_try#1", now=at(70))
    assert late.lines[-1].endswith(
        "due to be scheduled at " + at(65).isoformat() + " (applied at the next tick of the clock)"
    )
    assert _timer_text(_timer(late, at(70))) == (
        f"retry cooldown ended at {at(65).isoformat()} (scheduled at the next tick)"
    )


# -- the due index and narrow scopes ----------------------------------------------------


def test_advance_of_one_instance_on_its_narrow_scope_equals_the_full_one() -> None:
    config = {
        **WINDOW,
        "t_other": {"after": ["late", "x"], "run": "noop"},
        "t_more": {"after": ["zz", "yy"], "run": "noop", "within": "1s"},
    }
    state = fire(fire(fire(configured(config), "x", 0), "ordered", 0), "zz", 0)
    full = engine.advance(state, at(86_400), only={"t_remind#0"})
    narrow = engine.advance(
        narrowed(state, timer_scope("t_remind#0")), at(86_400), only={"t_remind#0"}
    )
    assert statuses(narrow.state) == {
        n: s for n, s in statuses(full.state).items() if n in narrow.state.instances
    }
    assert narrow.changed == full.changed
    assert narrow.scheduled == full.scheduled
    assert full.state.instances["t_more#0"].status is Status.UNSTARTED  # not named: left


# -- tools ------------------------------------------------------------------------------


def test_explain_says_when_the_window_closes_and_until_when_it_is_delayed() -> None:
    from triggers_core.tools.explain import explain
    from triggers_core.tools.render import to_dot

    state = fire(configured({**WINDOW, **DELAYED}), "ordered", 0)
    state = fire(state, "signed", 0)
    lines = explain(state, "t_remind#0", now=at(86_400 - 3 * 3600 - 12 * 60)).lines
    assert lines[-1] == (f"  window closes in 3 h 12 min (at {at(86_400).isoformat()})")
    lines = explain(state, "t_send#0", now=at(60)).lines
    assert lines[-1] == (
        f"  delayed until {at(3600).isoformat()}: scheduled in 59 min (at {at(3600).isoformat()})"
    )
    expired = engine.advance(state, at(86_400)).state
    explained = explain(expired, "t_remind#0", now=at(90_000))
    assert explained.lines[0].startswith("t_remind#0 expired at ")
    assert "before 'paid' fired" in explained.lines[0]
    assert explained.lines[1] == "  its expiry fired 'late'"
    assert explained.to_json()["deadline"] == at(86_400).isoformat()
    dot = to_dot(expired.tasks, instances=[expired.instances["t_remind#0"]])
    assert "#a5460a" in dot  # the colour of expired
