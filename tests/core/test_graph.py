"""The graph helpers behind the configuration checks: components and cycles, iteratively."""

from __future__ import annotations

import itertools
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triggers_core.engine.config import TaskConfig, parse_configuration, parse_task_config
from triggers_core.engine.graph import (
    and_every_cycles,
    and_every_edges,
    cascade_edges,
    find_cycles,
    strongly_connected_components,
)
from triggers_core.errors import ConfigurationError


def tasks_of(raw: dict[str, dict[str, object]]) -> dict[str, TaskConfig]:
    problems: list[str] = []
    tasks = {}
    for name, directives in raw.items():
        task = parse_task_config(name, directives, problems)
        assert task is not None, problems
        tasks[name] = task
    return tasks


def test_no_edges_no_cycles() -> None:
    assert find_cycles({"a": [], "b": []}) == []
    assert strongly_connected_components({"a": [], "b": []}) == [["a"], ["b"]]


def test_a_self_loop_is_a_cycle() -> None:
    assert find_cycles({"a": ["a"], "b": ["a"]}) == [["a", "a"]]


def test_cycles_start_at_their_smallest_node_and_take_the_shortest_way_back() -> None:
    edges = {"c": ["a"], "a": ["b", "d"], "b": ["c"], "d": ["a"], "x": ["y"], "y": ["x"]}
    assert find_cycles(edges) == [["a", "d", "a"], ["x", "y", "x"]]


def test_components_come_in_reverse_topological_order() -> None:
    edges = {"a": ["b"], "b": ["c"], "c": ["b", "d"], "d": []}
    assert strongly_connected_components(edges) == [["d"], ["b", "c"], ["a"]]


def test_nodes_only_named_as_targets_count() -> None:
    assert strongly_connected_components({"a": ["z"]}) == [["z"], ["a"]]


def test_long_chains_and_cycles_need_no_recursion() -> None:
    n = sys.getrecursionlimit() * 3
    chain = {f"n{i:06}": [f"n{i + 1:06}"] for i in range(n)}
    assert find_cycles(chain) == []
    ring = {**chain, f"n{n:06}": ["n000000"]}
    (cycle,) = find_cycles(ring)
    assert len(cycle) == n + 2
    assert cycle[0] == cycle[-1] == "n000000"


@given(
    st.dictionaries(
        st.sampled_from("abcdef"), st.lists(st.sampled_from("abcdef"), max_size=3), max_size=6
    )
)
def test_every_reported_cycle_is_a_path_of_edges_and_acyclic_graphs_report_none(
    edges: dict[str, list[str]],
) -> None:
    cycles = find_cycles(edges)
    for cycle in cycles:
        assert cycle[0] == cycle[-1]
        for source, target in itertools.pairwise(cycle):
            assert target in edges.get(source, [])
    # A graph has a cycle iff some component is larger than one node or has a self-loop.
    looped = [
        c for c in strongly_connected_components(edges) if len(c) > 1 or c[0] in edges.get(c[0], [])
    ]
    assert len(cycles) == len(looped)


def test_and_every_edges_lead_from_a_task_to_those_it_creates() -> None:
    tasks = tasks_of(
        {
            "t_a": {"after": ["x"], "run": "A"},
            "t_b": {"after": [], "andEvery": "t_a", "run": "B"},
            "t_c": {"after": ["t_b"], "andEvery": "tick", "run": "C"},
        }
    )
    assert and_every_edges(tasks) == {"t_a": {"t_b"}, "t_b": set(), "t_c": set()}
    assert cascade_edges(tasks) == {"t_a": {"t_b"}, "t_b": {"t_c"}, "t_c": set()}
    assert and_every_cycles(tasks) == []


def test_and_every_cycles_of_a_configuration() -> None:
    tasks = tasks_of(
        {
            "t_a": {"after": [], "andEvery": "t_b", "run": "A"},
            "t_b": {"after": ["x"], "andEvery": "t_a", "run": "B"},
            "t_self": {"after": ["x"], "andEvery": "t_self", "run": "S"},
            "t_waits": {"after": ["t_a"], "run": "W"},  # waits, but creates nothing
        }
    )
    assert and_every_cycles(tasks) == [["t_a", "t_b", "t_a"], ["t_self", "t_self"]]


def test_cascade_edges_include_group_members() -> None:
    tasks = tasks_of(
        {
            "t_a": {"after": [{"anyOf": ["x", "t_b"]}], "run": "A"},
            "t_b": {"after": [{"atLeast": 1, "of": [{"anyOf": ["t_a", "y"]}]}], "run": "B"},
        }
    )
    assert cascade_edges(tasks) == {"t_a": {"t_b"}, "t_b": {"t_a"}}
    # A loop of cascades through groups is no andEvery cycle: nothing creates instances.
    assert and_every_cycles(tasks) == []


def test_an_and_every_cycle_is_found_when_the_configuration_uses_groups() -> None:
    raw: dict[str, dict[str, object]] = {
        "t_a": {"after": [{"anyOf": ["x", "y"]}], "andEvery": "t_b", "run": "A"},
        "t_b": {
            "after": [{"atLeast": 2, "of": ["x", "y", "z"]}],
            "andEvery": "t_a",
            "unless": [{"anyOf": ["stop", "t_a"]}],
            "run": "B",
        },
    }
    assert and_every_cycles(tasks_of(raw)) == [["t_a", "t_b", "t_a"]]
    with pytest.raises(ConfigurationError) as caught:
        parse_configuration(raw)
    assert caught.value.problems == (
        "t_a.andEvery: cycle t_a -> t_b -> t_a: each finished instance creates a new instance "
        "of the next task through its andEvery, so the tasks would run without end; break the "
        "cycle",
    )


def test_groups_naming_tasks_create_no_false_cycle() -> None:
    # t_a's group names t_b, whose andEvery is t_a: one andEvery edge, no loop back.
    raw = {
        "t_a": {"after": [{"anyOf": ["t_b", "x"]}], "andEvery": "tick", "run": "A"},
        "t_b": {"after": [{"anyOf": ["t_a", "y"]}], "andEvery": "t_a", "run": "B"},
        "t_c": {"after": [], "andEvery": "t_c2", "unless": [{"anyOf": ["t_c", "t_a"]}], "run": "C"},
        "t_c2": {"after": [{"atLeast": 1, "of": ["t_c", "z"]}], "run": "C"},
    }
    tasks = parse_configuration(raw)
    assert and_every_edges(tasks) == {
        "t_a": {"t_b"},
        "t_b": set(),
        "t_c": set(),
        "t_c2": {"t_c"},
    }
    assert and_every_cycles(tasks) == []
