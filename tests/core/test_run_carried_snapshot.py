"""The outcome's commit computes first on the snapshot the start left (issue 22).

``run_instance`` loads, at the start, what the outcome's commit needs too (the
cascade's instances and the guard record), and the outcome's first attempt
computes on the state the start committed, at the version the storage
returned: no load when nothing else wrote the session meanwhile. When
something did, that attempt's compare-and-swap fails and the commit loads
again. Each test here fails if the outcome were committed on a stale or
partial snapshot (a cascade into a new instance instead of the waiting one, a
lost write), on every storage kind of the behaviour suite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import pytest

from triggers_core import (
    AsyncTriggerManager,
    MemoryStore,
    TaskContext,
    TriggerManager,
    TriggerTask,
)
from triggers_core.engine.scopes import Scope, Selector
from triggers_core.engine.state import Status, TaskInstance
from triggers_core.runtime.async_memory import AsyncMemoryStorage
from triggers_core.runtime.storage import Snapshot, Storage
from triggers_core.testing.sample_tasks import DevNullTask
from triggers_core.testing.storage_contract import RecordingRunner

CONFIG = {
    "t_a": {"after": ["x"], "run": DevNullTask.name},
    "t_b": {"after": ["t_a", "y"], "run": DevNullTask.name},
}


@pytest.fixture
def loads() -> Callable[[Storage], list[Any]]:
    """Count the loads of a storage object (the storage itself stays real)."""

    def watch(storage: Storage) -> list[Any]:
        seen: list[Any] = []
        inner = storage.load

        def load(scope: Scope | Selector = Scope()) -> Snapshot:  # noqa: B008
            seen.append(scope)
            return inner(scope)

        storage.load = load  # type: ignore[method-assign]
        return seen

    return watch


def _manager(storage: Storage) -> tuple[TriggerManager, RecordingRunner]:
    runner = RecordingRunner()
    return TriggerManager(storage, runners={"rec": runner}, default_runner="rec"), runner


def _names(storage: Storage) -> dict[str, Status]:
    return {n: i.status for n, i in storage.load_full().state.instances.items()}


def test_a_finish_nothing_else_wrote_loads_nothing_and_cascades_into_the_waiting_instance(
    every_storage_factory: Callable[[str], Storage],
    session_uid: str,
    loads: Callable[[Storage], list[Any]],
) -> None:
    storage = every_storage_factory(session_uid)
    manager, runner = _manager(storage)
    manager.update_configuration(CONFIG)
    manager.fire("y", {"y": 1})  # t_b#0 waits for t_a
    manager.fire("x", {"x": 1})
    seen = loads(storage)

    finished = manager.run_instance("t_a#0")

    assert finished is not None
    assert finished.status is Status.FINISHED
    assert len(seen) == 1  # the start's load; the finish computed on what the start left
    # The snapshot carried the waiting instance: the cascade scheduled it (a snapshot
    # without it would have made a new t_b#1).
    assert _names(every_storage_factory(session_uid)) == {
        "t_a#0": Status.FINISHED,
        "t_b#0": Status.SCHEDULED,
    }
    assert runner.dispatched[-1] == "t_b#0"
    instance = every_storage_factory(session_uid).load_full().state.instances["t_b#0"]
    assert instance.kwargs["y"] == {"y": 1}


def test_a_write_between_start_and_finish_makes_the_finish_load_again(
    every_storage_factory: Callable[[str], Storage],
    session_uid: str,
    loads: Callable[[Storage], list[Any]],
) -> None:
    storage = every_storage_factory(session_uid)
    manager, runner = _manager(storage)
    manager.update_configuration(CONFIG)
    manager.fire("x", {"x": 1})
    other, _ = _manager(every_storage_factory(session_uid))  # another process's writer
    seen = loads(storage)

    def meanwhile(instance: TaskInstance) -> None:
        other.fire("y", {"y": 2})  # creates t_b#0, waiting for t_a: unknown to the start

    finished = manager.run_instance("t_a#0", on_started=meanwhile)

    assert finished is not None
    assert finished.status is Status.FINISHED
    # The carried attempt was stale (its compare-and-swap lost), so the finish loaded.
    assert len(seen) == 2
    assert _names(every_storage_factory(session_uid)) == {
        "t_a#0": Status.FINISHED,
        "t_b#0": Status.SCHEDULED,
    }
    assert runner.dispatched[-1] == "t_b#0"


class FiresY(TriggerTask):
    """Fires ``y`` on its own session, then returns."""

    name: ClassVar[str] = "tests.core.carried.FiresY"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        context.manager.fire("y", {"from": "body"})
        return {"done": True}


def test_a_body_that_fires_its_own_session_is_kept_by_the_finish(
    every_storage_factory: Callable[[str], Storage], session_uid: str
) -> None:
    storage = every_storage_factory(session_uid)
    manager, _ = _manager(storage)
    manager.update_configuration(
        {
            "t_a": {"after": ["x"], "run": FiresY.name},
            "t_b": {"after": ["t_a", "y"], "run": DevNullTask.name},
            "t_c": {"after": ["y"], "run": DevNullTask.name},
        }
    )
    manager.fire("x", {})

    finished = manager.run_instance("t_a#0")

    assert finished is not None
    assert finished.status is Status.FINISHED
    state = every_storage_factory(session_uid).load_full().state
    assert {n: i.status for n, i in state.instances.items()} == {
        "t_a#0": Status.FINISHED,
        "t_b#0": Status.SCHEDULED,
        "t_c#0": Status.SCHEDULED,
    }
    assert state.instances["t_b#0"].kwargs["y"] == {"from": "body"}


def test_the_async_face_carries_the_snapshot_too(session_uid: str) -> None:
    storage = AsyncMemoryStorage(session_uid, MemoryStore())
    runner = RecordingRunner()
    manager = AsyncTriggerManager(storage, runners={"rec": runner}, default_runner="rec")
    seen: list[Any] = []
    inner = storage.load

    async def load(scope: Scope | Selector = Scope()) -> Snapshot:  # noqa: B008
        seen.append(scope)
        return await inner(scope)

    async def scenario() -> TaskInstance | None:
        await manager.update_configuration(CONFIG)
        await manager.fire("y", {"y": 1})
        await manager.fire("x", {"x": 1})
        storage.load = load  # type: ignore[method-assign]
        return await manager.run_instance("t_a#0")

    finished = asyncio.run(scenario())

    assert finished is not None
    assert finished.status is Status.FINISHED
    assert len(seen) == 1
    state = storage.sync.load_full().state
    assert {n: i.status for n, i in state.instances.items()} == {
        "t_a#0": Status.FINISHED,
        "t_b#0": Status.SCHEDULED,
    }
