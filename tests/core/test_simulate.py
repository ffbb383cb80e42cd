"""The pure simulator shipped in triggers_core.testing.simulate."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings

from triggers_core.engine.config import parse_configuration
from triggers_core.engine.effects import ScheduleInstance, TriggerFired
from triggers_core.engine.state import SessionState, Status
from triggers_core.errors import ConfigurationError, InvalidKwargsError
from triggers_core.testing.simulate import (
    DEFAULT_START,
    SimulationLimitExceeded,
    run_simulation,
    simulate,
)
from triggers_core.testing.strategies import session_states, triggers_used, workflows

CHAIN = {"t_a": {"after": ["x"], "run": "A"}, "t_b": {"after": ["t_a", "y"], "run": "B"}}


def statuses(state: SessionState) -> dict[str, str]:
    return {name: i.status.value for name, i in sorted(state.instances.items())}


def test_cascade_carries_the_result_to_the_next_task() -> None:
    state = simulate(CHAIN, [("x", {"n": 1}), ("y", {})], results={"t_a": {"score": 3}})

    assert statuses(state) == {"t_a#0": "finished", "t_b#0": "finished"}
    assert state.instances["t_a#0"].metadata["result"] == {"score": 3}
    assert state.instances["t_b#0"].kwargs == {"t_a": {"score": 3}, "y": {}}
    assert state.instances["t_b#0"].metadata["result"] == {}


def test_unfinished_workflow_leaves_instances_unstarted() -> None:
    state = simulate(CHAIN, ["x"])

    assert statuses(state) == {"t_a#0": "finished", "t_b#0": "unstarted"}


def test_cascades_run_breadth_first_and_every_step_is_reported() -> None:
    config = {
        "t_a": {"after": ["x"], "run": "A"},
        "t_b": {"after": ["x"], "run": "B"},
        "t_c": {"after": ["t_a"], "run": "C"},
        "t_d": {"after": ["t_b"], "run": "D"},
    }

    sim = run_simulation(config, [("x", {}), ("z", {})])

    assert sim.ran == ("t_a#0", "t_b#0", "t_c#0", "t_d#0")
    assert sim.scheduled == sim.ran
    assert sim.fired == ("x", "t_a", "t_b", "t_c", "t_d", "z")
    assert sim.effects[:3] == (
        ScheduleInstance("t_a#0", "t_a", "A", None, {"x": {}}),
        ScheduleInstance("t_b#0", "t_b", "B", None, {"x": {}}),
        TriggerFired("x", ("t_a#0", "t_b#0")),
    )


def test_result_function_receives_instance_name_and_merged_kwargs() -> None:
    config = {"t_a": {"after": ["x"], "andEvery": "e", "run": "A", "withParams": {"x": {"p": 1}}}}
    calls: list[tuple[str, dict[str, Any]]] = []

    def result(name: str, kwargs: Mapping[str, Any]) -> Mapping[str, Any] | None:
        calls.append((name, dict(kwargs)))
        return {"n": len(calls)} if name.endswith("#1") else None

    state = simulate(config, [("x", {"q": 2}), ("e", {"i": 0}), ("e", {"i": 1})], results=result)

    assert calls == [
        ("t_a#0", {"x": {"p": 1, "q": 2}, "e": {"i": 0}}),
        ("t_a#1", {"x": {"p": 1, "q": 2}, "e": {"i": 1}}),
    ]
    assert state.instances["t_a#0"].metadata["result"] == {}
    assert state.instances["t_a#1"].metadata["result"] == {"n": 2}


def test_clock_starts_at_now_and_advances_a_microsecond_per_step() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)

    state = simulate({"t_a": {"after": ["x"], "run": "A"}}, ["x"], now=start)

    timestamps = state.instances["t_a#0"].metadata["timestamps"]
    tick = timedelta(microseconds=1)
    assert timestamps == {
        "unstarted": start.isoformat(),
        "scheduled": start.isoformat(),
        "running": (start + tick).isoformat(),
        "finished": (start + 2 * tick).isoformat(),
    }


def test_default_clock_and_determinism() -> None:
    first = run_simulation(CHAIN, [("x", {}), ("y", {"k": [1]})])
    second = run_simulation(CHAIN, [("x", {}), ("y", {"k": [1]})])

    assert first == second
    assert first.state.instances["t_a#0"].metadata["created"] == DEFAULT_START.isoformat()


def test_andevery_cycle_is_refused_before_anything_runs() -> None:
    config = {
        "t_a": {"after": [], "andEvery": "t_b", "run": "A"},
        "t_b": {"after": [], "andEvery": "t_a", "run": "B"},
    }

    with pytest.raises(ConfigurationError, match=r"t_a\.andEvery: cycle t_a -> t_b -> t_a"):
        run_simulation(config, ["t_a"])


def test_more_runs_than_max_runs_is_stopped_with_a_clear_error() -> None:
    config = {
        "t_a": {"after": ["x"], "andEvery": "x", "run": "A"},
        "t_b": {"after": [], "andEvery": "t_a", "run": "B"},
    }

    with pytest.raises(
        SimulationLimitExceeded, match=r"more than 3 instances ran after firing 'x'"
    ):
        run_simulation(config, ["x", "x", "x"], max_runs=3)


def test_abandoned_instance_never_runs() -> None:
    config = {"t_a": {"after": ["x", "y"], "unless": ["stop"], "run": "A"}}

    sim = run_simulation(config, ["x", "stop", "y"])

    assert statuses(sim.state) == {"t_a#0": "abandoned"}
    assert sim.ran == ()


def test_starting_state_is_extended() -> None:
    before = simulate({"t_a": {"after": ["x"], "run": "A"}}, ["x"])

    sim = run_simulation({"t_b": {"after": ["x", "y"], "run": "B"}}, ["y"], state=before)

    assert statuses(sim.state) == {"t_a#0": "finished", "t_b#0": "finished"}
    assert sim.state.instances["t_b#0"].status is Status.FINISHED


def test_bad_input_raises_the_engine_errors() -> None:
    with pytest.raises(ConfigurationError):
        simulate({"t_a": {"run": "A"}}, [])
    with pytest.raises(InvalidKwargsError, match="result: expected a mapping, got int"):
        simulate({"t_a": {"after": ["x"], "run": "A"}}, ["x"], results=lambda _n, _k: 3)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="now must be a timezone-aware datetime"):
        simulate({}, [], now=datetime(2030, 1, 1))


# -- condition groups: the simulator has no readiness logic of its own ------------------------


GROUPS = {
    "t_fetch": {"after": ["x"], "run": "F"},
    "t_any": {"after": ["go", {"anyOf": ["email", "t_fetch"]}], "run": "A"},
    "t_two": {
        "after": [{"atLeast": 2, "of": ["r1", "r2", {"anyOf": ["r3", "r4"]}]}],
        "unless": ["closed", {"anyOf": ["cancel", "withdraw"]}],
        "run": "T",
    },
    "t_page": {"after": [{"anyOf": ["start", "resume"]}], "andEvery": "page", "run": "P"},
}


def test_an_any_of_group_runs_on_its_first_member_and_ignores_the_rest() -> None:
    sim = run_simulation(GROUPS, [("go", {}), ("x", {"n": 1}), ("email", {"to": "a"})])

    assert sim.ran == ("t_fetch#0", "t_any#0")
    # The cascade satisfied the group; the later member fire changed nothing.
    assert sim.state.instances["t_any#0"].kwargs == {"go": {}, "t_fetch": {}}
    assert "t_any#1" not in sim.state.instances


def test_at_least_n_distinct_members_nested_groups_count_once() -> None:
    waiting = simulate(GROUPS, ["r3", "r4"])
    assert statuses(waiting) == {"t_two#0": "unstarted"}  # one member (the inner group)

    sim = run_simulation(GROUPS, ["r3", ("r1", {"k": 1}), "r2"])
    assert sim.ran == ("t_two#0",)
    assert sim.state.instances["t_two#0"].kwargs == {"r3": {}, "r1": {"k": 1}}


def test_an_unless_group_abandons_once_every_entry_is_satisfied() -> None:
    sim = run_simulation(GROUPS, ["closed", "r1", "withdraw", "r2"])

    assert statuses(sim.state) == {"t_two#0": "abandoned"}
    assert sim.state.instances["t_two#0"].unless_fired == {"closed", "withdraw"}
    not_yet = simulate(GROUPS, ["cancel", "r1", "r2"])
    assert statuses(not_yet) == {"t_two#0": "finished"}


def test_and_every_with_an_after_group() -> None:
    sim = run_simulation(GROUPS, [("page", {"p": 1}), ("resume", {}), ("page", {"p": 2})])

    assert sim.ran == ("t_page#0", "t_page#1")
    assert sim.state.instances["t_page#1"].kwargs == {"resume": {}, "page": {"p": 2}}


# -- the shipped strategies produce what they promise ---------------------------------------


@settings(max_examples=50, deadline=None)
@given(workflows(max_tasks=4))
def test_workflows_fire_only_names_the_config_uses_or_an_unused_one(
    workflow: tuple[dict[str, dict[str, Any]], list[tuple[str, dict[str, Any]]]],
) -> None:
    """Property: every drawn trigger is used by the drawn config (or is ``unused``);
    task names never contain '#'; every drawn config parses; every run terminates."""
    config, triggers = workflow
    used = set(triggers_used(config))

    assert {name for name, _ in triggers} <= used | {"unused"}
    assert all("#" not in name for name in config)
    assert set(parse_configuration(config)) == set(config)
    simulate(config, triggers)


@settings(max_examples=50, deadline=None)
@given(session_states(min_triggers=1))
def test_session_states_are_consistent(state: SessionState) -> None:
    """Property: drawn states name instances ``{task}#{n}`` with n below the task's counter."""
    for name, instance in state.instances.items():
        assert name == f"{instance.task_name}#{instance.number}"
        assert instance.number < state.counters[instance.task_name]
