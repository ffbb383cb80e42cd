"""End-to-end behaviour: ``andEvery`` (a new instance each time a trigger fires)."""

from __future__ import annotations

from triggers_core import TriggerManager
from triggers_core.testing.assertions import (
    assert_instance_finished,
    assert_instance_missing,
    assert_instance_unstarted,
    assert_unresolved_instances,
)
from triggers_core.testing.sample_tasks import DevNullTask, PassThruTask

PASS = PassThruTask.name
NULL = DevNullTask.name


def test_tasks_are_one_shot_by_default(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["page"], "run": PASS}})
    for n in range(3):
        manager.fire("page", {"n": n})
    assert_instance_finished(manager, "t_a#0", {"kwargs": {"page": {"n": 0}}})
    assert list(manager.storage.instances) == ["t_a#0"]


def test_and_every_creates_an_instance_per_firing(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": [], "andEvery": "page", "run": PASS}})
    for n in range(3):
        assert [i.name for i in manager.fire("page", {"n": n})] == [f"t_a#{n}"]
    for n in range(3):
        assert_instance_finished(manager, f"t_a#{n}", {"kwargs": {"page": {"n": n}}})
    assert list(manager.storage.instances) == ["t_a#0", "t_a#1", "t_a#2"]


def test_and_every_kwargs_per_firing_with_other_triggers_first(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["start"], "andEvery": "page", "run": PASS}})
    assert manager.fire("start", {"s": 1}) == []
    # The first firing of a trigger creates the instance even if it is not andEvery.
    assert assert_instance_unstarted(manager, "t_a#0").kwargs == {"start": {"s": 1}}
    manager.fire("page", {"n": 0})
    manager.fire("page", {"n": 1})
    assert_instance_finished(manager, "t_a#0", {"kwargs": {"start": {"s": 1}, "page": {"n": 0}}})
    assert_instance_finished(manager, "t_a#1", {"kwargs": {"start": {"s": 1}, "page": {"n": 1}}})
    assert_instance_missing(manager, "t_a#2")


def test_and_every_deferred_kwargs(manager: TriggerManager) -> None:
    """Pages that arrive before ``start`` wait; ``start`` releases all of them."""
    manager.update_configuration({"t_a": {"after": ["start"], "andEvery": "page", "run": PASS}})
    manager.fire("page", {"n": 0})
    manager.fire("page", {"n": 1})
    assert assert_instance_unstarted(manager, "t_a#0").kwargs == {"page": {"n": 0}}
    assert assert_instance_unstarted(manager, "t_a#1").kwargs == {"page": {"n": 1}}
    scheduled = manager.fire("start", {"s": 1})
    assert [i.name for i in scheduled] == ["t_a#0", "t_a#1"]
    manager.fire("page", {"n": 2})
    for n in range(3):
        assert_instance_finished(
            manager, f"t_a#{n}", {"kwargs": {"start": {"s": 1}, "page": {"n": n}}}
        )
    assert_unresolved_instances(manager, [])


def test_and_every_with_complex_triggers(manager: TriggerManager) -> None:
    manager.update_configuration(
        {
            "t_a": {
                "after": ["start", "consent"],
                "andEvery": "page",
                "run": PASS,
                "withParams": {"page": {"lang": "en"}},
            }
        }
    )
    manager.fire("page", {"n": 0})
    manager.fire("start", {"s": 1})
    manager.fire("page", {"n": 1})
    assert assert_instance_unstarted(manager, "t_a#0").kwargs == {
        "page": {"n": 0},
        "start": {"s": 1},
    }
    assert assert_instance_unstarted(manager, "t_a#1").kwargs == {
        "page": {"n": 1},
        "start": {"s": 1},
    }
    assert [i.name for i in manager.fire("consent", {"c": True})] == ["t_a#0", "t_a#1"]
    manager.fire("page", {"n": 2})
    for n in range(3):
        assert_instance_finished(
            manager,
            f"t_a#{n}",
            {"kwargs": {"page": {"n": n, "lang": "en"}, "start": {"s": 1}, "consent": {"c": True}}},
        )
    assert_instance_missing(manager, "t_a#3")


def test_and_every_cascades_into_and_every(manager: TriggerManager) -> None:
    manager.update_configuration(
        {
            "t_page": {"after": [], "andEvery": "page", "run": PASS},
            "t_each": {"after": [], "andEvery": "t_page", "run": PASS},
        }
    )
    for n in range(3):
        manager.fire("page", {"n": n})
        # Wait for each page: pages finishing concurrently cascade in any order.
        assert_instance_finished(
            manager, f"t_each#{n}", {"kwargs": {"t_page": {"kwargs": {"page": {"n": n}}}}}
        )
    assert_instance_missing(manager, "t_each#3")


def test_one_shot_cascade_from_and_every_runs_once(manager: TriggerManager) -> None:
    manager.update_configuration(
        {
            "t_page": {"after": [], "andEvery": "page", "run": PASS},
            "t_once": {"after": ["t_page"], "run": PASS},
        }
    )
    for n in range(3):
        manager.fire("page", {"n": n})
        assert_instance_finished(manager, f"t_page#{n}")
    assert_instance_finished(
        manager, "t_once#0", {"kwargs": {"t_page": {"kwargs": {"page": {"n": 0}}}}}
    )
    assert_instance_missing(manager, "t_once#1")
    assert manager.storage.latest_kwargs["t_page"] == {"kwargs": {"page": {"n": 2}}}


def test_and_every_cascade_from_one_shot_runs_once(manager: TriggerManager) -> None:
    manager.update_configuration(
        {
            "t_once": {"after": ["start"], "run": PASS},
            "t_every": {"after": ["page"], "andEvery": "t_once", "run": PASS},
        }
    )
    manager.fire("page", {"n": 0})
    manager.fire("start", {"s": 1})
    manager.fire("start", {"s": 2})
    assert_instance_finished(
        manager,
        "t_every#0",
        {"kwargs": {"page": {"n": 0}, "t_once": {"kwargs": {"start": {"s": 1}}}}},
    )
    assert_instance_missing(manager, "t_once#1")
    assert_instance_missing(manager, "t_every#1")


def test_and_every_trigger_seeds_later_instances_with_latest_kwargs(
    manager: TriggerManager,
) -> None:
    manager.update_configuration({"t_a": {"after": ["user"], "andEvery": "page", "run": NULL}})
    manager.fire("user", {"v": 1})
    manager.fire("page", {"n": 0})
    manager.fire("user", {"v": 2})
    manager.fire("page", {"n": 1})
    assert assert_instance_finished(manager, "t_a#0").kwargs == {
        "user": {"v": 1},
        "page": {"n": 0},
    }
    assert assert_instance_finished(manager, "t_a#1").kwargs == {
        "user": {"v": 2},
        "page": {"n": 1},
    }
