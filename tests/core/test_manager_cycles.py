"""End-to-end: tasks that would create each other without end never run away.

The first line of defence refuses such configurations (``andEvery`` cycles);
the second bounds the depth of cascades at run time, for sessions stored
before the check existed (or written around it).
"""

from __future__ import annotations

from typing import Any

import pytest

from triggers_core import (
    CascadeDepthExceeded,
    ConfigurationError,
    SessionState,
    Status,
    TriggerManager,
)
from triggers_core.engine.config import parse_task_config
from triggers_core.engine.scopes import Changes
from triggers_core.testing.assertions import (
    assert_instance_failed,
    assert_instance_finished,
    wait_for_tasks,
)
from triggers_core.testing.sample_tasks import DevNullTask, PassThruTask

NOOP = DevNullTask.name


def store_unchecked(manager: TriggerManager, raw: dict[str, Any]) -> None:
    """Store a configuration as an older version would have: without the cycle check."""
    problems: list[str] = []
    tasks = {}
    for name, directives in raw.items():
        task = parse_task_config(name, directives, problems)
        assert task is not None, problems
        tasks[name] = task
    snapshot = manager.storage.load()
    manager.storage.compare_and_swap(
        snapshot.version, SessionState(tasks=tasks), Changes(config=True)
    )


def test_and_every_naming_its_own_task_is_refused_and_nothing_is_stored(
    manager: TriggerManager,
) -> None:
    with pytest.raises(ConfigurationError, match=r"t_a\.andEvery: cycle t_a -> t_a"):
        manager.update_configuration({"t_a": {"after": ["x"], "andEvery": "t_a", "run": NOOP}})
    assert manager.storage.load().version is None
    assert manager.storage.tasks == {}


def test_a_cycle_through_stored_tasks_is_refused_and_nothing_is_stored(
    manager: TriggerManager,
) -> None:
    manager.update_configuration({"t_a": {"after": ["go"], "andEvery": "t_b", "run": NOOP}})
    stored = dict(manager.storage.tasks)
    with pytest.raises(ConfigurationError) as caught:
        manager.update_configuration({"t_b": {"after": [], "andEvery": "t_a", "run": NOOP}})
    assert caught.value.problems[0].startswith("t_a.andEvery: cycle t_a -> t_b -> t_a:")
    assert dict(manager.storage.tasks) == stored
    assert manager.storage.load().version == 1


def test_a_stored_cycle_stops_at_the_cascade_depth_bound(manager: TriggerManager) -> None:
    manager.max_cascade_depth = 5
    store_unchecked(
        manager,
        {
            "t_a": {"after": [], "andEvery": "t_b", "run": NOOP},
            "t_b": {"after": [], "andEvery": "t_a", "run": NOOP},
        },
    )
    manager.fire("t_a")  # by hand: starts t_b#0, whose cascade starts t_a#0, and so on
    wait_for_tasks(manager)

    instances = manager.storage.instances
    finished = sorted(n for n, i in instances.items() if i.status is Status.FINISHED)
    assert finished == ["t_a#0", "t_a#1", "t_a#2", "t_b#0", "t_b#1", "t_b#2"]
    depths = {name: i.metadata.get("cascadeDepth", 0) for name, i in instances.items()}
    assert depths == {
        "t_b#0": 0,
        "t_a#0": 1,
        "t_b#1": 2,
        "t_a#1": 3,
        "t_b#2": 4,
        "t_a#2": 5,
        "t_b#3": 6,
    }
    stopped = assert_instance_failed(manager, "t_b#3", CascadeDepthExceeded)
    assert "chain of 6 cascades" in stopped.metadata["exceptionInfo"]
    assert "max_cascade_depth=5" in stopped.metadata["exceptionInfo"]
    assert stopped.metadata["exceptionContext"] == {"cascadeDepth": 6, "maxCascadeDepth": 5}

    # Replaying runs it anyway (an operator's decision); its cascade stops again.
    clone = manager.replay_failed_instance("t_b#3")
    wait_for_tasks(manager)
    assert_instance_finished(manager, clone.name)
    assert manager.storage[clone.name].metadata["cascadeDepth"] == 6
    assert_instance_failed(manager, "t_a#3", CascadeDepthExceeded)
    assert len(manager.storage.instances) == 9


def test_a_long_chain_of_distinct_tasks_is_bounded_too(manager: TriggerManager) -> None:
    manager.max_cascade_depth = 2
    manager.update_configuration(
        {
            "t_1": {"after": ["x"], "run": PassThruTask.name},
            "t_2": {"after": ["t_1"], "run": NOOP},
            "t_3": {"after": ["t_2"], "run": NOOP},
            "t_4": {"after": ["t_3"], "run": NOOP},
        }
    )
    manager.fire("x")
    wait_for_tasks(manager)
    assert_instance_finished(manager, "t_2#0")
    assert manager.storage["t_2#0"].metadata["cascadeDepth"] == 1
    assert manager.storage["t_3#0"].metadata["cascadeDepth"] == 2
    assert_instance_finished(manager, "t_3#0")
    assert_instance_failed(manager, "t_4#0", CascadeDepthExceeded)


def test_the_default_bound_is_documented_and_generous() -> None:
    assert TriggerManager.max_cascade_depth == 1000
