"""The async manager's transactional fire (docs/transactions.md): ``await manager.fire(...,
session=async_session)`` and ``async with transaction(async_connection) as tx``.

On sqlite+aiosqlite (a file) and postgresql+asyncpg: the fire is written in the
caller's transaction, dispatched once after its commit (before ``await
session.commit()`` returns), never after a rollback; a conflict is retried in a
savepoint (PostgreSQL, READ COMMITTED); a storage on another database is refused;
the lock timeout bounds the fire's wait for a row the caller's transaction of
another connection holds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from services import require_service
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from triggers_backends.sqlalchemy import SQLAlchemyStorage, create_schema, drop_schema, transaction
from triggers_backends.sqlalchemy._transactional import BoundStorage
from triggers_backends.sqlalchemy.asyncio import AsyncSQLAlchemyStorage, dispose_async_engines
from triggers_core import AsyncTriggerManager, TriggerManager
from triggers_core.engine.state import Status
from triggers_core.errors import StorageError, UnsupportedOperationError
from triggers_core.runtime.recovery import sweep_store
from triggers_core.testing.storage_contract import RecordingRunner

CONFIG = {"t_order": {"after": ["ordered"], "andEvery": "ordered", "run": "contract_task"}}
PG_SYNC = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_ASYNC = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
MARIADB_SYNC = "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4"
MARIADB_ASYNC = "mysql+aiomysql://root@127.0.0.1:3306/test?charset=utf8mb4"
ROOT = Path(__file__).resolve().parents[2]


class Db:
    """The storage's tables and the application's ``orders`` table, with a prefix of
    their own, in one database; its sync URL and its async one."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        if kind == "sqlite":
            self.sync_url = f"sqlite:///{tmp_path / 'app.db'}"
            self.async_url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
        elif kind == "mariadb":
            require_service("MariaDB", "127.0.0.1", 3306)
            self.sync_url, self.async_url = MARIADB_SYNC, MARIADB_ASYNC
        else:
            require_service("PostgreSQL", "127.0.0.1", 5432)
            self.sync_url, self.async_url = PG_SYNC, PG_ASYNC
        self.kind = kind
        self.prefix = f"atx{uuid.uuid4().hex[:10]}_"
        self.engine = sa.create_engine(self.sync_url)
        create_schema(self.engine, self.prefix)
        self.orders = sa.Table(
            f"{self.prefix}orders",
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        )
        self.orders.create(self.engine)

    def manager(self, uid: str, rec: RecordingRunner) -> AsyncTriggerManager:
        sep = "&" if "?" in self.async_url else "?"
        url = f"{self.async_url}{sep}triggers_prefix={self.prefix}&triggers_lock_timeout=1"
        storage = AsyncSQLAlchemyStorage.from_url(url, uid)
        return AsyncTriggerManager(storage, runners={"rec": rec}, default_runner="rec")

    def sync_storage(self, uid: str) -> SQLAlchemyStorage:
        return SQLAlchemyStorage(uid, self.engine, table_prefix=self.prefix)

    def order_ids(self) -> list[int]:
        with self.engine.connect() as conn:
            return sorted(conn.execute(sa.select(self.orders.c.id)).scalars())

    def run(self, test: Callable[[], Coroutine[Any, Any, None]]) -> None:
        async def main() -> None:
            try:
                await test()
            finally:
                await dispose_async_engines()

        asyncio.run(main())


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    found = Db(request.param, tmp_path)
    yield found
    found.orders.drop(found.engine)
    drop_schema(found.engine, found.prefix)
    found.engine.dispose()


@pytest.fixture
def uid() -> str:
    return f"atx-{uuid.uuid4().hex}"


def test_commit_stores_and_dispatches_once(db: Db, uid: str) -> None:
    rec = RecordingRunner()

    async def test() -> None:
        manager = db.manager(uid, rec)
        await manager.update_configuration(CONFIG)
        app = create_async_engine(db.async_url)
        async with AsyncSession(app) as session:
            await session.execute(db.orders.insert().values(id=1))
            scheduled = await manager.fire("ordered", {"order": 1}, session=session)
            assert [i.name for i in scheduled] == ["t_order#0"]
            assert rec.dispatched == []  # not before the commit
            await session.commit()
            assert rec.dispatched == ["t_order#0"]  # done when the commit returns
            await session.execute(db.orders.insert().values(id=2))
            await session.commit()  # a later transaction dispatches nothing again
        await app.dispose()

    db.run(test)
    assert rec.dispatched == ["t_order#0"]
    stored = db.sync_storage(uid).load_full().state
    assert stored.instances["t_order#0"].status is Status.SCHEDULED
    assert dict(stored.latest_kwargs["ordered"]) == {"order": 1}
    assert db.order_ids() == [1, 2]


