"""The read-only inspection API, through ``manager.storage`` or a bare storage object."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from triggers_core import Status, Storage, TaskConfig, ThreadingTaskRunner, TriggerManager
from triggers_core.testing.assertions import (
    assert_instance_abandoned,
    assert_instance_failed,
    assert_instance_finished,
    assert_instance_unstarted,
)
from triggers_core.testing.sample_tasks import DevNullTask, FailingTask, PassThruTask

CONFIG = {
    "t_done": {"after": ["x"], "run": PassThruTask.name},
    "t_broken": {"after": ["x"], "run": FailingTask.name},
    "t_waiting": {"after": ["x", "y"], "run": DevNullTask.name},
    "t_stopped": {"after": ["x", "z"], "unless": ["stop"], "run": DevNullTask.name},
    "t_idle": {"after": ["never"], "run": DevNullTask.name, "note": "kept"},
}


@pytest.fixture
def storage(storage_factory: Callable[[str], Storage], session_uid: str) -> Storage:
    return storage_factory(session_uid)


@pytest.fixture
def manager(storage: Storage, runner: ThreadingTaskRunner) -> TriggerManager:
    """A session with one instance of each interesting kind."""
    manager = TriggerManager(storage, runners={"threading": runner})
    manager.update_configuration(CONFIG)
    manager.fire("x", {"n": 1})
    manager.fire("stop")
    assert_instance_finished(manager, "t_done#0", {"kwargs": {"x": {"n": 1}}})
    assert_instance_failed(manager, "t_broken#0", RuntimeError)
    assert_instance_unstarted(manager, "t_waiting#0")
    assert_instance_abandoned(manager, "t_stopped#0")
    return manager


EXPECTED_STATUSES = {
    "t_broken#0": Status.FAILED,
    "t_done#0": Status.FINISHED,
    "t_stopped#0": Status.ABANDONED,
    "t_waiting#0": Status.UNSTARTED,
}


def reopened(manager: TriggerManager, storage_factory: Callable[[str], Storage]) -> Storage:
    """A separate storage object on the same session: read-only use needs nothing else."""
    return storage_factory(manager.uid)


def test_tasks(manager: TriggerManager) -> None:
    tasks = manager.storage.tasks
    assert sorted(tasks) == sorted(CONFIG)
    assert all(isinstance(t, TaskConfig) for t in tasks.values())
    assert tasks["t_stopped"].unless == ("stop",)
    assert tasks["t_idle"].extras == {"note": "kept"}
    assert {name: t.to_json() for name, t in tasks.items()} == CONFIG


def test_instances_mapping_and_getitem(
    manager: TriggerManager, storage_factory: Callable[[str], Storage]
) -> None:
    storage = reopened(manager, storage_factory)
    instances = storage.instances
    assert {name: i.status for name, i in instances.items()} == EXPECTED_STATUSES
    assert storage["t_done#0"] == instances["t_done#0"]
    assert storage["t_done#0"].metadata["result"] == {"kwargs": {"x": {"n": 1}}}
    assert "t_done#0" in storage
    assert "t_done#1" not in storage
    assert len(storage) == 4


def test_iteration_yields_instances_in_task_then_number_order(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_pages": {"after": [], "andEvery": "page", "run": DevNullTask.name}}
    )
    for _ in range(11):
        manager.fire("page")
    names = [i.name for i in manager.storage]
    pages = [f"t_pages#{n}" for n in range(11)]
    assert names == ["t_broken#0", "t_done#0", *pages, "t_stopped#0", "t_waiting#0"]


def test_instances_of_task(manager: TriggerManager) -> None:
    assert [i.name for i in manager.storage.instances_of_task("t_done")] == ["t_done#0"]
    task = manager.storage.tasks["t_waiting"]
    assert [i.name for i in manager.storage.instances_of_task(task)] == ["t_waiting#0"]
    assert manager.storage.instances_of_task("t_idle") == []
    assert manager.storage.instances_of_task("t_unknown") == []


def test_get_unresolved_tasks(manager: TriggerManager) -> None:
    # t_idle has no instance yet; t_broken and t_waiting have unresolved ones.
    names = [t.name for t in manager.storage.get_unresolved_tasks()]
    assert names == ["t_broken", "t_idle", "t_waiting"]


def test_get_unresolved_instances(manager: TriggerManager) -> None:
    names = [i.name for i in manager.storage.get_unresolved_instances()]
    assert names == ["t_broken#0", "t_waiting#0"]


def test_get_instances_with_unresolved_logs(manager: TriggerManager) -> None:
    names = [i.name for i in manager.storage.get_instances_with_unresolved_logs()]
    assert names == ["t_broken#0"]


def test_latest_kwargs(manager: TriggerManager) -> None:
    assert manager.storage.latest_kwargs == {
        "x": {"n": 1},
        "stop": {},
        "t_done": {"kwargs": {"x": {"n": 1}}},
    }


def test_debug_repr_is_json_and_complete(
    manager: TriggerManager, storage_factory: Callable[[str], Storage]
) -> None:
    dump = reopened(manager, storage_factory).debug_repr()
    assert json.loads(json.dumps(dump)) == dump
    assert dump["uid"] == manager.uid
    assert sorted(dump["tasks"]) == sorted(CONFIG)
    assert sorted(dump["instances"]) == sorted(EXPECTED_STATUSES)
    assert dump["instances"]["t_broken#0"]["status"] == "failed"
    assert dump["latestKwargs"] == manager.storage.latest_kwargs
    assert dump["counters"] == {"t_broken": 1, "t_done": 1, "t_stopped": 1, "t_waiting": 1}


def test_instance_properties(manager: TriggerManager) -> None:
    storage = manager.storage
    flags = {
        name: (i.can_run, i.can_schedule, i.can_abandon, i.can_replay, i.can_skip, i.is_resolved)
        for name, i in storage.instances.items()
    }
    assert flags == {
        "t_broken#0": (False, False, False, True, True, False),
        "t_done#0": (False, False, False, False, False, True),
        "t_stopped#0": (False, False, False, False, False, True),
        "t_waiting#0": (False, True, True, False, False, False),
    }
    done = storage["t_done#0"].metadata
    assert set(done["timestamps"]) == {"unstarted", "scheduled", "running", "finished"}
    assert done["created"] == done["timestamps"]["unstarted"]
    assert done["lastModified"] == done["timestamps"]["finished"]


def test_empty_session(storage: Storage) -> None:
    assert storage.tasks == {}
    assert storage.instances == {}
    assert list(storage) == []
    assert storage.latest_kwargs == {}
    assert storage.get_unresolved_tasks() == []
    assert storage.get_unresolved_instances() == []
    assert storage.get_instances_with_unresolved_logs() == []
    assert storage.debug_repr()["instances"] == {}
    with pytest.raises(KeyError, match="t_a#0"):
        storage["t_a#0"]
