"""Validation, parsing and serialization of condition groups (``anyOf``, ``atLeast``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from triggers_core import ConfigurationError
from triggers_core.engine import fire, update_configuration
from triggers_core.engine.conditions import MAX_GROUP_DEPTH, Group, entry_from_json, names_of
from triggers_core.engine.config import parse_configuration
from triggers_core.engine.serialization import config_from_json, config_to_json
from triggers_core.engine.state import SessionState
from triggers_core.engine.task_table import TaskTable

FORMS = '{"anyOf": [...]} or {"atLeast": N, "of": [...]}'


def problems_of(after: Any, key: str = "after") -> list[str]:
    directives = {"after": ["x"], "run": "A", key: after}
    with pytest.raises(ConfigurationError) as info:
        parse_configuration({"t": directives})
    return list(info.value.problems)


def nested(depth: int) -> dict[str, Any]:
    entry: Any = "z"
    for _ in range(depth):
        entry = {"anyOf": [entry]}
    assert isinstance(entry, dict)
    return entry


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"anyof": ["a"]}, "t.after[0]: not a group ('anyof'); did you mean 'anyOf'?"),
        ({"allOf": ["a", "b"]}, "t.after[0]: not a group ('allOf'); a group is"),
        ({}, "t.after[0]: not a group (no keys)"),
        ({"anyOf": ["a"], "of": ["b"]}, "t.after[0]: unknown key 'of' in a group"),
        ({"atLeast": 1, "of": ["a"], "n": 1}, "t.after[0]: unknown key 'n' in a group"),
        ({"of": ["a", "b"]}, "t.after[0].atLeast: required in a group"),
        ({"atLeast": 1}, "t.after[0].of: required in a group"),
        ({"anyOf": []}, "t.after[0].anyOf: a group must have at least one member"),
        ({"anyOf": "ab"}, "t.after[0].anyOf: expected a list of members, got str"),
        ({"anyOf": {"a", "b"}}, "t.after[0].anyOf: expected a list of members, got set"),
        ({"atLeast": 0, "of": ["a"]}, "t.after[0].atLeast: must be from 1 to 1"),
        ({"atLeast": 3, "of": ["a", "b"]}, "t.after[0].atLeast: must be from 1 to 2"),
        ({"atLeast": -1, "of": ["a", "b"]}, "t.after[0].atLeast: must be from 1 to 2"),
        ({"atLeast": "2", "of": ["a", "b"]}, "t.after[0].atLeast: expected an integer N, got str"),
        ({"atLeast": True, "of": ["a"]}, "t.after[0].atLeast: expected an integer N, got bool"),
        ({"atLeast": 1.0, "of": ["a"]}, "t.after[0].atLeast: expected an integer N, got float"),
        ({"anyOf": ["a", "a"]}, "t.after[0].anyOf[1]: repeats member 'a'; each member counts once"),
        ({"anyOf": ["a", ""]}, "t.after[0].anyOf[1]: trigger name must not be empty"),
        ({"anyOf": ["a", 3]}, f"t.after[0].anyOf[1]: expected a trigger name or a group ({FORMS})"),
        ({"anyOf": ["a", "\ud800"]}, "t.after[0].anyOf[1]: trigger name '\\ud800' contains"),
        (
            {"anyOf": [{"atLeast": 2, "of": ["a"]}]},
            "t.after[0].anyOf[0].atLeast: must be from 1 to 1",
        ),
        (nested(MAX_GROUP_DEPTH + 1), "groups nest too deep (at most 8 groups inside one another)"),
    ],
)
def test_each_group_problem_is_reported_with_its_path(entry: Any, problem: str) -> None:
    found = problems_of([entry])
    assert len(found) == 1, found
    assert problem in found[0]


def test_unless_groups_are_validated_alike() -> None:
    assert problems_of([{"anyOf": []}], key="unless") == [
        "t.unless[0].anyOf: a group must have at least one member"
    ]


def test_every_problem_of_a_configuration_is_reported_at_once() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_configuration(
            {
                "t_a": {"after": [{"anyOf": []}, {"atLeast": 9, "of": ["a"]}], "run": "A"},
                "t_b": {"after": ["x"], "unless": [{"oneOf": ["y"]}], "run": "B"},
            }
        )
    assert [p.split(":")[0] for p in info.value.problems] == [
        "t_a.after[0].anyOf",
        "t_a.after[1].atLeast",
        "t_b.unless[0]",
    ]


def test_groups_nest_exactly_to_the_documented_depth() -> None:
    task = parse_configuration({"t": {"after": [nested(MAX_GROUP_DEPTH)], "run": "A"}})["t"]
    assert task.after_names == ("z",)


def test_a_hostile_depth_is_refused_without_recursing() -> None:
    found = problems_of([nested(50_000)])
    assert len(found) == 1
    assert "groups nest too deep" in found[0]


def test_repeated_equal_entries_in_a_list_are_dropped_as_names_always_were() -> None:
    task = parse_configuration(
        {"t": {"after": ["a", {"anyOf": ["b", "c"]}, "a", {"anyOf": ["b", "c"]}], "run": "A"}}
    )["t"]
    assert task.after == ("a", Group(("b", "c")))


def test_parsed_form_and_flattened_names() -> None:
    raw = ["x", {"anyOf": ["a", {"atLeast": 2, "of": ["b", "x", "c"]}]}]
    task = parse_configuration(
        {"t": {"after": raw, "andEvery": "tick", "unless": [{"anyOf": ["u", "v"]}], "run": "A"}}
    )["t"]
    assert task.after == ("x", Group(("a", Group(("b", "x", "c"), 2))))
    assert task.after_names == ("x", "a", "b", "c")
    assert task.required_triggers == {"x", "a", "b", "c", "tick"}
    assert task.unless_names == ("u", "v")
    assert task.has_groups
    assert task.uses("c")
    assert task.uses("v")
    assert not task.uses("w")
    assert task.to_json()["after"] == raw


def test_plain_configuration_is_unchanged_in_form() -> None:
    task = parse_configuration({"t": {"after": ["a", "b"], "unless": ["u"], "run": "A"}})["t"]
    assert task.after == ("a", "b")
    assert not task.has_groups
    assert task.to_json() == {"after": ["a", "b"], "run": "A", "unless": ["u"]}


@pytest.mark.parametrize(
    ("after", "recorded", "ready"),
    [
        ([{"anyOf": ["a", "b"]}], set(), False),
        ([{"anyOf": ["a", "b"]}], {"b"}, True),
        ([{"atLeast": 2, "of": ["a", "b", "c"]}], {"a", "x"}, False),
        ([{"atLeast": 2, "of": ["a", "b", "c"]}], {"a", "c"}, True),
        (["x", {"anyOf": ["a", "b"]}], {"a"}, False),
        (["x", {"anyOf": ["a", "b"]}], {"a", "x"}, True),
        ([{"atLeast": 2, "of": ["a", {"anyOf": ["b", "c"]}, "d"]}], {"c", "d"}, True),
        ([{"atLeast": 2, "of": ["a", {"anyOf": ["b", "c"]}, "d"]}], {"b", "c"}, False),
    ],
)
def test_is_ready(after: list[Any], recorded: set[str], ready: bool) -> None:
    task = parse_configuration({"t": {"after": after, "run": "A"}})["t"]
    assert task.is_ready(recorded) is ready
    assert task.is_ready({key: {} for key in recorded}) is ready


def test_and_every_is_required_beside_the_groups() -> None:
    task = parse_configuration(
        {"t": {"after": [{"anyOf": ["a", "b"]}], "andEvery": "tick", "run": "A"}}
    )["t"]
    assert not task.is_ready({"a"})
    assert task.is_ready({"a", "tick"})


def test_is_abandoned_by() -> None:
    task = parse_configuration(
        {"t": {"after": ["x"], "unless": ["s", {"anyOf": ["u", "v"]}], "run": "A"}}
    )["t"]
    assert not task.is_abandoned_by({"s"})
    assert not task.is_abandoned_by({"u", "v"})
    assert task.is_abandoned_by({"s", "v"})
    no_unless = parse_configuration({"t": {"after": ["x"], "run": "A"}})["t"]
    assert not no_unless.is_abandoned_by(set())


def test_serialization_round_trip_keeps_groups() -> None:
    tasks = parse_configuration(
        {
            "t_a": {
                "after": ["x", {"atLeast": 2, "of": ["a", {"anyOf": ["b", "c"]}, "d"]}],
                "unless": [{"anyOf": ["s"]}],
                "run": "A",
            }
        }
    )
    assert config_from_json(config_to_json(tasks)) == tasks


def test_entry_from_json() -> None:
    assert entry_from_json({"atLeast": 1, "of": ["a"]}) == Group(("a",), 1)
    with pytest.raises(ValueError, match=r"g\.anyOf: a group must have at least one member"):
        entry_from_json({"anyOf": []}, "g")
    assert names_of([Group(("a", Group(("b", "a")))), "c"]) == ("a", "b", "c")


def test_a_member_fire_reaches_exactly_the_tasks_that_use_it() -> None:
    tasks = parse_configuration(
        {
            "t_a": {"after": [{"anyOf": ["a", {"atLeast": 1, "of": ["deep"]}]}], "run": "A"},
            "t_b": {"after": ["b"], "unless": [{"anyOf": ["deep", "s"]}], "run": "B"},
            "t_c": {"after": ["c"], "run": "C"},
        }
    )
    table = TaskTable(tasks)
    assert table.using("deep") == ("t_a", "t_b")
    assert table.using("s") == ("t_b",)
    assert table.using("a") == ("t_a",)
    state = update_configuration(SessionState(), tasks).state
    t = fire(state, "deep", {}, now=datetime(2024, 1, 1, tzinfo=UTC))
    assert sorted(t.changed) == ["t_a#0", "t_b#0"]
    assert t.scheduled == ("t_a#0",)
