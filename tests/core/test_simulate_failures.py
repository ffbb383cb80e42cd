"""``simulate`` models failing tasks, and operators replaying or skipping them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triggers_core import InvalidTransitionError, TriggerTask, with_context
from triggers_core.engine.state import SessionState, Status
from triggers_core.testing import (
    Advance,
    Failure,
    ReplayFailed,
    SkipFailed,
    run_simulation,
    simulate,
)
from triggers_core.testing.strategies import task_outcomes, workflows

CHAIN = {"t_a": {"after": ["x"], "run": "A"}, "t_b": {"after": ["t_a"], "run": "B"}}


def statuses(state: SessionState) -> dict[str, str]:
    return {name: i.status.value for name, i in sorted(state.instances.items())}


def test_a_failure_stops_the_cascade_and_records_the_details() -> None:
    failure = Failure("myapp.errors.RemoteError", "model server down", {"host": "m1"})
    state = simulate(CHAIN, ["x"], results={"t_a": failure})
    assert statuses(state) == {"t_a#0": "failed"}
    metadata = state.instances["t_a#0"].metadata
    assert metadata["exceptionType"] == "myapp.errors.RemoteError"
    assert metadata["exceptionContext"] == {"host": "m1"}
    assert "model server down" in metadata["exceptionInfo"]


def test_instance_names_override_task_names_so_a_replay_can_succeed() -> None:
    sim = run_simulation(
        CHAIN,
        [("x", {"n": 1}), ReplayFailed("t_a#0")],
        results={"t_a#0": Failure(), "t_a": {"score": 3}},
    )
    assert statuses(sim.state) == {
        "t_a#0": "replayed",
        "t_a#1": "finished",
        "t_b#0": "finished",
    }
    assert sim.ran == ("t_a#0", "t_a#1", "t_b#0")
    clone = sim.state.instances["t_a#1"]
    assert (clone.metadata["parent"], clone.metadata["depth"]) == ("t_a#0", 1)
    assert clone.kwargs == {"x": {"n": 1}}
    assert sim.state.instances["t_b#0"].kwargs == {"t_a": {"score": 3}}


def test_a_replay_with_replacement_kwargs() -> None:
    state = simulate(
        CHAIN,
        ["x", ReplayFailed("t_a#0", {"x": {"fixed": True}})],
        results=lambda name, kwargs: Failure() if name == "t_a#0" else {"saw": dict(kwargs)},
    )
    assert state.instances["t_a#1"].metadata["result"] == {"saw": {"x": {"fixed": True}}}


def test_skipping_a_failed_instance_with_and_without_cascade() -> None:
    fail_first = {"t_a": Failure()}
    state = simulate(CHAIN, ["x", SkipFailed("t_a#0")], results=fail_first)
    assert statuses(state) == {"t_a#0": "skipped"}

    state = simulate(
        CHAIN, ["x", SkipFailed("t_a#0", cascade=True, result={"score": 0})], results=fail_first
    )
    assert statuses(state) == {"t_a#0": "skipped", "t_b#0": "finished"}
    assert state.instances["t_b#0"].kwargs == {"t_a": {"score": 0}}


def test_a_result_function_raising_fails_like_a_task() -> None:
    def results(name: str, kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
        raise with_context(ValueError(f"{name}: bad row"), {"row": 3})

    state = simulate(CHAIN, ["x"], results=results)
    metadata = state.instances["t_a#0"].metadata
    assert metadata["exceptionType"] == "builtins.ValueError"
    assert metadata["exceptionContext"] == {"row": 3}
    assert metadata["exceptionInfo"].startswith("Traceback (most recent call last):")
    assert metadata["exceptionInfo"].rstrip().endswith("ValueError: t_a#0: bad row")


class _Task(TriggerTask):  # no name: not registered, only its skip()/retry() are used
    pass


def test_a_result_function_can_skip_or_retry_like_a_task() -> None:
    task = _Task()

    def results(name: str, kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
        if name.startswith("t_a#"):
            task.retry(TimeoutError("slow"), metadata={"attempt": name})
        task.skip({"why": "nothing to do"})

    state = simulate(
        {**CHAIN, "t_c": {"after": ["y"], "run": "C"}}, ["x", "y"], results=results, max_retries=2
    )
    assert statuses(state) == {
        "t_a#0": "replayed",
        "t_a#1": "replayed",
        "t_a#2": "failed",
        "t_c#0": "skipped",
    }
    assert state.instances["t_a#0"].metadata["exceptionType"] == "builtins.TimeoutError"
    assert state.instances["t_a#2"].metadata["exceptionType"] == (
        "triggers_core.errors.MaxRetriesExceeded"
    )
    assert state.instances["t_c#0"].metadata["why"] == "nothing to do"


def test_a_retry_cooldown_waits_for_an_advance_step() -> None:
    task = _Task()

    def results(name: str, kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
        if name == "t_a#0":
            task.retry(cooldown=90)
        return {}

    config = {"t_a": {"after": ["x"], "run": "A"}}
    waiting = run_simulation(config, ["x"], results=results)
    assert waiting.ran == ("t_a#0",)
    assert statuses(waiting.state) == {"t_a#0": "replayed", "t_a#1": "unstarted"}
    assert run_simulation(config, ["x", Advance("89s")], results=results).ran == ("t_a#0",)
    done = run_simulation(config, ["x", Advance("90s")], results=results)
    assert done.ran == ("t_a#0", "t_a#1")
    assert statuses(done.state) == {"t_a#0": "replayed", "t_a#1": "finished"}


def test_replaying_an_instance_that_did_not_fail_is_refused() -> None:
    with pytest.raises(InvalidTransitionError, match="cannot replay instance 't_a#0'"):
        simulate(CHAIN, ["x", ReplayFailed("t_a#0")])


@settings(max_examples=100, deadline=None)
@given(st.data(), workflows(max_tasks=4, and_every=False, unless=False))
def test_failing_then_replaying_everything_ends_like_a_run_without_failures(
    data: st.DataObject, workflow: tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]
) -> None:
    """Property: first attempts fail as drawn; replaying each failure until none is left
    finishes the same tasks as a run in which nothing failed."""
    config, triggers = workflow
    outcomes = data.draw(task_outcomes(config, failure_rate=0.5))

    def first_attempt_as_drawn(name: str, kwargs: Mapping[str, Any]) -> Any:
        outcome = outcomes[name.rsplit("#", 1)[0]]
        return outcome if name.endswith("#0") else {}

    clean = simulate(config, triggers)
    sim = run_simulation(config, triggers, results=first_attempt_as_drawn)
    rounds = 0
    while failed := [n for n, i in sim.state.instances.items() if i.status is Status.FAILED]:
        rounds += 1
        assert rounds <= len(config), "replays must converge"
        steps = [ReplayFailed(name) for name in sorted(failed)]
        sim = run_simulation(config, steps, results=first_attempt_as_drawn, state=sim.state)

    def finished_tasks(state: SessionState) -> set[str]:
        return {i.task_name for i in state.instances.values() if i.status is Status.FINISHED}

    assert finished_tasks(sim.state) == finished_tasks(clean)
