"""Configuration parsing (SPEC section 2): every directive, every problem with its path."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings

from triggers_core.engine.config import TaskConfig, parse_configuration
from triggers_core.errors import ConfigurationError
from triggers_core.testing.strategies import task_configurations


def problems_of(raw: object) -> list[str]:
    with pytest.raises(ConfigurationError) as caught:
        parse_configuration(raw)
    return list(caught.value.problems)


def test_full_task_is_parsed_into_its_fields() -> None:
    tasks = parse_configuration(
        {
            "t_score": {
                "after": ["created", "finalized"],
                "run": "score.Compute",
                "andEvery": "observation",
                "unless": ["cancelled", "expired"],
                "withParams": {"created": {"model": "v2"}},
                "using": "celery",
                "queue": "fast",
                "notes": {"owner": "team"},
            }
        }
    )

    assert tasks == {
        "t_score": TaskConfig(
            name="t_score",
            run="score.Compute",
            after=("created", "finalized"),
            and_every="observation",
            unless=("cancelled", "expired"),
            with_params={"created": {"model": "v2"}},
            using="celery",
            extras={"queue": "fast", "notes": {"owner": "team"}},
        )
    }
    task = tasks["t_score"]
    assert task.required_triggers == {"created", "finalized", "observation"}
    assert task.unless_triggers == {"cancelled", "expired"}
    assert task.uses("observation")
    assert task.uses("cancelled")
    assert not task.uses("t_score")


def test_minimal_task_gets_defaults() -> None:
    task = parse_configuration({"t_a": {"after": ["x"], "run": "A"}})["t_a"]

    assert (task.and_every, task.unless, task.with_params, task.using, task.extras) == (
        None,
        (),
        {},
        None,
        {},
    )


def test_after_accepts_a_set_and_drops_duplicates_keeping_order() -> None:
    tasks = parse_configuration(
        {
            "t_list": {"after": ["b", "a", "b"], "run": "A"},
            "t_set": {"after": {"b", "a"}, "run": "A"},
        }
    )

    assert tasks["t_list"].after == ("b", "a")
    assert set(tasks["t_set"].after) == {"a", "b"}


def test_and_every_alone_is_enough() -> None:
    task = parse_configuration({"t_a": {"after": [], "andEvery": "tick", "run": "A"}})["t_a"]

    assert task.after == ()
    assert task.required_triggers == {"tick"}


def test_null_optional_directives_count_as_absent() -> None:
    task = parse_configuration(
        {"t_a": {"after": ["x"], "run": "A", "andEvery": None, "unless": None, "using": None}}
    )["t_a"]

    assert (task.and_every, task.unless, task.using) == (None, (), None)


def test_missing_run_and_after_are_both_reported() -> None:
    assert problems_of({"t_a": {}}) == [
        "t_a.after: required (the triggers that must fire)",
        "t_a.run: required (the name of the trigger task to execute)",
    ]


def test_every_problem_of_every_task_is_listed_with_its_path() -> None:
    problems = problems_of(
        {
            "t_score": {"after": ["x"], "run": "S", "withParams": {"model": "v2"}},
            "t_bad#1": {"after": "x", "run": 3},
            "": {"after": ["x"], "run": "A"},
            "t_every": {"after": ["x"], "run": "E", "andEvery": ["a", "b"]},
        }
    )

    assert problems == [
        "t_score.withParams.model: expected a mapping, got str",
        "t_bad#1: task name must not contain '#' (it separates instance numbers)",
        "t_bad#1.after: expected a list of trigger names, got a single string",
        "t_bad#1.run: expected a single task name (a string), got int",
        "'': task name must not be empty",
        "t_every.andEvery: expected a single trigger name (a string), got list",
    ]


def test_error_message_lists_every_problem() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_configuration({"t_a": {"run": "A"}, "t_b": {"after": ["x"]}})

    message = str(caught.value)
    assert message.startswith("invalid configuration (2 problems):")
    assert "  - t_a.after: required" in message
    assert "  - t_b.run: required" in message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("directives", "problem"),
    [
        ({"after": ["x", ""], "run": "A"}, "t_a.after[1]: trigger name must not be empty"),
        (
            {"after": ["x", 3], "run": "A"},
            "t_a.after[1]: expected a trigger name or a group "
            '({"anyOf": [...]} or {"atLeast": N, "of": [...]}), got int',
        ),
        ({"after": None, "run": "A"}, "t_a.after: expected a list of trigger names, got NoneType"),
        ({"after": [], "run": "A"}, "t_a.after: must name at least one trigger (or give andEvery)"),
        ({"after": ["x"], "run": ""}, "t_a.run: task name must not be empty"),
        (
            {"after": ["x"], "run": "A", "andEvery": ""},
            "t_a.andEvery: trigger name must not be empty",
        ),
        (
            {"after": ["x"], "run": "A", "andEvery": 7},
            "t_a.andEvery: expected a single trigger name (a string), got int",
        ),
        (
            {"after": ["x"], "run": "A", "unless": "stop"},
            "t_a.unless: expected a list of trigger names, got a single string",
        ),
        (
            {"after": ["x"], "run": "A", "unless": [""]},
            "t_a.unless[0]: trigger name must not be empty",
        ),
        (
            {"after": ["x"], "run": "A", "withParams": ["x"]},
            "t_a.withParams: expected a mapping of trigger names to mappings, got list",
        ),
        (
            {"after": ["x"], "run": "A", "withParams": {"x": 1}},
            "t_a.withParams.x: expected a mapping, got int",
        ),
        (
            {"after": ["x"], "run": "A", "withParams": {"": {}}},
            "t_a.withParams['']: expected a trigger name",
        ),
        (
            {"after": ["x"], "run": "A", "withParams": {"x": {"when": {1, 2}}}},
            "t_a.withParams.x.when: set is not JSON-serializable",
        ),
        (
            {"after": ["x"], "run": "A", "using": 5},
            "t_a.using: expected a single runner name (a string), got int",
        ),
        ({"after": ["x"], "run": "A", "queue": object}, "t_a.queue: type is not JSON-serializable"),
    ],
)
def test_each_kind_of_problem_is_reported_with_its_path(
    directives: dict[str, Any], problem: str
) -> None:
    assert problems_of({"t_a": directives}) == [problem]


def test_directives_must_be_a_mapping() -> None:
    assert problems_of({"t_a": ["x"]}) == ["t_a: expected a mapping of directives, got list"]


def test_task_name_must_be_a_string() -> None:
    assert problems_of({3: {"after": ["x"], "run": "A"}}) == [
        "3: task name must be a string, got int"
    ]


def test_configuration_must_be_a_mapping() -> None:
    assert problems_of(["t_a"]) == [
        "<configuration>: expected a mapping of task names to directives, got list"
    ]


def test_nothing_is_returned_when_one_task_is_bad() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_configuration({"t_good": {"after": ["x"], "run": "A"}, "t_bad": {"run": "B"}})

    assert caught.value.problems == ("t_bad.after: required (the triggers that must fire)",)


def test_to_json_is_the_canonical_form() -> None:
    raw = {
        "after": ["x", "y"],
        "run": "A",
        "andEvery": "tick",
        "unless": ["stop"],
        "withParams": {"x": {"n": 1}},
        "using": "celery",
        "queue": "fast",
    }

    assert parse_configuration({"t_a": raw})["t_a"].to_json() == raw
    assert parse_configuration({"t_b": {"after": ["x"], "run": "B"}})["t_b"].to_json() == {
        "after": ["x"],
        "run": "B",
    }


@settings(max_examples=150, deadline=None)
@given(task_configurations(max_tasks=5, groups=True))
def test_parse_to_json_round_trip(raw: dict[str, dict[str, Any]]) -> None:
    """Property: for every valid configuration, parse(to_json(parse(raw))) == parse(raw)."""
    tasks = parse_configuration(raw)

    again = parse_configuration({name: task.to_json() for name, task in tasks.items()})

    assert again == tasks
    assert set(tasks) == set(raw)
