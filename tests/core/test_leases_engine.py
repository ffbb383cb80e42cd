"""Leases in the pure engine: starting under a lease, owner checks, take-over, redispatch,
and the due-index entries every transition reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from triggers_core import engine
from triggers_core.engine.effects import InstanceReplayed, ScheduleInstance
from triggers_core.engine.leases import (
    WORKER_LOST_TYPE,
    Due,
    DueKind,
    Lease,
    LostPolicy,
    due_of,
    run_key,
)
from triggers_core.engine.state import SessionState, Status
from triggers_core.errors import InvalidTransitionError

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
CONFIG = {"t_a": {"after": ["go"], "run": "A"}, "t_b": {"after": ["t_a"], "run": "B"}}


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def lease(owner: str = "run-1", seconds: float = 30, start: float = 0) -> Lease:
    return Lease(owner, at(start + seconds), seconds, {"host": "h1", "pid": 42})


def scheduled() -> SessionState:
    state = engine.update_configuration(SessionState(), CONFIG).state
    return engine.fire(state, "go", {"x": 1}, now=NOW).state


def running(owner: str = "run-1", **kwargs: Any) -> SessionState:
    return engine.mark_running(scheduled(), "t_a#0", now=at(1), lease=lease(owner, **kwargs)).state


def test_scheduling_reports_a_dispatch_entry() -> None:
    state = engine.update_configuration(SessionState(), CONFIG).state
    t = engine.fire(state, "go", now=NOW)
    assert t.due == {"t_a#0": Due(DueKind.DISPATCH, NOW)}
    assert t.changes.due == t.due


def test_starting_under_a_lease_records_the_run_and_moves_the_entry() -> None:
    t = engine.mark_running(scheduled(), "t_a#0", now=at(1), lease=lease(start=1))
    instance = t.state.instances["t_a#0"]
    assert instance.metadata["owner"] == "run-1"
    assert instance.metadata["worker"] == {"host": "h1", "pid": 42}
    assert instance.metadata["leaseExpires"] == at(31).isoformat()
    assert instance.metadata["leaseSeconds"] == 30
    assert t.due == {"t_a#0": Due(DueKind.LEASE, at(31), "run-1")}


def test_starting_without_a_lease_leaves_no_entry() -> None:
    t = engine.mark_running(scheduled(), "t_a#0", now=at(1))
    assert t.due == {"t_a#0": None}
    assert due_of(t.state.instances["t_a#0"]) is None


def test_finishing_removes_the_entry_and_the_cascade_adds_one() -> None:
    t = engine.finish(running(), "t_a#0", {"r": 1}, now=at(2), owner="run-1")
    assert t.state.instances["t_a#0"].status is Status.FINISHED
    assert t.due == {"t_a#0": None, "t_b#0": Due(DueKind.DISPATCH, at(2))}


def test_a_change_that_keeps_the_entry_reports_nothing() -> None:
    t = engine.update_metadata(running(), "t_a#0", {"note": "x"}, now=at(3))
    assert t.due == {}


@pytest.mark.parametrize("operation", ["finish", "fail", "skip_self", "retry_self"])
def test_an_outcome_from_another_run_is_refused(operation: str) -> None:
    state = running("run-2")
    calls = {
        "finish": lambda: engine.finish(state, "t_a#0", {}, now=at(2), owner="run-1"),
        "fail": lambda: engine.fail(
            state, "t_a#0", now=at(2), exception_type="x.E", exception_info="", owner="run-1"
        ),
        "skip_self": lambda: engine.skip_self(state, "t_a#0", now=at(2), owner="run-1"),
        "retry_self": lambda: engine.retry_self(
            state, "t_a#0", now=at(2), max_retries=3, owner="run-1"
        ),
    }
    with pytest.raises(InvalidTransitionError, match="taken over"):
        calls[operation]()


def test_take_over_fails_the_lost_run_and_replays_it_with_the_same_run_key() -> None:
    t = engine.take_over(running(), "t_a#0", now=at(40), owner="run-1")
    lost = t.state.instances["t_a#0"]
    clone = t.state.instances["t_a#1"]
    assert lost.status is Status.REPLAYED
    assert lost.metadata["exceptionType"] == WORKER_LOST_TYPE
    assert "h1" in lost.metadata["exceptionInfo"]
    assert "42" in lost.metadata["exceptionInfo"]
    assert clone.status is Status.SCHEDULED
    assert clone.metadata["lostRetries"] == 1
    assert run_key(clone) == run_key(lost) == "t_a#0"
    assert clone.kwargs == lost.kwargs
    assert InstanceReplayed("t_a#0", "t_a#1") in t.effects
    assert [e.instance_name for e in t.effects if isinstance(e, ScheduleInstance)] == ["t_a#1"]
    assert t.due == {"t_a#0": None, "t_a#1": Due(DueKind.DISPATCH, at(40))}


def test_take_over_with_the_fail_policy_leaves_it_failed() -> None:
    t = engine.take_over(running(), "t_a#0", now=at(40), owner="run-1", policy=LostPolicy(False))
    assert t.state.instances["t_a#0"].status is Status.FAILED
    assert "t_a#1" not in t.state.instances
    assert t.due == {"t_a#0": None}


def test_a_chain_lost_max_lost_retries_times_stays_failed() -> None:
    state = running()
    name, owner = "t_a#0", "run-1"
    for number in range(1, 4):
        state = engine.take_over(state, name, now=at(40 * number), owner=owner).state
        name, owner = f"t_a#{number}", f"run-{number + 1}"
        state = engine.mark_running(state, name, now=at(40 * number + 1), lease=lease(owner)).state
    final = engine.take_over(state, name, now=at(500), owner=owner).state.instances[name]
    assert final.status is Status.FAILED
    assert "max_lost_retries=3" in final.metadata["exceptionInfo"]
    assert run_key(final) == "t_a#0"


def test_take_over_refuses_another_run_or_a_resolved_instance() -> None:
    with pytest.raises(InvalidTransitionError, match="another run"):
        engine.take_over(running("run-2"), "t_a#0", now=at(40), owner="run-1")
    done = engine.finish(running(), "t_a#0", {}, now=at(2), owner="run-1").state
    with pytest.raises(InvalidTransitionError, match="finished"):
        engine.take_over(done, "t_a#0", now=at(40), owner="run-1")


def test_redispatch_once_per_sighting() -> None:
    state = scheduled()
    t = engine.redispatch(state, "t_a#0", now=at(70), since=NOW)
    again = t.state.instances["t_a#0"]
    assert again.status is Status.SCHEDULED
    assert again.metadata["dispatches"] == 2
    assert [e.instance_name for e in t.effects if isinstance(e, ScheduleInstance)] == ["t_a#0"]
    assert t.due == {"t_a#0": Due(DueKind.DISPATCH, at(70))}
    with pytest.raises(InvalidTransitionError, match="dispatched again"):
        engine.redispatch(t.state, "t_a#0", now=at(71), since=NOW)
    started = engine.mark_running(state, "t_a#0", now=at(5)).state
    with pytest.raises(InvalidTransitionError, match="running"):
        engine.redispatch(started, "t_a#0", now=at(70), since=NOW)


def test_a_retry_cooldown_is_a_timer_entry_then_a_dispatch_entry() -> None:
    t = engine.retry_self(running(), "t_a#0", now=at(2), max_retries=3, cooldown=100, owner="run-1")
    clone = t.state.instances["t_a#1"]
    assert due_of(clone) == Due(DueKind.TIMER, at(102))
    assert t.due["t_a#1"] == Due(DueKind.TIMER, at(102))
    fired = engine.advance(t.state, at(103))
    # Scheduled when its timer fired: its message counts as lost a dispatch lease later
    # (the cooldown is behind it, not added again).
    assert fired.due == {"t_a#1": Due(DueKind.DISPATCH, at(103))}
    assert "cooldown" not in fired.state.instances["t_a#1"].metadata


def test_a_retry_scheduled_with_a_countdown_before_cooldowns_were_timers_still_runs() -> None:
    # Stored by an earlier version: scheduled at once, its message published with a
    # countdown, the cooldown in its metadata. The due index waits for the cooldown
    # before counting the message as lost; the sweeper then dispatches it again, once.
    t = engine.retry_self(running(), "t_a#0", now=at(2), max_retries=3, owner="run-1")
    clone = t.state.instances["t_a#1"]
    old = attrs.evolve(clone, metadata={**clone.metadata, "cooldown": 100})
    state = attrs.evolve(t.state, instances={**t.state.instances, "t_a#1": old})
    assert due_of(old) == Due(DueKind.DISPATCH, at(102))
    again = engine.redispatch(state, "t_a#1", now=at(200), since=at(102))
    assert again.scheduled == ("t_a#1",)
    assert "cooldown" not in again.state.instances["t_a#1"].metadata
    assert due_of(again.state.instances["t_a#1"]) == Due(DueKind.DISPATCH, at(200))
    started = engine.mark_running(state, "t_a#1", now=at(102), lease=lease(start=102))
    assert started.state.instances["t_a#1"].status is Status.RUNNING


def test_fail_by_operator() -> None:
    t = engine.fail_by_operator(running(), "t_a#0", now=at(5), reason="stuck", actor="alice")
    failed = t.state.instances["t_a#0"]
    assert failed.status is Status.FAILED
    assert failed.metadata["exceptionType"] == "triggers_core.errors.FailedByOperator"
    assert failed.metadata["exceptionInfo"] == "stuck"
    assert failed.metadata["actor"] == "alice"
    assert t.due == {"t_a#0": None}
    with pytest.raises(InvalidTransitionError, match="failed already"):
        engine.fail_by_operator(t.state, "t_a#0", now=at(6), reason="again")
    with pytest.raises(ValueError, match="reason"):
        engine.fail_by_operator(running(), "t_a#0", now=at(6), reason=" ")
