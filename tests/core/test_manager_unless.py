"""End-to-end behaviour: ``unless`` (abandon unstarted instances once all have fired)."""

from __future__ import annotations

from triggers_core import TriggerManager
from triggers_core.testing.assertions import (
    assert_instance_abandoned,
    assert_instance_finished,
    assert_instance_missing,
    assert_instance_unstarted,
    assert_unresolved_instances,
    assert_unresolved_tasks,
)
from triggers_core.testing.sample_tasks import PassThruTask

PASS = PassThruTask.name


def test_unless_abandons_an_unstarted_instance(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x", "y"], "unless": ["stop"], "run": PASS}})
    manager.fire("x")
    assert_instance_unstarted(manager, "t_a#0")
    assert manager.fire("stop") == []
    instance = assert_instance_abandoned(manager, "t_a#0")
    assert instance.unless_fired == frozenset({"stop"})
    assert "abandoned" in instance.metadata["timestamps"]
    assert manager.fire("y") == []
    assert_instance_abandoned(manager, "t_a#0")
    assert_instance_missing(manager, "t_a#1")
    assert_unresolved_instances(manager, [])
    assert_unresolved_tasks(manager, [])


def test_unless_firing_first_creates_an_abandoned_instance(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "unless": ["stop"], "run": PASS}})
    manager.fire("stop")
    assert assert_instance_abandoned(manager, "t_a#0").kwargs == {}
    assert manager.fire("x") == []
    assert list(manager.storage.instances) == ["t_a#0"]


def test_unless_needs_all_of_its_triggers(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x", "y"], "unless": ["stop1", "stop2"], "run": PASS}}
    )
    manager.fire("x")
    manager.fire("stop1")
    assert assert_instance_unstarted(manager, "t_a#0").unless_fired == frozenset({"stop1"})
    manager.fire("stop2")
    assert_instance_abandoned(manager, "t_a#0")


def test_part_of_unless_does_not_prevent_the_run(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x", "y"], "unless": ["stop1", "stop2"], "run": PASS}}
    )
    manager.fire("stop2")
    manager.fire("x", {"n": 1})
    manager.fire("y", {"n": 2})
    instance = assert_instance_finished(
        manager, "t_a#0", {"kwargs": {"x": {"n": 1}, "y": {"n": 2}}}
    )
    assert instance.unless_fired == frozenset({"stop2"})
    manager.fire("stop1")
    assert_instance_finished(manager, "t_a#0")


def test_unless_with_and_every(manager: TriggerManager) -> None:
    manager.update_configuration(
        {
            "t_page": {
                "after": ["start"],
                "andEvery": "page",
                "unless": ["finalized"],
                "run": PASS,
            }
        }
    )
    manager.fire("start", {"s": 1})
    manager.fire("page", {"n": 0})
    assert_instance_finished(manager, "t_page#0", {"kwargs": {"start": {"s": 1}, "page": {"n": 0}}})
    manager.fire("finalized")
    manager.fire("page", {"n": 1})
    # A new instance is seeded with the unless triggers that already fired.
    instance = assert_instance_abandoned(manager, "t_page#1")
    assert instance.kwargs == {"start": {"s": 1}, "page": {"n": 1}}
    assert instance.unless_fired == frozenset({"finalized"})
    assert_instance_finished(manager, "t_page#0")


def test_unless_abandons_every_waiting_and_every_instance(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_page": {"after": ["start"], "andEvery": "page", "unless": ["stop"], "run": PASS}}
    )
    manager.fire("page", {"n": 0})
    manager.fire("page", {"n": 1})
    manager.fire("stop")
    assert_instance_abandoned(manager, "t_page#0")
    assert_instance_abandoned(manager, "t_page#1")
    assert manager.fire("start") == []
    assert_instance_missing(manager, "t_page#2")


def test_unless_after_the_instance_already_ran(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "unless": ["stop"], "run": PASS}})
    manager.fire("x", {"n": 1})
    assert_instance_finished(manager, "t_a#0", {"kwargs": {"x": {"n": 1}}})
    assert manager.fire("stop") == []
    instance = assert_instance_finished(manager, "t_a#0", {"kwargs": {"x": {"n": 1}}})
    assert instance.unless_fired == frozenset()
    assert_instance_missing(manager, "t_a#1")


def test_unless_on_one_task_leaves_others_alone(manager: TriggerManager) -> None:
    manager.update_configuration(
        {
            "t_reminder": {"after": ["start", "due"], "unless": ["done"], "run": PASS},
            "t_report": {"after": ["start", "done"], "run": PASS},
        }
    )
    manager.fire("start")
    manager.fire("done")
    assert_instance_abandoned(manager, "t_reminder#0")
    assert_instance_finished(manager, "t_report#0", {"kwargs": {"start": {}, "done": {}}})
