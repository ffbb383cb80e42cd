"""End-to-end behaviour: cascades (a finished task fires its own name with its result)."""

from __future__ import annotations

from triggers_core import TriggerManager
from triggers_core.testing.assertions import (
    assert_instance_failed,
    assert_instance_finished,
    assert_instance_missing,
    assert_instance_unstarted,
    assert_unresolved_instances,
)
from triggers_core.testing.sample_tasks import DevNullTask, FailingTask, PassThruTask

PASS = PassThruTask.name
NULL = DevNullTask.name


def test_simple_cascade(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": NULL}, "t_b": {"after": ["t_a"], "run": PASS}}
    )
    manager.fire("x")
    assert_instance_finished(manager, "t_a#0", {})
    assert_instance_finished(manager, "t_b#0", {"kwargs": {"t_a": {}}})
    assert_unresolved_instances(manager, [])


def test_cascade_carries_the_result_as_kwargs(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": PASS}, "t_b": {"after": ["t_a"], "run": PASS}}
    )
    manager.fire("x", {"id": 7})
    assert_instance_finished(manager, "t_b#0", {"kwargs": {"t_a": {"kwargs": {"x": {"id": 7}}}}})
    assert manager.storage.latest_kwargs["t_a"] == {"kwargs": {"x": {"id": 7}}}
    assert manager.storage.latest_kwargs["t_b"] == {"kwargs": {"t_a": {"kwargs": {"x": {"id": 7}}}}}


def test_cascade_chain_of_three(manager: TriggerManager) -> None:
    manager.update_configuration(
        {
            "t_a": {"after": ["x"], "run": NULL},
            "t_b": {"after": ["t_a"], "run": NULL},
            "t_c": {"after": ["t_b"], "run": PASS},
        }
    )
    manager.fire("x")
    assert_instance_finished(manager, "t_c#0", {"kwargs": {"t_b": {}}})


def test_cascade_with_params_gains_but_never_loses_keys(manager: TriggerManager) -> None:
    manager.update_configuration(
        {
            "t_a": {"after": ["x"], "run": PASS},
            "t_b": {
                "after": ["t_a"],
                "run": PASS,
                "withParams": {"t_a": {"kwargs": {"x": {"id": 0, "extra": True}}, "top": 1}},
            },
        }
    )
    manager.fire("x", {"id": 7})
    assert_instance_finished(
        manager, "t_b#0", {"kwargs": {"t_a": {"kwargs": {"x": {"id": 7, "extra": True}}, "top": 1}}}
    )


def test_cascade_into_a_task_that_still_waits(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": PASS}, "t_b": {"after": ["t_a", "y"], "run": PASS}}
    )
    manager.fire("x", {"n": 1})
    assert_instance_finished(manager, "t_a#0", {"kwargs": {"x": {"n": 1}}})
    assert assert_instance_unstarted(manager, "t_b#0").kwargs == {
        "t_a": {"kwargs": {"x": {"n": 1}}}
    }
    manager.fire("y", {"n": 2})
    assert_instance_finished(
        manager, "t_b#0", {"kwargs": {"t_a": {"kwargs": {"x": {"n": 1}}}, "y": {"n": 2}}}
    )


def test_cascade_with_reversed_trigger_order(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": PASS}, "t_b": {"after": ["t_a", "y"], "run": PASS}}
    )
    manager.fire("y", {"n": 2})
    assert assert_instance_unstarted(manager, "t_b#0").kwargs == {"y": {"n": 2}}
    assert_instance_missing(manager, "t_a#0")
    manager.fire("x", {"n": 1})
    assert_instance_finished(
        manager, "t_b#0", {"kwargs": {"t_a": {"kwargs": {"x": {"n": 1}}}, "y": {"n": 2}}}
    )


def test_fan_out_and_fan_in(manager: TriggerManager) -> None:
    manager.update_configuration(
        {
            "t_a": {"after": ["x"], "run": NULL},
            "t_left": {"after": ["t_a"], "run": NULL},
            "t_right": {"after": ["t_a"], "run": NULL},
            "t_join": {"after": ["t_left", "t_right"], "run": PASS},
        }
    )
    scheduled = manager.fire("x")
    assert [i.name for i in scheduled] == ["t_a#0"]
    assert_instance_finished(manager, "t_join#0", {"kwargs": {"t_left": {}, "t_right": {}}})
    assert sorted(manager.storage.instances) == ["t_a#0", "t_join#0", "t_left#0", "t_right#0"]


def test_failed_task_does_not_cascade(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": FailingTask.name}, "t_b": {"after": ["t_a"], "run": PASS}}
    )
    manager.fire("x")
    assert_instance_failed(manager, "t_a#0", RuntimeError)
    assert_instance_missing(manager, "t_b#0")
    assert "t_a" not in manager.storage.latest_kwargs
    assert_unresolved_instances(manager, ["t_a#0"])