def test_rollback_stores_nothing_and_dispatches_nothing(db: Db, uid: str) -> None:
    rec = RecordingRunner()

    async def test() -> None:
        manager = db.manager(uid, rec)
        await manager.update_configuration(CONFIG)
        app = create_async_engine(db.async_url)
        async with AsyncSession(app) as session:
            await session.execute(db.orders.insert().values(id=1))
            await manager.fire("ordered", {"order": 1}, session=session)
            await session.rollback()
            await session.execute(db.orders.insert().values(id=2))
            await session.commit()  # another transaction of the session: not the fire's
        async with AsyncSession(app) as session:
            await manager.fire("ordered", {"order": 3}, session=session)
        # closed without a commit
        await app.dispose()

    before = db.sync_storage(uid).load_full().version
    db.run(test)
    assert rec.dispatched == []
    after = db.sync_storage(uid).load_full()
    assert after.state.instances == {}
    assert after.version != before  # the configuration, nothing else
    assert "ordered" not in after.state.latest_kwargs
    assert db.order_ids() == [2]


def test_core_async_transaction_block(db: Db, uid: str) -> None:
    rec = RecordingRunner()

    async def test() -> None:
        manager = db.manager(uid, rec)
        await manager.update_configuration(CONFIG)
        app = create_async_engine(db.async_url)
        async with transaction(app) as tx:
            await tx.connection.execute(db.orders.insert().values(id=1))
            await manager.fire("ordered", {"order": 1}, session=tx)
            assert rec.dispatched == []
        assert rec.dispatched == ["t_order#0"]

        async def rolled_back() -> None:
            async with transaction(app) as tx:
                await tx.connection.execute(db.orders.insert().values(id=2))
                await manager.fire("ordered", {"order": 2}, session=tx)
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await rolled_back()
        async with app.connect() as conn:
            with pytest.raises(ValueError, match="no after-commit hook"):
                await manager.fire("ordered", session=conn)
        await app.dispose()

    db.run(test)
    assert rec.dispatched == ["t_order#0"]
    assert sorted(db.sync_storage(uid).load_full().state.instances) == ["t_order#0"]
    assert db.order_ids() == [1]


