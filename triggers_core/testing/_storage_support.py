"""What the parts of the storage contract share: the sessions they write and how they compare.

Every part writes states over the same two tasks (:data:`CONFIG`), built by
:func:`make_state` from instances made by :func:`sample_instance`, and
compares what is stored through the JSON the serialization writes, so that a
difference shows as a readable diff. :class:`StorageCase` is the base of each
part (see :mod:`triggers_core.testing.storage_contract`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from triggers_core import engine
from triggers_core.engine.scopes import Changes
from triggers_core.engine.serialization import header_to_json, instance_to_json, tasks_to_json
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.runtime.storage import Snapshot, Storage, Version
from triggers_core.testing._contract_support import StorageContractBase, state_with

__all__ = [
    "CONFIG",
    "TASKS",
    "StorageCase",
    "assert_working_set",
    "header_json",
    "instances_json",
    "make_state",
    "sample_instance",
    "writing",
]

#: The configuration every part's sessions are written with.
CONFIG: Mapping[str, Any] = {
    "t_alpha": {"after": ["a"], "run": "contract_task"},
    "t_beta": {"after": ["a", "b"], "unless": ["c"], "run": "contract_task"},
}
TASKS = engine.update_configuration(SessionState(), CONFIG).state.tasks


def make_state(
    instances: Iterable[TaskInstance] = (),
    *,
    latest_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
) -> SessionState:
    """A state over the suite's two tasks holding ``instances`` (counters follow them)."""
    return state_with(TASKS, instances, latest_kwargs=latest_kwargs)


def sample_instance(
    name: str, status: Status = Status.UNSTARTED, marker: object = 0
) -> TaskInstance:
    """An instance ``name`` whose kwargs and metadata carry ``marker``."""
    task = name.rsplit("#", 1)[0]
    return TaskInstance(
        name=name,
        task_name=task,
        status=status,
        kwargs={"a": {"marker": marker}},
        metadata={"created": "2024-01-01T00:00:00+00:00", "marker": marker},
    )


def writing(names: Iterable[str], *, created: Iterable[str] = (), config: bool = True) -> Changes:
    """Changes writing ``names`` (and the configuration, unless told not to)."""
    return Changes(instances=frozenset(names), created=frozenset(created), config=config)


def header_json(state: SessionState) -> dict[str, Any]:
    """The header of ``state`` as stored, with its configuration."""
    return {**header_to_json(state), **tasks_to_json(state.tasks)}


def instances_json(instances: Mapping[str, TaskInstance]) -> dict[str, dict[str, Any]]:
    """Each instance as stored, by name."""
    return {name: instance_to_json(inst) for name, inst in instances.items()}


def assert_working_set(
    snapshot: Snapshot,
    header: dict[str, Any],
    stored: Mapping[str, TaskInstance],
    wanted: set[str],
    *,
    exact: bool,
) -> None:
    """``snapshot`` holds ``header`` and the ``wanted`` instances as ``stored`` has them.

    With ``exact`` it holds no other instance; without, it may hold more, each
    as stored.
    """
    got = set(snapshot.state.instances)
    assert wanted <= got
    if exact:
        assert got == wanted
    assert header_json(snapshot.state) == header
    for name in got:
        assert instance_to_json(snapshot.state.instances[name]) == instance_to_json(stored[name])


class StorageCase(StorageContractBase):
    """The base of each part of ``StorageContract`` that writes sessions of its own."""

    #: ``load(scope)`` returns exactly the instances the scope names (set False
    #: for a backend that keeps one document and always returns everything).
    exact_working_set: ClassVar[bool] = True

    def assert_stored(self, storage: Storage, state: SessionState, version: Version) -> None:
        """The session as stored equals ``state`` at ``version``."""
        snapshot = storage.load_full()
        assert snapshot.version == version
        assert header_json(snapshot.state) == header_json(state)
        assert instances_json(snapshot.state.instances) == instances_json(state.instances)
