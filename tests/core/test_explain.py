"""Explain and what-if, asserted exactly for the questionnaire workflow at several points."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from questionnaire import NO_EMAIL, QUESTIONNAIRE, T0

from triggers_core import SessionState, Status
from triggers_core import engine as pure
from triggers_core.testing.simulate import ReplayFailed, run_simulation
from triggers_core.testing.strategies import workflows
from triggers_core.tools.explain import (
    FailureInfo,
    InstanceExplanation,
    TaskExplanation,
    UnknownNameError,
    Waiting,
    WaitingGroup,
    explain,
    format_age,
    summary_line,
    what_if,
)
from triggers_core.tools.requirements import lack_to_json


def advance(state: SessionState | None, *steps: Any, **kwargs: Any) -> SessionState:
    return run_simulation(QUESTIONNAIRE, steps, now=T0, state=state, **kwargs).state


@pytest.fixture
def started() -> SessionState:
    """startSession fired: every task that uses it has an instance waiting."""
    return advance(None, ("startSession", {"respondent": "r-42"}))


@pytest.fixture
def paged(started: SessionState) -> SessionState:
    """...then the observations and one page: only the finalization is missing."""
    return advance(started, ("observationsReceived", {"document_id": 17}), "pageReceived")


@pytest.fixture
def finalized(paged: SessionState) -> SessionState:
    """...then finalized: the score ran, the report failed, the reminder was abandoned."""
    return advance(paged, "sessionFinalized", results=NO_EMAIL)


def test_after_the_start_each_instance_says_what_it_waits_for(started: SessionState) -> None:
    e = explain(started, "t_createApplicant#0", now=T0 + timedelta(hours=1))
    assert isinstance(e, InstanceExplanation)
    assert (e.status, e.ready, e.unless_fired, e.unless_missing) == (
        Status.UNSTARTED,
        False,
        (),
        (),
    )
    assert e.waiting_for == (Waiting("observationsReceived", "after", False),)
    assert e.age == timedelta(hours=1)
    assert not e.stale
    assert e.lines == (
        "t_createApplicant#0 is not ready: it waits for",
        "  - 'observationsReceived': never fired in this session",
    )
    page = explain(started, "t_processPage#0")
    assert page.lines == (
        "t_processPage#0 is not ready: it waits for",
        "  - 'pageReceived' (andEvery): never fired in this session",
        "  unless: it is abandoned if 'sessionAbandoned' fires before it runs",
    )


def test_a_task_without_instances_says_which_triggers_create_one(started: SessionState) -> None:
    e = explain(started, "t_computeScore")
    assert e == TaskExplanation(
        "t_computeScore",
        True,
        (),
        (
            "t_computeScore has no instance yet: an instance is created when one of its "
            "triggers fires (after: t_createApplicant, sessionFinalized)",
        ),
    )


def test_a_cascade_trigger_names_where_its_task_is(started: SessionState) -> None:
    # t_computeScore#0 exists once sessionFinalized fired, before t_createApplicant ran.
    state = advance(started, "sessionFinalized")
    e = explain(state, "t_computeScore#0")
    assert isinstance(e, InstanceExplanation)
    assert e.waiting_for == (
        Waiting(
            "t_createApplicant",
            "after",
            False,
            "t_createApplicant",
            (("t_createApplicant#0", Status.UNSTARTED),),
        ),
    )
    assert e.lines[1] == (
        "  - 't_createApplicant': the cascade of t_createApplicant (t_createApplicant#0 unstarted)"
    )


def test_before_finalizing(paged: SessionState) -> None:
    score = explain(paged, "t_computeScore")
    assert isinstance(score, TaskExplanation)
    assert score.lines == (
        "t_computeScore#0 is not ready: it waits for",
        "  - 'sessionFinalized': never fired in this session",
    )
    created = explain(paged, "t_createApplicant#0")
    assert created.lines == (
        "t_createApplicant#0 finished at 2024-05-01T12:00:00.000002+00:00; "
        "its result fired 't_createApplicant'",
    )


def test_what_if_finalized_now(paged: SessionState) -> None:
    w = what_if(paged, "sessionFinalized", {"finalized_by": "respondent"}, now=T0, results=NO_EMAIL)
    assert (w.created, w.scheduled, w.abandoned, w.recorded) == (
        (),
        ("t_computeScore#0",),
        ("t_sendReminder#0",),
        (),
    )
    assert w.ran == ("t_computeScore#0", "t_sendReport#0")
    assert w.fired == ("sessionFinalized", "t_computeScore")
    assert w.outcome == {
        "t_computeScore#0": Status.FINISHED,
        "t_sendReminder#0": Status.ABANDONED,
        "t_sendReport#0": Status.FAILED,
    }
    assert w.lines == (
        "firing 'sessionFinalized' now would:",
        "  create none",
        "  schedule t_computeScore#0",
        "  abandon t_sendReminder#0",
        "then, if every scheduled instance finished with {} (an idealised runner):",
        "  ran in order: t_computeScore#0, t_sendReport#0",
        "  cascades fired: t_computeScore",
        "  end: t_computeScore#0 finished, t_sendReminder#0 abandoned, t_sendReport#0 failed",
    )
    # Nothing was stored: the state is unchanged, and explaining it still says "waits".
    assert explain(paged, "t_computeScore#0").lines[0] == (
        "t_computeScore#0 is not ready: it waits for"
    )


def test_what_if_another_page(paged: SessionState) -> None:
    w = what_if(paged, "pageReceived", now=T0)
    assert (w.created, w.scheduled, w.abandoned) == (
        ("t_processPage#1",),
        ("t_processPage#1",),
        (),
    )
    assert w.ran == ("t_processPage#1",)
    assert w.outcome == {"t_processPage#1": Status.FINISHED}
    assert w.to_json()["cascade"] == {
        "ran": ["t_processPage#1"],
        "fired": ["pageReceived", "t_processPage"],
        "outcome": {"t_processPage#1": "finished"},
    }


def test_what_if_a_trigger_that_only_records(started: SessionState) -> None:
    w = what_if(started, "t_createApplicant", now=T0)
    assert (w.created, w.scheduled, w.recorded, w.ran) == (("t_computeScore#0",), (), (), ())
    assert w.lines[-1] == "  abandon none"


def test_after_finalizing(finalized: SessionState) -> None:
    report = explain(finalized, "t_sendReport#0")
    assert isinstance(report, InstanceExplanation)
    assert report.failure == FailureInfo(
        "builtins.LookupError",
        "builtins.LookupError: no e-mail address (simulated)",
        0,
        "ERROR",
        datetime(2024, 5, 1, 12, 0, 0, 4, tzinfo=UTC),
    )
    assert report.lines == (
        "t_sendReport#0 failed at 2024-05-01T12:00:00.000004+00:00: "
        "builtins.LookupError: no e-mail address (simulated)",
        "  exception type builtins.LookupError, retries 0, log level ERROR; replay it or skip it",
    )
    reminder = explain(finalized, "t_sendReminder#0")
    assert isinstance(reminder, InstanceExplanation)
    assert reminder.unless_fired == ("sessionFinalized",)
    assert reminder.lines == (
        "t_sendReminder#0 was abandoned at 2024-05-01T12:00:00+00:00: every unless "
        "trigger fired ('sessionFinalized')",
    )


def test_replays_show_their_lineage(finalized: SessionState) -> None:
    state = advance(finalized, ReplayFailed("t_sendReport#0"), results=NO_EMAIL)
    task = explain(state, "t_sendReport")
    assert isinstance(task, TaskExplanation)
    first, second = task.instances
    assert (first.status, first.replayed_as) == (Status.REPLAYED, "t_sendReport#1")
    assert (second.parent, second.depth, second.status) == ("t_sendReport#0", 1, Status.FAILED)
    assert (
        task.lines[0] == "t_sendReport#0 failed and was replayed as t_sendReport#1, which is failed"
    )
    assert task.lines[-1] == "  a replay of t_sendReport#0 (replay depth 1)"


def test_stale_instances(paged: SessionState) -> None:
    # Fired, but the runner never started t_computeScore#0 (its message was lost).
    state = pure.fire(paged, "sessionFinalized", now=T0).state
    e = explain(
        state, "t_computeScore#0", now=T0 + timedelta(hours=2), stale_after=timedelta(hours=1)
    )
    assert isinstance(e, InstanceExplanation)
    assert (e.status, e.age, e.stale) == (Status.SCHEDULED, timedelta(hours=2), True)
    assert e.lines == (
        "t_computeScore#0 is scheduled since 2024-05-01T12:00:00+00:00 (2h ago)",
        "  stale: scheduled for longer than 1h (a lost message or a killed worker?); "
        "set it failed, then replay it",
    )
    fresh = explain(
        state, "t_computeScore#0", now=T0 + timedelta(minutes=5), stale_after=timedelta(hours=1)
    )
    assert isinstance(fresh, InstanceExplanation)
    assert not fresh.stale
    assert len(fresh.lines) == 1


def test_triggers_fired_before_the_task_was_configured() -> None:
    state = advance(None, "startSession")
    late = pure.update_configuration(
        state, {"t_late": {"after": ["startSession", "x"], "run": "r"}}
    )
    e = explain(late.state, "t_late")
    assert e.lines[-1] == (
        "'startSession' fired in this session before t_late was configured; a configuration "
        "change never re-applies earlier triggers, so fire them again"
    )


def test_a_complete_unstarted_instance_is_called_ready(started: SessionState) -> None:
    forced = pure.update_status(started, "t_createApplicant#0", "unstarted", now=T0).state
    relaxed = pure.update_configuration(
        forced, {"t_createApplicant": {"after": ["startSession"], "run": "app.Create"}}
    ).state
    e = explain(relaxed, "t_createApplicant#0")
    assert isinstance(e, InstanceExplanation)
    assert e.ready is True
    assert "the next fire that reaches t_createApplicant schedules it" in e.lines[0]


def test_unknown_names(started: SessionState) -> None:
    with pytest.raises(UnknownNameError, match="no task or instance named 't_nope'"):
        explain(started, "t_nope")
    with pytest.raises(UnknownNameError, match="did you mean 't_processPage#0'"):
        explain(started, "t_processPage#9")


def test_json_forms(finalized: SessionState) -> None:
    data = explain(finalized, "t_sendReport", now=T0 + timedelta(minutes=1)).to_json()
    assert data["instances"][0]["failure"] == {
        "exceptionType": "builtins.LookupError",
        "message": "builtins.LookupError: no e-mail address (simulated)",
        "retries": 0,
        "logLevel": "ERROR",
        "failedAt": "2024-05-01T12:00:00.000004+00:00",
    }
    assert data["instances"][0]["ageSeconds"] == 60 - 0.000004


def test_summary_lines_and_ages() -> None:
    traceback = (
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
        "    boom()\nRuntimeError: it broke\n"
    )
    assert summary_line(traceback) == "RuntimeError: it broke"
    assert summary_line("first\nsecond") == "first"
    assert summary_line("") == ""
    assert [format_age(timedelta(seconds=s)) for s in (0, 59, 61, 7200, 7260, 90000, -5)] == [
        "0s",
        "59s",
        "1m 1s",
        "2h",
        "2h 1m",
        "1d 1h",
        "0s",
    ]


# -- condition groups ---------------------------------------------------------------------

GROUPED: dict[str, Any] = {
    "t_check": {"after": ["start", "x"], "run": "r"},
    "t_notify": {"after": ["start", {"anyOf": ["email", "sms"]}], "run": "r"},
    "t_review": {
        "after": [{"atLeast": 2, "of": ["r1", "r2", "t_check"]}],
        "unless": ["closed", {"anyOf": ["cancel", "withdraw"]}],
        "run": "r",
    },
    "t_nested": {"after": [{"anyOf": ["a", {"atLeast": 2, "of": ["b", "c", "d"]}]}], "run": "r"},
}


def grouped(*steps: Any) -> SessionState:
    return run_simulation(GROUPED, steps, now=T0).state


def test_a_group_says_how_many_more_of_which_members() -> None:
    state = grouped("start", "r1", "b", "closed")
    assert explain(state, "t_notify#0").lines == (
        "t_notify#0 is not ready: it waits for",
        "  - any one of: 'email', 'sms'",
        "    - 'email': never fired in this session",
        "    - 'sms': never fired in this session",
    )
    review = explain(state, "t_review#0")
    assert isinstance(review, InstanceExplanation)
    assert review.lines == (
        "t_review#0 is not ready: it waits for",
        "  - one more of: 'r2', 't_check'",
        "    - 'r2': never fired in this session",
        "    - 't_check': the cascade of t_check (t_check#0 unstarted)",
        "  unless: 'closed' fired; it is abandoned if any one of ('cancel', 'withdraw') fires "
        "too before it runs",
    )
    (group,) = review.waiting_for
    assert isinstance(group, WaitingGroup)
    assert (group.path, group.missing.need, group.missing.satisfied) == ("t_review.after[0]", 1, 1)
    assert group.short() == "one more of (r2, t_check)"
    assert review.unless_fired == ("closed",)
    assert [lack_to_json(m) for m in review.unless_missing] == [
        {
            "path": "t_review.unless[1]",
            "need": 1,
            "satisfied": 0,
            "missing": ["cancel", "withdraw"],
            "group": {"anyOf": ["cancel", "withdraw"]},
        }
    ]


def test_nested_groups_read_as_nested_lists() -> None:
    e = explain(grouped("b"), "t_nested#0")
    assert isinstance(e, InstanceExplanation)
    assert e.lines == (
        "t_nested#0 is not ready: it waits for",
        "  - any one of: 'a', one more of ('c', 'd')",
        "    - 'a': never fired in this session",
        "    - one more of: 'c', 'd'",
        "      - 'c': never fired in this session",
        "      - 'd': never fired in this session",
    )
    assert e.to_json()["waitingFor"][0]["members"][1] == {
        "path": "t_nested.after[0].anyOf[1]",
        "need": 1,
        "satisfied": 1,
        "members": [
            Waiting("c", "after", False).to_json(),
            Waiting("d", "after", False).to_json(),
        ],
        "group": {"atLeast": 2, "of": ["b", "c", "d"]},
    }
    untouched = explain(grouped("x"), "t_review")
    assert untouched.lines == (
        "t_review has no instance yet: an instance is created when one of its triggers fires "
        "(after: 2 of (r1, r2, t_check); unless: closed, any one of (cancel, withdraw))",
    )


def test_a_group_of_two_or_more_needed_members() -> None:
    config = {"t_a": {"after": ["go", {"atLeast": 2, "of": ["c", "d", "e"]}], "run": "r"}}
    fresh = run_simulation(config, ["go"], now=T0).state
    assert explain(fresh, "t_a#0").lines[1] == "  - 2 of: 'c', 'd', 'e'"
    begun = run_simulation({}, ["c"], now=T0, state=fresh).state
    assert explain(begun, "t_a#0").lines[1] == "  - one more of: 'd', 'e'"
    config = {"t_b": {"after": [{"atLeast": 3, "of": ["c", "d", "e", "f"]}], "run": "r"}}
    assert explain(run_simulation(config, ["c"], now=T0).state, "t_b#0").lines[1] == (
        "  - 2 more of: 'd', 'e', 'f'"
    )


def test_an_unless_group_that_is_met_or_was_met() -> None:
    pending = pure.update_status(
        grouped("r1", "closed", "withdraw"), "t_review#0", "unstarted", now=T0
    )
    abandoned = grouped("r1", "closed", "withdraw")
    e = explain(abandoned, "t_review#0")
    assert e.lines == (
        "t_review#0 was abandoned at 2024-05-01T12:00:00.000002+00:00: its unless condition "
        "was met ('closed', 'withdraw' fired)",
    )
    assert explain(pending.state, "t_review#0").lines == (
        "t_review#0 is unstarted, but its unless condition is met: the next fire that reaches "
        "t_review abandons it",
    )
    waiting = explain(grouped("r1"), "t_review#0")
    assert waiting.lines[-1] == (
        "  unless: it is abandoned if 'closed' and any one of ('cancel', 'withdraw') fire "
        "before it runs"
    )


@settings(max_examples=60, deadline=None)
@given(workflows(groups=True, max_tasks=3))
def test_every_unstarted_instance_is_explained_by_what_it_still_lacks(
    workflow: tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]],
) -> None:
    """Property: explain calls an unstarted instance ready exactly when its task would run
    it, and lists one line per entry (group members nested) it still waits for."""
    config, triggers = workflow
    state = run_simulation(config, triggers, now=T0).state
    for name, instance in state.instances.items():
        e = explain(state, name)
        assert isinstance(e, InstanceExplanation)
        if instance.status is not Status.UNSTARTED:
            assert e.ready is None
            continue
        task = state.tasks[instance.task_name]
        assert e.ready is task.is_ready(instance.kwargs)
        assert not task.is_abandoned_by(instance.unless_fired)  # the engine abandoned it
        if not e.ready:
            assert e.lines[0] == f"{name} is not ready: it waits for"
            assert all(line.startswith("  ") for line in e.lines[1:])
