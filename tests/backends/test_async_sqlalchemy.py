"""AsyncSQLAlchemyStorage on sqlite+aiosqlite, postgresql+asyncpg and postgresql+psycopg.

The sync contract suites (storage, fire records, leases and timers) run unchanged
against it through :class:`~_async_facade.SyncFacade`; then what is its own:
sessions shared with the sync storage both ways, coroutines racing on one
session, errors (bad URLs, missing drivers, missing tables, a held lock, a frozen
server), engines per event loop. PostgreSQL on 127.0.0.1:5432 (db ``test``).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from _async_facade import LoopThread, SyncFacade
from _sql_lease_cases import stop_sweepers
from services import require_service
from sqlalchemy.ext.asyncio import create_async_engine
from tcp_proxy import FreezingProxy

from triggers_backends.sqlalchemy import SQLAlchemyStorage, _timeouts, create_schema, drop_schema
from triggers_backends.sqlalchemy import asyncio as asyncio_module
from triggers_backends.sqlalchemy.asyncio import AsyncSQLAlchemyStorage, dispose_async_engines
from triggers_core import (
    ConflictError,
    RegistryError,
    SchemaMissingError,
    StorageError,
    StorageURLError,
    TriggerManager,
)
from triggers_core import engine as pure
from triggers_core.engine.scopes import Scope
from triggers_core.engine.serialization import header_to_json, instance_to_json
from triggers_core.runtime.storage import Snapshot
from triggers_core.testing.lease_contract import LeaseContract
from triggers_core.testing.storage_contract import RecordingRunner, StorageContract

PG_SYNC = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
EVERY = {
    "t_every": {"after": ["tick"], "andEvery": "tick", "run": "contract_task"},
    "t_pair": {"after": ["tick", "tock"], "run": "contract_task"},
}


def _with_prefix(url: str, prefix: str, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"triggers_prefix": prefix, **options}.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


def _dump(snapshot: Snapshot) -> tuple[Any, ...]:
    state = snapshot.state
    return (
        snapshot.version,
        header_to_json(state),
        {name: instance_to_json(i) for name, i in state.instances.items()},
        {k: dict(v) for k, v in state.latest_kwargs.items()},
    )


class AsyncStore:
    """One store per test: fresh tables (a prefix of its own) and an event loop thread."""

    #: The sync URL of the database, and the async one of the driver under test.
    sync_url: ClassVar[str] = PG_SYNC
    async_url: ClassVar[str]

    @pytest.fixture(autouse=True)
    def _store(self, tmp_path: Path) -> Iterator[None]:
        if self.sync_url.startswith("sqlite"):
            self.sync_url = f"sqlite:///{tmp_path / 'triggers.db'}"
            self.async_url = f"sqlite+aiosqlite:///{tmp_path / 'triggers.db'}"
        else:
            url = sa.make_url(self.sync_url)
            require_service(url.get_backend_name(), url.host or "", url.port or 0)
        self.engine = sa.create_engine(self.sync_url)
        self.prefix = f"a{uuid.uuid4().hex[:12]}_"
        create_schema(self.engine, self.prefix)
        self.loop = LoopThread()
        yield
        stop_sweepers(self.prefix)
        self.loop.run(dispose_async_engines())
        self.loop.stop()
        drop_schema(self.engine, self.prefix)
        self.engine.dispose()

    def url(self, **options: str) -> str:
        return _with_prefix(self.async_url, self.prefix, **options)

    def async_storage(self, uid: str) -> AsyncSQLAlchemyStorage:
        return AsyncSQLAlchemyStorage.from_url(self.url(), uid)

    def make_storage(self, uid: str) -> SyncFacade:
        return SyncFacade(self.async_storage(uid), self.loop)

    def sync_storage(self, uid: str) -> SQLAlchemyStorage:
        return SQLAlchemyStorage(uid, self.engine, table_prefix=self.prefix)


class AsyncSpecifics(AsyncStore):
    """What is the async storage's own (beyond the contracts)."""

    @pytest.fixture
    def uid(self) -> str:
        return f"async-{uuid.uuid4().hex}"

    def test_a_session_written_by_the_sync_storage_is_read_and_swapped_by_the_async_one(
        self, uid: str
    ) -> None:
        sync = TriggerManager(
            self.sync_storage(uid), runners={"rec": RecordingRunner()}, default_runner="rec"
        )
        sync.update_configuration(EVERY)
        sync.fire("tick", {"n": 1})
        sync.fire("tock", {"m": {"deep": [1, 2]}})
        storage = self.async_storage(uid)
        seen = self.loop.run(storage.load_full())
        assert _dump(seen) == _dump(self.sync_storage(uid).load_full())
        scoped = self.loop.run(storage.load(Scope(unstarted_of=frozenset({"t_every"}))))
        assert scoped.version == seen.version
        assert dict(scoped.state.latest_kwargs["tock"]) == {"m": {"deep": [1, 2]}}

        # The async storage applies a fire to it; the sync storage reads the result.
        step = pure.fire(scoped.state, "tick", {"n": 2}, now=pure_now())
        version = self.loop.run(storage.compare_and_swap(scoped.version, step.state, step.changes))
        after = self.sync_storage(uid).load_full()
        assert after.version == version
        assert set(after.state.instances) == {"t_every#0", "t_every#1", "t_pair#0"}
        assert dict(after.state.latest_kwargs["tick"]) == {"n": 2}
        assert dict(after.state.latest_kwargs["tock"]) == {"m": {"deep": [1, 2]}}
        # ... and the version the sync storage loaded before is stale now.
        with pytest.raises(ConflictError):
            self.sync_storage(uid).compare_and_swap(seen.version, step.state, step.changes)

    def test_a_session_written_by_the_async_storage_is_read_and_fired_by_the_sync_one(
        self, uid: str
    ) -> None:
        facade = self.make_storage(uid)
        manager = TriggerManager(facade, runners={"rec": RecordingRunner()}, default_runner="rec")
        manager.update_configuration(EVERY)
        manager.fire("tick", {"n": 1}, idempotency_key="k-1")
        sync = self.sync_storage(uid)
        assert _dump(sync.load_full()) == _dump(facade.load_full())
        plain = TriggerManager(sync, runners={"rec": RecordingRunner()}, default_runner="rec")
        again = plain.fire("tick", {"n": 1}, idempotency_key="k-1")  # the async one's record
        assert [i.name for i in again] == ["t_every#0"]
        plain.fire("tock", {"x": 1})
        assert set(facade.load_full().state.instances) == {"t_every#0", "t_pair#0"}
        assert facade.get_instance("t_pair#0").kwargs == {"tick": {"n": 1}, "tock": {"x": 1}}

    def test_coroutines_racing_on_one_session_lose_no_update(self, uid: str) -> None:
        """Each coroutine its own storage object: exactly one compare-and-swap wins each
        version, and every fire is applied once."""
        workers, fires = 12, 8
        first = self.async_storage(uid)
        config = pure.update_configuration(self.loop.run(first.load()).state, EVERY)
        self.loop.run(first.compare_and_swap(None, config.state, config.changes))
        won: list[int] = []
        lost = Counter[str]()

        async def worker(n: int) -> None:
            storage = AsyncSQLAlchemyStorage.from_url(self.url(), uid)
            for i in range(fires):
                while True:
                    snapshot = await storage.load(Scope(unstarted_of=frozenset({"t_pair"})))
                    step = pure.fire(snapshot.state, "tick", {"by": n, "i": i}, now=pure_now())
                    try:
                        await storage.compare_and_swap(snapshot.version, step.state, step.changes)
                    except ConflictError:
                        lost["conflicts"] += 1
                        await asyncio.sleep(0)
                        continue
                    assert isinstance(snapshot.version, int)
                    won.append(snapshot.version)
                    break
            await storage.aclose()

        async def race() -> None:
            await asyncio.gather(*(worker(n) for n in range(workers)))

        self.loop.run(race())
        total = workers * fires
        assert sorted(won) == list(range(1, total + 1))  # each version won exactly once
        state = self.loop.run(first.load_full()).state
        assert state.counters["t_every"] == total
        assert {i.name for i in state.instances.values() if i.task_name == "t_every"} == {
            f"t_every#{n}" for n in range(total)
        }
        assert lost["conflicts"] > 0  # they did race

    def test_sync_threads_and_coroutines_racing_on_one_session_lose_no_update(
        self, uid: str
    ) -> None:
        """Sync storages in threads and async ones in coroutines fire into one session at
        once: one compare-and-swap wins each version, whichever face made it."""
        threads, coroutines, fires = 3, 6, 6
        first = self.sync_storage(uid)
        config = pure.update_configuration(first.load().state, EVERY)
        first.compare_and_swap(None, config.state, config.changes)
        won: list[tuple[str, int]] = []
        scope = Scope(unstarted_of=frozenset({"t_pair"}))

        def sync_worker(n: int) -> None:
            storage = self.sync_storage(uid)
            for i in range(fires):
                while True:
                    snapshot = storage.load(scope)
                    step = pure.fire(snapshot.state, "tick", {"t": n, "i": i}, now=pure_now())
                    try:
                        storage.compare_and_swap(snapshot.version, step.state, step.changes)
                    except ConflictError:
                        continue
                    assert isinstance(snapshot.version, int)
                    won.append(("sync", snapshot.version))
                    break

        async def async_worker(n: int) -> None:
            storage = AsyncSQLAlchemyStorage.from_url(self.url(), uid)
            for i in range(fires):
                while True:
                    snapshot = await storage.load(scope)
                    step = pure.fire(snapshot.state, "tick", {"c": n, "i": i}, now=pure_now())
                    try:
                        await storage.compare_and_swap(snapshot.version, step.state, step.changes)
                    except ConflictError:
                        await asyncio.sleep(0)
                        continue
                    assert isinstance(snapshot.version, int)
                    won.append(("async", snapshot.version))
                    break

        async def coroutines_race() -> None:
            await asyncio.gather(*(async_worker(n) for n in range(coroutines)))

        with ThreadPoolExecutor(threads + 1) as pool:
            racing = pool.submit(self.loop.run, coroutines_race())
            list(pool.map(sync_worker, range(threads)))
            racing.result()
        total = (threads + coroutines) * fires
        assert sorted(v for _, v in won) == list(range(1, total + 1))
        assert Counter(face for face, _ in won) == {
            "sync": threads * fires,
            "async": coroutines * fires,
        }
        state = self.sync_storage(uid).load_full().state
        assert state.counters["t_every"] == total

    def test_missing_tables_are_schema_missing_saying_how_to_create_them(self, uid: str) -> None:
        storage = AsyncSQLAlchemyStorage.from_url(
            _with_prefix(self.async_url, f"{self.prefix}none_", triggers_create_schema="false"),
            uid,
        )
        with pytest.raises(SchemaMissingError, match="create_schema") as caught:
            self.loop.run(storage.load())
        assert caught.value.session == uid
        assert caught.value.backend.startswith("sqlalchemy/")

    def test_the_create_schema_option_creates_the_tables(self, uid: str) -> None:
        prefix = f"{self.prefix}made_"
        storage = AsyncSQLAlchemyStorage.from_url(
            _with_prefix(self.async_url, prefix, triggers_create_schema="true"), uid
        )
        try:
            assert self.loop.run(storage.load()).version is None
            assert sa.inspect(self.engine).has_table(f"{prefix}sessions")
        finally:
            drop_schema(self.engine, prefix)

    def test_reference_session_and_identity_match_the_sync_storage(self, uid: str) -> None:
        storage = AsyncSQLAlchemyStorage.from_url(
            self.url(triggers_lock_timeout="3", triggers_max_value_bytes="2048"), uid
        )
        sync = SQLAlchemyStorage.from_url(
            _with_prefix(self.sync_url, self.prefix, triggers_lock_timeout="3"), uid
        )
        reference = storage.reference()
        assert "triggers_lock_timeout=3" in reference
        assert f"triggers_prefix={self.prefix}" in reference
        assert "triggers_max_value_bytes=2048" in reference
        assert storage.max_value_bytes == 2048
        assert (
            reference.split("://", 1)[1].split("?")[0]
            == (sync.reference().split("://", 1)[1].split("?")[0])
        )
        other = storage.session("other")
        assert other.uid == "other"
        assert other.reference() == reference
        assert other.store_identity() == storage.store_identity()

    def test_a_second_event_loop_opens_its_own_engine(self, uid: str) -> None:
        storage = self.async_storage(uid)

        async def write_and_count(version: int | None) -> int:
            snapshot = await storage.load()
            assert snapshot.version == version
            step = pure.update_configuration(snapshot.state, EVERY)
            made = await storage.compare_and_swap(snapshot.version, step.state, step.changes)
            assert isinstance(made, int)
            return made

        # Two asyncio.run calls, each with its own loop (asyncpg connections belong to one).
        assert asyncio.run(write_and_count(None)) == 1
        assert asyncio.run(write_and_count(1)) == 2

    def test_an_engine_passed_in_is_used_and_left_to_its_owner(self, uid: str) -> None:
        async def scenario() -> None:
            engine = create_async_engine(self.async_url)
            storage = AsyncSQLAlchemyStorage(uid, engine, table_prefix=self.prefix)
            step = pure.update_configuration((await storage.load()).state, EVERY)
            assert await storage.compare_and_swap(None, step.state, step.changes) == 1
            assert (await storage.session(uid).load()).version == 1
            await storage.aclose()
            assert engine.sync_engine.pool.checkedin() == 1  # not disposed: the caller's
            await engine.dispose()

        asyncio.run(scenario())
        assert self.sync_storage(uid).load().version == 1

    def test_aclose_disposes_the_engine_when_its_last_storage_lets_go(self, uid: str) -> None:
        async def scenario() -> None:
            one = self.async_storage(uid)
            two = one.session(f"{uid}-2")
            await one.load()
            await two.load()
            engines = asyncio_module._LOOP_ENGINES[asyncio.get_running_loop()].engines
            (shared,) = engines.values()  # one engine for both
            pool = shared.engine.sync_engine.pool
            assert shared.holders == 2
            await one.aclose()
            assert list(engines.values()) == [shared]
            assert pool.checkedin() == 1
            await two.aclose()
            assert engines == {}
            assert pool.checkedin() == 0  # disposed: its connection closed
            assert (await one.load()).version is None  # usable again, on a new engine
            (again,) = engines.values()
            assert again is not shared
            await one.aclose()

        asyncio.run(scenario())

    def test_the_engines_of_a_loop_are_disposed_when_it_shuts_down(self, uid: str) -> None:
        pools: list[Any] = []

        async def use() -> None:
            await self.async_storage(uid).load()
            (shared,) = asyncio_module._LOOP_ENGINES[asyncio.get_running_loop()].engines.values()
            pools.append(shared.engine.sync_engine.pool)
            assert pools[0].checkedin() == 1

        asyncio.run(use())  # no aclose: asyncio.run's shutdown_asyncgens disposes it
        assert pools[0].checkedin() == 0


