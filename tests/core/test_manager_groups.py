"""End-to-end behaviour of condition groups (``anyOf``, ``atLeast``) on every backend.

Runs on the behaviour suite's storages (memory, SQLite, memcached, a Django
cache) and on PostgreSQL and MariaDB, so each rule of docs/configuration.md
("Condition groups") is checked where it is stored for real.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from triggers_core import (
    ConfigurationError,
    Storage,
    ThreadingTaskRunner,
    TriggerManager,
)
from triggers_core.engine.conditions import Group
from triggers_core.testing.assertions import (
    assert_instance_abandoned,
    assert_instance_finished,
    assert_instance_missing,
    assert_instance_unstarted,
)
from triggers_core.testing.sample_tasks import PassThruTask

PASS = PassThruTask.name


@pytest.fixture
def group_storage(every_storage_factory: Callable[[str], Storage]) -> Callable[[str], Storage]:
    """The behaviour suite's storages, then PostgreSQL and MariaDB (tests/conftest.py)."""
    return every_storage_factory


@pytest.fixture
def manager(
    group_storage: Callable[[str], Storage], session_uid: str, runner: ThreadingTaskRunner
) -> TriggerManager:
    return TriggerManager(group_storage(session_uid), runners={"threading": runner})


def finished(manager: TriggerManager, name: str, runner: ThreadingTaskRunner) -> Any:
    runner.join_all()
    return assert_instance_finished(manager, name)


def test_any_of_runs_on_the_first_member_and_records_later_ones_only_while_waiting(
    manager: TriggerManager, runner: ThreadingTaskRunner
) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x", {"anyOf": ["card", "paypal"]}], "run": PASS}}
    )
    assert manager.fire("paypal", {"p": 1}) == []
    assert manager.fire("paypal", {"p": 2}) == []  # first kwargs kept
    assert manager.fire("card", {"c": 1}) == []  # a member that fires while waiting is recorded
    scheduled = manager.fire("x", {"x": 1})
    assert [i.name for i in scheduled] == ["t_a#0"]
    instance = finished(manager, "t_a#0", runner)
    assert instance.kwargs == {"paypal": {"p": 1}, "card": {"c": 1}, "x": {"x": 1}}
    # A later fire of an already satisfied member does nothing.
    assert manager.fire("card", {"c": 2}) == []
    assert_instance_missing(manager, "t_a#1")


def test_at_least_counts_distinct_members(
    manager: TriggerManager, runner: ThreadingTaskRunner
) -> None:
    manager.update_configuration(
        {"t_q": {"after": [{"atLeast": 2, "of": ["r1", "r2", "r3"]}], "run": PASS}}
    )
    assert manager.fire("r2") == []
    assert manager.fire("r2") == []  # the same member twice is still one
    assert_instance_unstarted(manager, "t_q#0")
    assert [i.name for i in manager.fire("r3")] == ["t_q#0"]
    assert set(finished(manager, "t_q#0", runner).kwargs) == {"r2", "r3"}
    assert manager.fire("r1") == []


def test_nested_groups(manager: TriggerManager, runner: ThreadingTaskRunner) -> None:
    after = [{"anyOf": ["manual", {"atLeast": 2, "of": ["a", "b", {"anyOf": ["c", "d"]}]}]}]
    manager.update_configuration({"t_n": {"after": after, "run": PASS}})
    assert manager.fire("a") == []
    assert [i.name for i in manager.fire("d")] == ["t_n#0"]  # a + (c or d): two of three
    assert set(finished(manager, "t_n#0", runner).kwargs) == {"a", "d"}


def test_unless_any_of_abandons_on_one_member(manager: TriggerManager) -> None:
    manager.update_configuration(
        {
            "t_ship": {
                "after": ["paid", "packed"],
                "unless": [{"anyOf": ["cancelled", "refunded"]}],
                "run": PASS,
            }
        }
    )
    manager.fire("paid")
    manager.fire("refunded")
    instance = assert_instance_abandoned(manager, "t_ship#0")
    assert instance.unless_fired == frozenset({"refunded"})
    assert manager.fire("packed") == []


def test_unless_at_least_needs_n_members(manager: TriggerManager) -> None:
    manager.update_configuration(
        {
            "t_a": {
                "after": ["go", "set"],
                "unless": [{"atLeast": 2, "of": ["v1", "v2", "v3"]}],
                "run": PASS,
            }
        }
    )
    manager.fire("go")
    manager.fire("v3")
    assert assert_instance_unstarted(manager, "t_a#0").unless_fired == frozenset({"v3"})
    manager.fire("v1")
    assert_instance_abandoned(manager, "t_a#0")


def test_and_every_seeds_new_instances_with_group_members_that_fired(
    manager: TriggerManager, runner: ThreadingTaskRunner
) -> None:
    manager.update_configuration(
        {"t_e": {"after": [{"anyOf": ["a", "b"]}], "andEvery": "tick", "run": PASS}}
    )
    assert manager.fire("tick") == []  # t_e#0 waits for a or b
    assert [i.name for i in manager.fire("b", {"b": 1})] == ["t_e#0"]
    # Each later tick: a new instance, seeded with b's latest kwargs: ready at once.
    assert [i.name for i in manager.fire("tick", {"n": 2})] == ["t_e#1"]
    assert finished(manager, "t_e#1", runner).kwargs == {"b": {"b": 1}, "tick": {"n": 2}}


def test_a_cascade_can_be_a_group_member(
    manager: TriggerManager, runner: ThreadingTaskRunner
) -> None:
    manager.update_configuration(
        {
            "t_fast": {"after": ["start"], "run": PASS},
            "t_slow": {"after": ["never"], "run": PASS},
            "t_end": {"after": [{"anyOf": ["t_fast", "t_slow"]}], "run": PASS},
        }
    )
    manager.fire("start", {"s": 1})
    runner.join_all()
    end = finished(manager, "t_end#0", runner)
    assert list(end.kwargs) == ["t_fast"]


def test_groups_survive_the_storage_round_trip(
    manager: TriggerManager, group_storage: Callable[[str], Storage]
) -> None:
    after = ["x", {"anyOf": ["a", {"atLeast": 2, "of": ["b", "c", "d"]}]}]
    unless = [{"anyOf": ["u"]}]
    manager.update_configuration({"t_a": {"after": after, "unless": unless, "run": PASS}})
    task = group_storage(manager.uid).tasks["t_a"]  # a fresh storage object reads it back
    assert task.to_json()["after"] == after
    assert task.after[1] == Group(("a", Group(("b", "c", "d"), 2)))
    assert task.unless == (Group(("u",)),)


def test_an_invalid_group_changes_nothing(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "run": PASS}})
    with pytest.raises(ConfigurationError) as info:
        manager.update_configuration(
            {
                "t_a": {"after": [{"atLeast": 4, "of": ["a", "b"]}], "run": PASS},
                "t_b": {"after": [{"anyOf": []}], "run": PASS},
            }
        )
    assert info.value.problems == (
        "t_a.after[0].atLeast: must be from 1 to 2 (the number of members), got 4",
        "t_b.after[0].anyOf: a group must have at least one member",
    )
    assert manager.storage.tasks["t_a"].after == ("x",)
    assert "t_b" not in manager.storage.tasks
