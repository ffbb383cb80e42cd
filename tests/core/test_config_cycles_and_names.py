"""Configuration refuses andEvery cycles and names that some backend cannot store."""

from __future__ import annotations

from typing import Any

import pytest

from triggers_core import engine
from triggers_core.engine.config import parse_configuration
from triggers_core.engine.state import SessionState
from triggers_core.errors import ConfigurationError


def problems_of(raw: object) -> list[str]:
    with pytest.raises(ConfigurationError) as caught:
        parse_configuration(raw)
    return list(caught.value.problems)


# -- cycles ---------------------------------------------------------------------------


def test_and_every_naming_its_own_task_is_refused() -> None:
    assert problems_of({"t_a": {"after": ["x"], "andEvery": "t_a", "run": "A"}}) == [
        "t_a.andEvery: cycle t_a -> t_a: names its own task, so each finished t_a would "
        "create the next, without end; break the cycle"
    ]


def test_tasks_creating_each_other_are_refused_with_the_cycle_named() -> None:
    config = {
        "t_c": {"after": [], "andEvery": "t_b", "run": "C"},
        "t_a": {"after": ["go"], "andEvery": "t_c", "run": "A"},
        "t_b": {"after": [], "andEvery": "t_a", "run": "B"},
    }
    (problem,) = problems_of(config)
    assert problem.startswith("t_a.andEvery: cycle t_a -> t_b -> t_c -> t_a: ")


def test_cycles_are_listed_with_the_other_problems() -> None:
    problems = problems_of(
        {
            "t_a": {"after": ["x"], "andEvery": "t_a", "run": "A"},
            "t_b": {"after": "x", "run": "B"},
        }
    )
    assert problems[0] == "t_b.after: expected a list of trigger names, got a single string"
    assert problems[1].startswith("t_a.andEvery: cycle t_a -> t_a")


@pytest.mark.parametrize(
    "config",
    [
        # Waiting for each other is a deadlock, not a loop: no new instances.
        {"t_a": {"after": ["t_b"], "run": "A"}, "t_b": {"after": ["t_a"], "run": "B"}},
        # A task that waits for itself never runs; it creates nothing.
        {"t_a": {"after": ["t_a"], "run": "A"}},
        # A chain of andEvery without a way back.
        {
            "t_a": {"after": ["x"], "andEvery": "tick", "run": "A"},
            "t_b": {"after": [], "andEvery": "t_a", "run": "B"},
            "t_c": {"after": [], "andEvery": "t_b", "run": "C"},
        },
        # andEvery naming a trigger that is no task's name.
        {"t_a": {"after": ["x"], "andEvery": "t_missing", "run": "A"}},
    ],
)
def test_configurations_without_an_and_every_cycle_are_accepted(config: dict[str, Any]) -> None:
    assert set(parse_configuration(config)) == set(config)


def test_a_cycle_closed_with_already_configured_tasks_is_refused() -> None:
    state = engine.update_configuration(
        SessionState(), {"t_a": {"after": [], "andEvery": "t_b", "run": "A"}}
    ).state

    with pytest.raises(ConfigurationError) as caught:
        engine.update_configuration(state, {"t_b": {"after": ["x"], "andEvery": "t_a", "run": "B"}})
    assert caught.value.problems[0].startswith("t_a.andEvery: cycle t_a -> t_b -> t_a")

    # Replacing the task that closes the cycle is accepted.
    fixed = engine.update_configuration(state, {"t_b": {"after": ["x"], "run": "B"}}).state
    assert set(fixed.tasks) == {"t_a", "t_b"}


# -- names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("directives", "problem"),
    [
        (
            {"after": ["x\x00y"], "run": "A"},
            r"t_a.after[0]: trigger name 'x\x00y' must not contain NUL ('\x00' at index 1)",
        ),
        (
            {"after": ["x", "\udc80"], "run": "A"},
            r"t_a.after[1]: trigger name '\udc80' contains a lone surrogate ('\udc80' at index 0);"
            " strings must be valid Unicode",
        ),
        (
            {"after": ["x"], "andEvery": "e\x00", "run": "A"},
            r"t_a.andEvery: trigger name 'e\x00' must not contain NUL ('\x00' at index 1)",
        ),
        (
            {"after": ["x"], "unless": ["\ud800u"], "run": "A"},
            r"t_a.unless[0]: trigger name '\ud800u' contains a lone surrogate "
            r"('\ud800' at index 0); strings must be valid Unicode",
        ),
        (
            {"after": ["x"], "run": "A\x00"},
            r"t_a.run: task name 'A\x00' must not contain NUL ('\x00' at index 1)",
        ),
        (
            {"after": ["x"], "run": "A", "using": "c\udcff"},
            r"t_a.using: runner name 'c\udcff' contains a lone surrogate ('\udcff' at index 1);"
            " strings must be valid Unicode",
        ),
        (
            {"after": ["x"], "run": "A", "withParams": {"x\x00": {}}},
            r"t_a.withParams['x\x00']: trigger name must not contain NUL ('\x00' at index 1)",
        ),
        (
            {"after": ["x"], "run": "A", "withParams": {"x": {"k": "\udc80"}}},
            r"t_a.withParams.x.k: contains a lone surrogate ('\udc80' at index 0);"
            " strings must be valid Unicode",
        ),
        (
            {"after": ["x"], "run": "A", "notes\udc80": 1},
            r"t_a['notes\udc80']: directive name contains a lone surrogate ('\udc80' at index 5);"
            " strings must be valid Unicode",
        ),
        (
            {"after": ["x"], "run": "A", "notes": {"deep": 10**30}},
            "t_a.notes.deep: an integer of 100 bits is out of range "
            "(integers must lie between -2**63 and 2**63 - 1)",
        ),
    ],
)
def test_names_and_values_no_backend_can_store_are_refused(
    directives: dict[str, Any], problem: str
) -> None:
    assert problems_of({"t_a": directives}) == [problem]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("t_\x00", r"'t_\x00': task name must not contain NUL ('\x00' at index 2)"),
        (
            "t_\udc80",
            r"'t_\udc80': task name contains a lone surrogate ('\udc80' at index 2);"
            " strings must be valid Unicode",
        ),
    ],
)
def test_task_names_no_backend_can_store_are_refused(name: str, problem: str) -> None:
    assert problems_of({name: {"after": ["x"], "run": "A"}}) == [problem]


def test_nul_and_any_valid_unicode_are_fine_inside_values() -> None:
    tasks = parse_configuration(
        {
            "t_ü☃": {
                "after": ["x 日本"],
                "run": "A",
                "withParams": {"x 日本": {"text": "a\x00b", "emoji": "🎉"}},
                "notes": "\x00",
            }
        }
    )
    assert tasks["t_ü☃"].with_params["x 日本"] == {"text": "a\x00b", "emoji": "🎉"}
    assert tasks["t_ü☃"].extras == {"notes": "\x00"}


def test_with_params_nested_thousands_deep_is_a_problem_with_its_path() -> None:
    params: dict[str, Any] = {}
    for _ in range(5000):
        params = {"k": params}
    (problem,) = problems_of({"t_a": {"after": ["x"], "run": "A", "withParams": {"x": params}}})
    assert problem == "t_a.withParams.x" + ".k" * 64 + (
        ": nested deeper than 64 levels of mappings and lists"
    )