def pure_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


class LockSpecifics(AsyncSpecifics):
    """Database servers: a row lock held by another transaction, a frozen server."""

    def test_a_held_row_lock_is_a_lock_timeout_error_not_a_conflict(self, uid: str) -> None:
        storage = AsyncSQLAlchemyStorage.from_url(self.url(triggers_lock_timeout="1"), uid)
        step = pure.update_configuration(self.loop.run(storage.load()).state, EVERY)
        version = self.loop.run(storage.compare_and_swap(None, step.state, step.changes))
        fired = pure.fire(step.state, "tick", {}, now=pure_now())
        sessions = sa.table(f"{self.prefix}sessions", sa.column("version"), sa.column("uid"))
        with self.engine.connect() as conn, conn.begin():
            conn.execute(
                sa.select(sessions.c.version).where(sessions.c.uid == uid).with_for_update()
            )
            with pytest.raises(StorageError) as caught:
                self.loop.run(storage.compare_and_swap(version, fired.state, fired.changes))
        assert not isinstance(caught.value, ConflictError)
        assert "triggers_lock_timeout=1" in str(caught.value)
        assert self.loop.run(storage.load()).version == version  # nothing written

    def test_a_frozen_server_is_a_storage_error_within_the_bound(self, uid: str) -> None:
        port = sa.make_url(self.async_url).port
        proxy = FreezingProxy(("127.0.0.1", port or 0))
        try:
            url = self.url(triggers_statement_timeout="1", triggers_connect_timeout="1")
            storage = AsyncSQLAlchemyStorage.from_url(
                url.replace(f":{port}/", f":{proxy.port}/"), uid
            )
            step = pure.update_configuration(self.loop.run(storage.load()).state, EVERY)
            version = self.loop.run(storage.compare_and_swap(None, step.state, step.changes))
            fired = pure.fire(step.state, "tick", {}, now=pure_now())
            proxy.freeze()
            for _ in range(2):  # the pooled connection, then a new one
                started = time.monotonic()
                with pytest.raises(StorageError) as caught:
                    self.loop.run(storage.compare_and_swap(version, fired.state, fired.changes))
                # the bound (connect 1 s plus statement 1 s), and time to give up the call
                assert time.monotonic() - started < 5
                assert not isinstance(caught.value, ConflictError)
                assert "did not answer in time" in str(caught.value)
                assert "triggers_statement_timeout=1" in str(caught.value)
                assert uid in str(caught.value)
            assert self.sync_storage(uid).load().version == version
            proxy.thaw()
            assert self.loop.run(storage.compare_and_swap(version, fired.state, fired.changes))
        finally:
            proxy.close()


