"""The async manager hands Celery instances through the synchronous manager a worker rebuilds.

Units on a memory broker and Celery's eager mode, then a real ``celery worker
--pool=prefork`` (Redis) that runs what an :class:`AsyncTriggerManager` on
``postgresql+asyncpg://`` fired, on the sync twin (``postgresql+psycopg://``,
the worker's configured storage), and cascades.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from celery import Celery
from kombu import Connection
from processes import BROKERS, RUN_ID, WorkerProcess, start_worker, stop_all
from services import require_service
from sessions import session_uid
from worker_app import CeleryTestManager, make_app

from triggers_backends.sqlalchemy.asyncio import AsyncSQLAlchemyStorage, dispose_async_engines
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


# -- a real prefork worker ------------------------------------------------------------


class AsyncCeleryTestManager(AsyncTriggerManager):
    """Fires from asyncio; a worker rebuilds ``CeleryTestManager`` (cascades go to Celery)."""

    registry_key: ClassVar[str] = CeleryTestManager.registry_key


def _queue() -> str:
    return f"tc-{RUN_ID}-redis-asyncmgr"


@pytest.fixture(scope="module")
def prefork(pg_url: str, log_dir: Path) -> Iterator[tuple[WorkerProcess, Celery]]:
    """One prefork node (two pool processes) on Redis, configured with the sync URL."""
    label, host, port, broker = BROKERS["redis"]
    require_service(label, host, port)
    worker = start_worker(
        f"asyncmgr-redis-{RUN_ID}",
        broker,
        [_queue()],
        {"pg": pg_url},
        log_dir,
        pool="prefork",
        concurrency=2,
    )
    app = make_app(broker, _queue(), {"pg": pg_url})
    try:
        yield worker.wait_ready(), app
    finally:
        app.close()
        stop_all([worker])


async def _settled(m: AsyncTriggerManager, timeout: float = 30.0) -> dict[str, str]:
    """Wait until no instance is scheduled or running; their statuses."""
    deadline = time.monotonic() + timeout
    while True:
        instances = await m.instances()
        if instances and all(
            i.status not in (Status.SCHEDULED, Status.RUNNING) for i in instances.values()
        ):
            return {name: i.status.value for name, i in instances.items()}
        assert time.monotonic() < deadline, {n: i.status.value for n, i in instances.items()}
        await asyncio.sleep(0.05)


@pytest.mark.service
@pytest.mark.slow
def test_a_prefork_worker_runs_what_an_asyncpg_manager_fired_and_cascades(
    prefork: tuple[WorkerProcess, Celery], pg_url: str
) -> None:
    node, app = prefork
    async_url = pg_url.replace("postgresql+psycopg://", "postgresql+asyncpg://", 1)
    uid = session_uid("asyncmgr")
    found: dict[str, Any] = {}

    async def scenario() -> None:
        m = AsyncCeleryTestManager(async_url, uid, runners={"celery": CeleryTaskRunner(app)})
        assert isinstance(m.storage, AsyncSQLAlchemyStorage)
        await m.update_configuration(
            {
                "t_body": {"after": ["go"], "run": "celerytest.AsyncBody", "using": "celery"},
                "t_pass": {"after": ["go"], "run": "triggers.PassThruTask", "using": "celery"},
                "t_next": {"after": ["t_body", "t_pass"], "run": "triggers.PassThruTask"},
                "t_fail": {"after": ["t_next"], "run": "triggers.FailingTask"},
            }
        )
        scheduled = await m.fire("go", {"seconds": 0.1})
        assert sorted(i.name for i in scheduled) == ["t_body#0", "t_pass#0"]
        found["statuses"] = await _settled(m)
        found["body"] = (await m.get_instance("t_body#0")).metadata["result"]
        found["next"] = (await m.get_instance("t_next#0")).metadata["result"]
        found["latest"] = dict(await m.latest_kwargs())
        await dispose_async_engines()

    asyncio.run(scenario())
    assert found["statuses"] == {
        "t_body#0": "finished",
        "t_pass#0": "finished",
        "t_next#0": "finished",  # cascaded on the worker, through Celery again
        "t_fail#0": "failed",
    }
    assert found["body"]["slept"] == 0.1
    assert found["body"]["pid"] != node.process.pid  # a pool process ran it
    assert found["next"] == {
        "kwargs": {"t_body": found["body"], "t_pass": {"kwargs": {"go": {"seconds": 0.1}}}}
    }
    assert set(found["latest"]) == {"go", "t_body", "t_pass", "t_next"}  # a failure fires none