def test_a_conflict_is_retried_in_a_savepoint(uid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Db("postgresql", Path())
    rec = RecordingRunner()
    other = TriggerManager(
        db.sync_storage(uid), runners={"rec": RecordingRunner()}, default_runner="rec"
    )
    original = BoundStorage.compare_and_swap
    attempts: list[int] = []

    def interfering(self: BoundStorage, *args: Any) -> Any:
        attempts.append(1)
        if len(attempts) == 1:  # another writer commits between our load and our write
            thread = threading.Thread(target=lambda: other.fire("ordered", {"by": "other"}))
            thread.start()
            thread.join(30)
        return original(self, *args)

    async def test() -> None:
        manager = db.manager(uid, rec)
        await manager.update_configuration(CONFIG)
        monkeypatch.setattr(BoundStorage, "compare_and_swap", interfering)
        app = create_async_engine(db.async_url)
        async with AsyncSession(app) as session:
            await session.execute(db.orders.insert().values(id=1))
            scheduled = await manager.fire("ordered", {"by": "caller"}, session=session)
            await session.execute(db.orders.insert().values(id=2))  # the transaction is alive
            assert [i.name for i in scheduled] == ["t_order#1"]
            await session.commit()
        await app.dispose()

    try:
        db.run(test)
        assert len(attempts) == 2
        assert rec.dispatched == ["t_order#1"]
        stored = db.sync_storage(uid).load_full().state
        assert sorted(stored.instances) == ["t_order#0", "t_order#1"]
        assert dict(stored.latest_kwargs["ordered"]) == {"by": "caller"}
        assert db.order_ids() == [1, 2]
    finally:
        db.orders.drop(db.engine)
        drop_schema(db.engine, db.prefix)
        db.engine.dispose()


def test_the_lock_timeout_bounds_a_fire_waiting_for_a_held_row(uid: str) -> None:
    db = Db("postgresql", Path())
    rec = RecordingRunner()

    async def test() -> None:
        manager = db.manager(uid, rec)
        await manager.update_configuration(CONFIG)
        app = create_async_engine(db.async_url)
        async with AsyncSession(app) as holder, AsyncSession(app) as waiter:
            await manager.fire("ordered", {"n": 1}, session=holder)  # holds the row lock
            with pytest.raises(StorageError, match="lock"):
                await asyncio.wait_for(manager.fire("ordered", {"n": 2}, session=waiter), 20)
            await waiter.execute(sa.text("SELECT 1"))  # its transaction goes on
            await waiter.rollback()
            await holder.commit()
        await app.dispose()

    try:
        db.run(test)
        assert rec.dispatched == ["t_order#0"]
        assert sorted(db.sync_storage(uid).load_full().state.instances) == ["t_order#0"]
    finally:
        db.orders.drop(db.engine)
        drop_schema(db.engine, db.prefix)
        db.engine.dispose()


def test_a_storage_on_another_database_is_refused(tmp_path: Path, uid: str) -> None:
    async def test() -> None:
        storage = AsyncSQLAlchemyStorage(
            uid, create_async_engine("postgresql+asyncpg://postgres:s3cret@127.0.0.1:5432/test")
        )
        manager = AsyncTriggerManager(storage, runners={"rec": RecordingRunner()})
        app = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
        async with AsyncSession(app) as session:
            with pytest.raises(ValueError, match="session= is on") as raised:
                await manager.fire("ordered", session=session)
        message = str(raised.value)
        assert "session= is on sqlite+aiosqlite:///" in message
        assert "127.0.0.1:5432/test" in message
        assert "s3cret" not in message
        with pytest.raises(TypeError, match="AsyncSession"):
            await manager.fire("ordered", session=object())
        await app.dispose()
        await storage._engine.dispose()  # type: ignore[union-attr]

    require_service("PostgreSQL", "127.0.0.1", 5432)
    asyncio.run(test())


def test_coroutine_hooks_run_after_the_commit_and_are_observed_then(uid: str) -> None:
    """An async ``_post_fire`` is awaited after the commit; metrics count the fire then."""
    pytest.importorskip("prometheus_client")
    from prometheus_client import REGISTRY

    from triggers_core.runtime import metrics, observe

    db = Db("postgresql", Path())
    rec = RecordingRunner()
    seen: list[tuple[str, list[str], float | None]] = []

    def fires() -> float | None:
        return REGISTRY.get_sample_value("triggers_fires_total", {"trigger": "ordered"})

    class Hooked(AsyncTriggerManager):
        async def _post_fire(self, trigger_name: str, scheduled_instances: list[Any]) -> None:
            await asyncio.sleep(0)
            seen.append((trigger_name, [i.name for i in scheduled_instances], fires()))

    async def test() -> None:
        storage = db.manager(uid, rec).storage
        manager = Hooked(storage, runners={"rec": rec}, default_runner="rec")
        await manager.update_configuration(CONFIG)
        app = create_async_engine(db.async_url)
        async with AsyncSession(app) as session:
            await manager.fire("ordered", {"n": 1}, session=session)
            await session.rollback()
        async with AsyncSession(app) as session:
            await manager.fire("ordered", {"n": 2}, session=session)
            assert seen == []
            before = fires()
            await session.commit()
            assert seen == [("ordered", ["t_order#0"], (before or 0.0) + 1)]
        await app.dispose()

    observe.configure(metrics=False, tracing=False, observers=[metrics.MetricsObserver()])
    try:
        db.run(test)
        assert rec.dispatched == ["t_order#0"]
    finally:
        observe.configure()
        db.orders.drop(db.engine)
        drop_schema(db.engine, db.prefix)
        db.engine.dispose()


def test_concurrent_async_transactions_firing_one_session_are_exact(uid: str) -> None:
    db = Db("postgresql", Path())
    rec = RecordingRunner()
    count = 8

    async def test() -> None:
        manager = db.manager(uid, rec)
        await manager.update_configuration(CONFIG)
        app = create_async_engine(db.async_url, pool_size=count)

        async def one(n: int) -> None:
            async with AsyncSession(app) as session:
                await session.execute(db.orders.insert().values(id=n))
                await manager.fire("ordered", {"n": n}, session=session)
                await session.commit()

        await asyncio.gather(*(one(n) for n in range(count)))
        await app.dispose()

    try:
        db.run(test)
        stored = db.sync_storage(uid).load_full().state
        assert sorted(stored.instances) == sorted(f"t_order#{n}" for n in range(count))
        assert sorted(rec.dispatched) == sorted(stored.instances)
        assert len(rec.dispatched) == count
        assert db.order_ids() == list(range(count))
    finally:
        db.orders.drop(db.engine)
        drop_schema(db.engine, db.prefix)
        db.engine.dispose()


KILLED_AFTER_THE_ASYNC_COMMIT = """
import asyncio, os, signal, sys
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from triggers_backends.sqlalchemy.asyncio import AsyncSQLAlchemyStorage
from triggers_core import AsyncTriggerManager
from triggers_core.testing.storage_contract import RecordingRunner

url, app_url, uid = sys.argv[1:]

async def main():
    storage = AsyncSQLAlchemyStorage.from_url(url, uid)
    manager = AsyncTriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")
    async with AsyncSession(create_async_engine(app_url)) as session:
        # Runs before the fire's own after-commit action: the process dies in between.
        event.listen(session.sync_session, "after_commit", lambda *_: os.kill(os.getpid(), 9))
        await manager.fire("ordered", {"order": 9}, session=session)
        await session.commit()

asyncio.run(main())
print("not killed")
"""


def test_killed_between_the_async_commit_and_dispatch_the_sweep_dispatches(
    db: Db, uid: str, tmp_path: Path
) -> None:
    rec = RecordingRunner()
    url = f"{db.async_url}{'&' if '?' in db.async_url else '?'}triggers_prefix={db.prefix}"
    sync = TriggerManager(db.sync_storage(uid), runners={"rec": rec}, default_runner="rec")
    sync.update_configuration(CONFIG)
    script = tmp_path / "killed.py"
    script.write_text(KILLED_AFTER_THE_ASYNC_COMMIT, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), url, db.async_url, uid],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert db.sync_storage(uid).get_instance("t_order#0").status is Status.SCHEDULED
    report = sweep_store(
        db.sync_storage(uid),
        lambda s: TriggerManager(s, runners={"rec": rec}, default_runner="rec"),
        now=datetime.now(UTC) + timedelta(seconds=2),
        dispatch_lease=1.0,
    )
    assert [(a.instance, a.action) for a in report.acted if a.session == uid] == [
        ("t_order#0", "dispatched again")
    ]
    assert rec.dispatched == ["t_order#0"]