class ServerSpecifics(LockSpecifics):
    """PostgreSQL: passwords, pooled connections, unlocked loads."""

    def test_a_pooled_connection_the_server_ended_is_replaced_before_a_write(
        self, uid: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Pooled connections idle for PING_AFTER_IDLE are pinged (as the sync storage's):
        a compare-and-swap, which is never retried, does not meet a dead one."""
        monkeypatch.setattr(_timeouts, "PING_AFTER_IDLE", 0.2)
        storage = self.async_storage(uid)
        step = pure.update_configuration(self.loop.run(storage.load()).state, EVERY)
        version = self.loop.run(storage.compare_and_swap(None, step.state, step.changes))

        async def pooled_pid() -> int:
            # The engine the storage opened in this loop (its pool holds one connection).
            (shared,) = asyncio_module._LOOP_ENGINES[self.loop.loop].engines.values()
            async with shared.engine.connect() as conn:
                pid = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
            assert isinstance(pid, int)
            return pid

        pid = self.loop.run(pooled_pid())
        with self.engine.connect() as conn:
            ended = conn.execute(sa.text(f"SELECT pg_terminate_backend({pid})")).scalar_one()
        assert ended
        time.sleep(0.3)
        fired = pure.fire(step.state, "tick", {}, now=pure_now())
        assert self.loop.run(storage.compare_and_swap(version, fired.state, fired.changes)) == 2

    def test_a_write_between_the_statements_of_a_load_is_never_mixed_in(self, uid: str) -> None:
        """PostgreSQL scoped loads run without a transaction (the latest kwargs read in
        full, as the async storage does): a commit between two of their statements makes
        the load read again, in one snapshot."""
        manager = TriggerManager(
            self.sync_storage(uid), runners={"rec": RecordingRunner()}, default_runner="rec"
        )
        manager.update_configuration(EVERY)
        manager.fire("tick", {"n": 1})
        storage = self.async_storage(uid)
        self.loop.run(storage.load())
        (shared,) = asyncio_module._LOOP_ENGINES[self.loop.loop].engines.values()
        meddled: list[str] = []

        def meddle(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if f"{self.prefix}latest.version" in statement and not meddled:
                meddled.append(statement)
                manager.fire("tick", {"n": 2})  # commits before the statement runs

        sa.event.listen(shared.engine.sync_engine, "before_cursor_execute", meddle)
        try:
            snapshot = self.loop.run(storage.load(Scope(unstarted_of=frozenset({"t_pair"}))))
        finally:
            sa.event.remove(shared.engine.sync_engine, "before_cursor_execute", meddle)
        assert meddled
        assert snapshot.version == self.sync_storage(uid).load().version == 3
        assert dict(snapshot.state.latest_kwargs["tick"]) == {"n": 2}
        assert snapshot.state.counters["t_every"] == 2

    def test_passwords_never_show(self, uid: str) -> None:
        url = self.async_url.replace("postgres@", "postgres:s3cret@").replace(":5432/", ":1/")
        storage = AsyncSQLAlchemyStorage.from_url(_with_prefix(url, self.prefix), uid)
        assert "s3cret" not in storage.reference()
        assert "s3cret" not in repr(storage)
        with pytest.raises(StorageError) as caught:
            self.loop.run(storage.load())
        assert "s3cret" not in str(caught.value)
        assert uid in str(caught.value)


# -- the URLs -----------------------------------------------------------------------------


class SqliteStore:
    sync_url = "sqlite"
    async_url = "sqlite+aiosqlite"


class AsyncpgStore:
    async_url = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


class MariadbStore:
    sync_url = "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4"
    async_url = "mysql+aiomysql://root@127.0.0.1:3306/test"


class PsycopgStore:
    async_url = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class TestSqliteContract(SqliteStore, AsyncStore, StorageContract):
    supports_multiprocess = False  # the sync storage's own suite races processes


class TestSqliteLeases(SqliteStore, AsyncStore, LeaseContract):
    pass


class TestSqlite(SqliteStore, AsyncSpecifics):
    pass


@pytest.mark.service
class TestAsyncpgContract(AsyncpgStore, AsyncStore, StorageContract):
    supports_multiprocess = False


@pytest.mark.service
class TestAsyncpgLeases(AsyncpgStore, AsyncStore, LeaseContract):
    pass


@pytest.mark.service
class TestAsyncpg(AsyncpgStore, ServerSpecifics):
    pass


@pytest.mark.service
class TestPsycopgContract(PsycopgStore, AsyncStore, StorageContract):
    supports_multiprocess = False


@pytest.mark.service
class TestPsycopgLeases(PsycopgStore, AsyncStore, LeaseContract):
    pass


@pytest.mark.service
class TestPsycopg(PsycopgStore, ServerSpecifics):
    pass


@pytest.mark.service
class TestMariadbContract(MariadbStore, AsyncStore, StorageContract):
    supports_multiprocess = False


@pytest.mark.service
class TestMariadbLeases(MariadbStore, AsyncStore, LeaseContract):
    pass


@pytest.mark.service
class TestMariadb(MariadbStore, LockSpecifics):
    pass


# -- URLs refused -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["sqlite:///x.db", "postgresql+psycopg2://u:s3cret@h/db", "mysql+pymysql://u:s3cret@h/db"],
)
def test_a_sync_driver_is_refused_naming_the_async_urls(url: str) -> None:
    with pytest.raises(StorageURLError) as caught:
        AsyncSQLAlchemyStorage.from_url(url, "u")
    message = str(caught.value)
    assert "sqlite+aiosqlite://" in message
    assert "postgresql+asyncpg://" in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    ("url", "module"),
    [
        ("postgresql+asyncpg://u:s3cret@127.0.0.1/db", "asyncpg"),
        ("sqlite+aiosqlite:///x.db", "aiosqlite"),
        ("sqlite+aiosqlite:///x.db", "greenlet"),
        ("postgresql+psycopg://u:s3cret@127.0.0.1/db", "psycopg"),
        ("mysql+aiomysql://u:s3cret@127.0.0.1/db", "aiomysql"),
    ],
)
def test_a_missing_driver_names_the_extra_to_install(
    url: str, module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(RegistryError) as caught:
        AsyncSQLAlchemyStorage.from_url(url, "u")
    message = str(caught.value)
    assert f"'{module}'" in message
    extras = "async,postgres" if module == "psycopg" else "async"
    assert f"pip install -e '.[{extras}]' in a checkout of celery-triggers" in message
    assert "s3cret" not in message


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ValueError, match="in-memory SQLite"):
        AsyncSQLAlchemyStorage.from_url("sqlite+aiosqlite://", "u")


def test_the_async_sql_schemes_are_declared_as_entry_points() -> None:
    """The async registry finds this storage by the full URL scheme (pyproject.toml)."""
    import importlib
    import tomllib

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    group = project["entry-points"]["triggers.async_storages"]
    schemes = ("sqlite+aiosqlite", "postgresql+asyncpg", "postgresql+psycopg", "mysql+aiomysql")
    for scheme in schemes:
        module, _, name = group[scheme].partition(":")
        assert getattr(importlib.import_module(module), name) is AsyncSQLAlchemyStorage
    extra = " ".join(project["optional-dependencies"]["async"])
    for package in ("sqlalchemy[asyncio]", "aiosqlite", "asyncpg", "aiomysql", "greenlet"):
        assert package in extra


class _GatedOpening(AsyncSQLAlchemyStorage):
    """Its first use waits at ``gate`` after taking the URL's engine, before opening."""

    gate: asyncio.Event

    async def _call(self, doing: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if doing == "opening the storage":
            await self.gate.wait()
        return await super()._call(doing, fn, *args, **kwargs)


def test_a_storage_letting_go_never_disposes_the_engine_another_is_opening(
    tmp_path: Path,
) -> None:
    """Two storages of one URL: the first closes while the second's first use is under
    way. The engine stays (the second holds it from the moment it took it); before, it
    was disposed under the second, whose connections then outlived every dispose."""
    path = tmp_path / "holds.db"
    create_schema(sa.create_engine(f"sqlite:///{path}"))
    url = f"sqlite+aiosqlite:///{path}"

    async def scenario() -> None:
        first = AsyncSQLAlchemyStorage.from_url(url, "first")
        await first.load()
        state = asyncio_module._LOOP_ENGINES[asyncio.get_running_loop()]
        (shared,) = state.engines.values()
        assert shared.holders == 1
        second = _GatedOpening.from_url(url, "second")
        second.gate = asyncio.Event()
        opening = asyncio.create_task(second.load())
        for _ in range(200):  # it reaches the gate without I/O: a few turns of the loop
            if shared.holders == 2:
                break
            await asyncio.sleep(0.01)
        assert shared.holders == 2, "the second storage took the engine without holding it"
        await first.aclose()
        assert state.engines == {second._key: shared}  # not disposed: the second holds it
        second.gate.set()
        await opening
        assert shared.holders == 1
        await second.aclose()
        assert state.engines == {}  # the last one let go: disposed

    asyncio.run(asyncio.wait_for(scenario(), 30))
