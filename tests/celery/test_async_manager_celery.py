"""The async manager hands Celery instances through the synchronous manager a worker rebuilds."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from kombu import Connection
from worker_app import make_app

from triggers_celery import CeleryTaskRunner
from triggers_core import (
    AsyncMemoryStorage,
    AsyncStorage,
    AsyncTriggerManager,
    MemoryStore,
    Status,
    Storage,
    open_storage,
)
from triggers_core.runtime.async_storage import NamedStorage


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'async-units.db'}?triggers_create_schema=true"


class NamedAfter(AsyncMemoryStorage):
    """An async storage whose store is named like ``twin`` (as an async SQL storage is)."""

    def __init__(self, uid: str, twin: Storage) -> None:
        super().__init__(uid, MemoryStore())
        self.twin_reference = twin.reference()
        self.backend_name = twin.backend_name  # type: ignore[misc]

    def reference(self) -> str | None:
        return self.twin_reference

    def sync_twin(self) -> Storage:
        return AsyncStorage.sync_twin(self)  # the default: a storage that only names


@pytest.fixture
def queue_app(sqlite_url: str) -> Iterator[Celery]:
    app = make_app(f"memory://localhost/{uuid.uuid4().hex}", "async-units", {"main": sqlite_url})
    yield app
    app.close()


def test_a_published_message_names_the_storage_and_the_sync_manager(
    queue_app: Celery, sqlite_url: str
) -> None:
    uid = f"async-celery-{uuid.uuid4().hex[:12]}"
    storage = NamedAfter(uid, open_storage(sqlite_url, uid))
    twin = storage.sync_twin()
    assert isinstance(twin, NamedStorage)
    assert twin.reference() == storage.reference()

    async def scenario() -> None:
        m = AsyncTriggerManager(storage, runners={"celery": CeleryTaskRunner(queue_app)})
        await m.update_configuration(
            {"t": {"after": ["go"], "run": "triggers.PassThruTask", "using": "celery"}}
        )
        assert [i.name for i in await m.fire("go", {"x": 1})] == ["t#0"]
        assert (await m.get_instance("t#0")).status is Status.SCHEDULED

    asyncio.run(scenario())
    with Connection(queue_app.conf.broker_url) as conn:
        raw = conn.default_channel.basic_get("async-units", no_ack=True)
    assert raw is not None
    assert json.loads(raw.body)[1] == {
        "manager": "default",  # AsyncTriggerManager.registry_key: the sync TriggerManager
        "storage": "main",  # the worker's configured storage with the same reference
        "session": uid,
        "instance": "t#0",
    }
    with pytest.raises(Exception, match="reading or writing a session synchronously"):
        twin.load()


def test_eager_celery_runs_the_instance_on_the_sync_twin_of_a_memory_store() -> None:
    app = make_app("memory://", f"async-eager-{uuid.uuid4().hex}", task_always_eager=True)
    uid = f"async-eager-{uuid.uuid4().hex[:12]}"

    async def scenario() -> None:
        m = AsyncTriggerManager(
            AsyncMemoryStorage(uid, MemoryStore()), runners={"celery": CeleryTaskRunner(app)}
        )
        await m.update_configuration(
            {"t": {"after": ["go"], "run": "triggers.PassThruTask", "using": "celery"}}
        )
        await m.fire("go", {"x": 2})
        done = await m.get_instance("t#0")
        assert done.status is Status.FINISHED
        assert done.metadata["result"] == {"kwargs": {"go": {"x": 2}}}

    try:
        asyncio.run(scenario())
    finally:
        app.close()
