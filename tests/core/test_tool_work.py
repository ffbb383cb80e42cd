"""The workflow tools do work linear in the size of what they read (issue 23, item 2).

No timing: each test counts the Python function calls a tool makes on an input
of size n and of size 2n (``sys.setprofile``), and the count may at most a
little more than double. Quadratic code (comparing every pair of names,
re-evaluating a condition per upstream task, copying every upstream instance
list per waiting instance) quadruples it. The benchmarks (``nox -s bench``)
measure the times.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.tooling import check_config, inspect_state
from triggers_core.engine.config import parse_configuration
from triggers_core.tools import lint as lint_module
from triggers_core.tools import similar
from triggers_core.tools.explain import explain_instances, explain_task
from triggers_core.tools.lint import lint
from triggers_core.tools.requirements import unless_always_wins

GROWTH = 2.4  # doubling the input may multiply the work by at most this


def calls(work: Callable[[], object]) -> int:
    """How many Python functions ``work`` calls."""
    count = 0

    def profile(_frame: FrameType, event: str, _arg: Any) -> None:
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
    return count


def assert_linear(make: Callable[[int], Callable[[], object]], n: int) -> None:
    small, large = calls(make(n)), calls(make(2 * n))
    assert large <= GROWTH * small, (small, large, large / small)


def fan_in(n: int) -> dict[str, Any]:
    config: dict[str, Any] = {f"t_step{i:05d}": {"after": ["go"], "run": "r"} for i in range(n)}
    config["t_end"] = {"after": sorted(config), "run": "r"}
    return config


def chain_with_unless(n: int) -> dict[str, Any]:
    return {
        f"t_c{i:05d}": {
            "after": [f"t_c{i - 1:05d}" if i else "go"],
            "unless": [f"t_c{i + 5:05d}" if i + 5 < n else "stop"],
            "run": "r",
        }
        for i in range(n)
    }


def shared_groups(n: int) -> dict[str, Any]:
    a = [f"a{i}" for i in range(n)]
    b = [f"b{i}" for i in range(n)]
    return {
        "t_x": {
            "after": [{"anyOf": a}, {"atLeast": 2, "of": b}],
            "unless": [{"anyOf": a}, *b],
            "run": "r",
        }
    }


def test_check_is_linear_in_tasks() -> None:
    assert_linear(lambda n: lambda: lint(check_config(n)), 300)


def test_check_is_linear_with_a_task_waiting_for_every_other() -> None:
    assert_linear(lambda n: lambda: lint(fan_in(n)), 300)


def test_check_is_linear_with_unless_conditions_on_downstream_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fixed part of the budget lets small configurations be checked whole; without
    # it, the small sizes here show the shape of large ones.
    monkeypatch.setattr(lint_module, "LATER_BASE", 0)
    assert_linear(lambda n: lambda: lint(chain_with_unless(n)), 300)
    monkeypatch.undo()
    found = lint(chain_with_unless(300))
    assert sum(f.rule == "unless-never-completes" for f in found) == 295  # all checked


def test_check_is_linear_in_the_size_of_one_condition() -> None:
    assert_linear(lambda n: lambda: lint(shared_groups(n)), 300)
    task = parse_configuration(shared_groups(300))["t_x"]
    assert unless_always_wins(task) is False  # b0 and b1 run it; unless needs every b


def test_inspect_is_linear_in_instances() -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    assert_linear(lambda n: lambda: explain_instances(inspect_state(n), now=now), 400)


def test_explaining_a_task_is_linear_in_its_instances() -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    assert_linear(
        lambda n: lambda: explain_task(inspect_state(n), "t_page", now=now).to_json(), 400
    )
    explained = explain_task(inspect_state(100), "t_page", now=now + timedelta(days=1))
    waiting = explained.instances[0].waiting_for[0]
    assert "; 5 earlier: " in waiting.words()  # 10 upstream instances: 5 named, 5 counted
    data = waiting.to_json()
    assert list(data["taskInstances"]) == [f"t_source#{i}" for i in range(5, 10)]
    assert sum(data["taskInstanceCounts"].values()) == 10


NAMES = st.text(alphabet="abcAB1_", min_size=3, max_size=8)


@given(st.sets(NAMES, max_size=25), NAMES)
def test_the_name_index_finds_what_comparing_every_pair_finds(names: set[str], name: str) -> None:
    index = similar.NameIndex(names)
    expected = sorted(other for other in names if similar.confusable(name, other))
    assert index.confusable_with(name) == expected


def test_the_name_index_compares_a_bounded_number_of_names() -> None:
    names = [f"t_page{i:05d}" for i in range(3000)] + ["t_pgae00007", "T_PAGE00008"]
    index = similar.NameIndex(names)
    compared = calls(lambda: [index.confusable_with(n) for n in names])
    per_name = compared / len(names)
    assert per_name <= similar.MAX_CANDIDATES + 20, per_name
    # An adjacent swap of digits is a typo too; one substituted digit is numbering.
    assert index.confusable_with("t_page00007") == ["t_page00070", "t_pgae00007"]
    assert index.confusable_with("t_page00008") == ["T_PAGE00008", "t_page00080"]