def test_the_async_fire_has_its_span_and_the_dispatch_after_the_commit_is_in_its_trace(
    tmp_path: Path, uid: str
) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from triggers_core.runtime import observe

    db = Db("sqlite", tmp_path)
    rec = RecordingRunner()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def test() -> None:
        manager = db.manager(uid, rec)
        await manager.update_configuration(CONFIG)
        app = create_async_engine(db.async_url)
        async with AsyncSession(app) as session:
            await manager.fire("ordered", {"n": 1}, session=session)
            await session.rollback()
        async with AsyncSession(app) as session:
            exporter.clear()
            await manager.fire("ordered", {"n": 2}, session=session)
            assert [s.name for s in exporter.get_finished_spans()].count("triggers.fire ordered")
            await session.commit()
        await app.dispose()

    observe.configure(tracer_provider=provider, metrics=False)
    try:
        db.run(test)
    finally:
        observe.configure()
        provider.shutdown()
        drop_schema(db.engine, db.prefix)
        db.engine.dispose()
    finished = exporter.get_finished_spans()
    (fire,) = [s for s in finished if s.name == "triggers.fire ordered"]
    (dispatch,) = [s for s in finished if s.name == "triggers.dispatch t_order"]
    assert dispatch.parent is not None
    assert dispatch.parent.span_id == fire.context.span_id
    assert rec.dispatched == ["t_order#0"]


def test_an_async_scoped_session_is_its_current_session(tmp_path: Path, uid: str) -> None:
    from sqlalchemy.ext.asyncio import async_scoped_session, async_sessionmaker

    db = Db("sqlite", tmp_path)
    rec = RecordingRunner()

    async def test() -> None:
        manager = db.manager(uid, rec)
        await manager.update_configuration(CONFIG)
        app = create_async_engine(db.async_url)
        scoped = async_scoped_session(async_sessionmaker(app), scopefunc=asyncio.current_task)
        await scoped.execute(db.orders.insert().values(id=1))
        await manager.fire("ordered", {"n": 1}, session=scoped)
        assert rec.dispatched == []
        await scoped.commit()
        assert rec.dispatched == ["t_order#0"]
        await scoped.remove()
        await app.dispose()

    try:
        db.run(test)
    finally:
        drop_schema(db.engine, db.prefix)
        db.engine.dispose()
    assert db.order_ids() == [1]


def test_session_on_a_storage_that_is_no_sql_database_is_refused() -> None:
    async def test() -> None:
        manager = AsyncTriggerManager("memory://", f"atx-{uuid.uuid4().hex}")
        with pytest.raises(UnsupportedOperationError, match="caller's transaction"):
            await manager.fire("ordered", session=object())

    asyncio.run(test())
