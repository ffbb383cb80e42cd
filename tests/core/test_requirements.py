"""requirements: the one place the workflow tools read conditions, groups included."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triggers_core import parse_configuration
from triggers_core.engine.conditions import Group
from triggers_core.engine.config import TaskConfig
from triggers_core.testing.strategies import condition_entries
from triggers_core.tools.requirements import (
    GroupReference,
    Missing,
    Reference,
    after_triggers,
    condition_words,
    group_references,
    grouped,
    lack_words,
    missing_after,
    references,
    unless_always_wins,
)


def task(**directives: Any) -> TaskConfig:
    return parse_configuration({"t": {"run": "r", **directives}})["t"]


NESTED = task(
    after=["a", {"anyOf": ["b", {"atLeast": 2, "of": ["c", "d", "e"]}]}],
    andEvery="tick",
    unless=[{"atLeast": 1, "of": ["x", "y"]}, "z"],
)


def test_references_name_every_trigger_with_its_exact_path() -> None:
    assert references(NESTED) == [
        Reference("t", "a", "after", "t.after[0]"),
        Reference("t", "b", "after", "t.after[1].anyOf[0]", "t.after[1]"),
        Reference("t", "c", "after", "t.after[1].anyOf[1].of[0]", "t.after[1].anyOf[1]"),
        Reference("t", "d", "after", "t.after[1].anyOf[1].of[1]", "t.after[1].anyOf[1]"),
        Reference("t", "e", "after", "t.after[1].anyOf[1].of[2]", "t.after[1].anyOf[1]"),
        Reference("t", "tick", "andEvery", "t.andEvery"),
        Reference("t", "x", "unless", "t.unless[0].of[0]", "t.unless[0]"),
        Reference("t", "y", "unless", "t.unless[0].of[1]", "t.unless[0]"),
        Reference("t", "z", "unless", "t.unless[1]"),
    ]
    assert [(g.directive, g.path, g.parent) for g in group_references(NESTED)] == [
        ("after", "t.after[1]", ""),
        ("after", "t.after[1].anyOf[1]", "t.after[1]"),
        ("unless", "t.unless[0]", ""),
    ]
    assert group_references(NESTED)[2] == GroupReference(
        "t", Group(("x", "y"), 1), "unless", "t.unless[0]"
    )
    assert (grouped(NESTED, "after"), grouped(NESTED, "unless")) == (True, True)
    assert after_triggers(NESTED) == ("a", "b", "c", "d", "e", "tick")


def test_plain_lists_lack_exactly_the_names_not_recorded() -> None:
    plain = task(after=["a", "b", "c"], andEvery="tick")
    assert missing_after(plain, {"b": {}}) == ("a", "c", "tick")
    assert missing_after(plain, {"a": {}, "b": {}, "c": {}, "tick": {}}) == ()
    assert condition_words(plain, "after") == "a, b, c, tick"
    assert not grouped(plain, "after")


def test_what_a_group_still_lacks() -> None:
    (a, group, tick) = missing_after(NESTED, {"d": {}})
    assert (a, tick) == ("a", "tick")
    assert isinstance(group, Missing)
    assert (group.path, group.need, group.satisfied) == ("t.after[1]", 1, 0)
    (b, inner) = group.members
    assert b == "b"
    assert inner == Missing(Group(("c", "d", "e"), 2), "t.after[1].anyOf[1]", 1, 1, ("c", "e"))
    assert lack_words(group) == "any one of (b, one more of (c, e))"
    assert lack_words(group, repr) == "any one of ('b', one more of ('c', 'e'))"
    assert condition_words(NESTED, "after") == "a, any one of (b, 2 of (c, d, e)), tick"
    assert condition_words(NESTED, "unless") == "any one of (x, y), z"
    # Satisfied groups lack nothing; the instance is ready exactly when nothing is lacking.
    assert missing_after(NESTED, {"a": {}, "c": {}, "e": {}, "tick": {}}) == ()


@pytest.mark.parametrize(
    ("directives", "wins"),
    [
        ({"after": ["x", "y"], "unless": ["y"]}, True),
        ({"after": ["x", "y"], "unless": ["y", "z"]}, False),
        ({"after": ["x"], "unless": ["y"]}, False),
        ({"after": [{"anyOf": ["x", "y"]}], "unless": ["y"]}, False),  # x alone runs it
        ({"after": [{"anyOf": ["x", "y"]}], "unless": [{"anyOf": ["x", "y"]}]}, True),
        (
            {"after": [{"atLeast": 2, "of": ["a", "b", "c"]}], "unless": [{"anyOf": ["a", "b"]}]},
            True,
        ),
        ({"after": [{"atLeast": 2, "of": ["a", "b", "c"]}], "unless": ["a", "b"]}, False),
        ({"after": ["x"], "andEvery": "page", "unless": ["page"]}, True),
    ],
)
def test_unless_always_wins(directives: dict[str, Any], wins: bool) -> None:
    assert unless_always_wins(task(**directives)) is wins


ENTRIES = condition_entries(st.sampled_from("abcde"))


@given(
    st.lists(ENTRIES, min_size=1, max_size=3, unique_by=repr),
    st.lists(ENTRIES, max_size=2, unique_by=repr),
    st.sets(st.sampled_from("abcde")),
)
def test_lacking_nothing_is_being_ready_and_brute_force_agrees(
    after: list[Any], unless: list[Any], fired: set[str]
) -> None:
    t = task(after=after, **({"unless": unless} if unless else {}))
    assert (missing_after(t, fired) == ()) is t.is_ready(fired)
    # unless_always_wins against every subset of the after names.
    names = sorted(t.after_names)
    subsets = [{n for i, n in enumerate(names) if mask >> i & 1} for mask in range(2 ** len(names))]
    expected = all(t.is_abandoned_by(s) for s in subsets if t.is_ready(s))
    assert unless_always_wins(t) is expected
