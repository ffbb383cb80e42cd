"""SQLAlchemy storage on SQLite (a file, WAL mode): the contract suite and backend tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from _sql_cases import SQLAlchemyCases
from _sql_lease_cases import SQLLeaseCases

from triggers_backends.sqlalchemy import SQLAlchemyStorage, create_schema
from triggers_core import RegistryError, StorageError, StorageURLError, open_storage


@pytest.fixture(scope="module")
def sql_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    path = tmp_path_factory.mktemp("sqlite") / "triggers.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


class TestSQLiteStorage(SQLAlchemyCases):
    dialect = "sqlalchemy/sqlite"
    dead_url = "sqlite:////nonexistent-dir/s3cret/triggers.db"

    def test_database_down_is_a_storage_error(self, uid: str) -> None:
        # For SQLite "down" means the file cannot be opened; the path is no secret.
        # Opened from a URL, creating the tables already fails...
        with pytest.raises(StorageError) as caught:
            open_storage(self.dead_url, uid)
        assert "unable to open database file" in str(caught.value)
        # ... and without that, the first load does.
        storage = open_storage(f"{self.dead_url}?triggers_create_schema=false", uid)
        with pytest.raises(StorageError) as caught:
            storage.load()
        assert caught.value.backend == self.dialect
        assert uid in str(caught.value)
        assert "unable to open database file" in str(caught.value)

    def test_wal_mode(self) -> None:
        with self.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


class TestSQLiteLeases(SQLLeaseCases):
    """Leases and the due table (the lease contract and SQL specifics)."""


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ValueError, match="memory://"):
        open_storage("sqlite://", "uid")


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("sqlite://triggers.db", "sqlite:///triggers.db"),
        ("sqlite://data/triggers.db", "sqlite:///data/triggers.db"),
        ("sqlite://app:s3cret@triggers.db", "sqlite:///triggers.db"),
    ],
)
def test_two_slashes_say_how_a_file_is_named(url: str, fix: str) -> None:
    # Two slashes make the file name a host: the error says so, not "in-memory".
    with pytest.raises(ValueError, match="three slashes") as caught:
        open_storage(url, "uid")
    message = str(caught.value)
    assert fix in message
    assert "in-memory" not in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    ("url", "blocking"),
    [
        ("sqlite+aiosqlite:///x.db", "'sqlite:///x.db'"),
        ("postgresql+asyncpg://app:s3cret@127.0.0.1/db", "'postgresql+psycopg://app@127.0.0.1/db'"),
        ("mysql+aiomysql://app:s3cret@127.0.0.1/db", "'mysql+pymysql://app@127.0.0.1/db'"),
    ],
)
def test_an_asyncio_driver_is_refused_by_the_sync_storage(url: str, blocking: str) -> None:
    # Not SQLAlchemy's MissingGreenlet at the first load: which URL to use instead.
    with pytest.raises(StorageURLError, match="names the asyncio driver") as caught:
        open_storage(url, "uid")
    message = str(caught.value)
    assert blocking in message
    assert "AsyncTriggerManager" in message
    assert "s3cret" not in message


def test_a_refusal_seen_twice_is_told_once() -> None:
    # SQLAlchemy meets "unable to open database file" on two attempts; one is enough.
    with pytest.raises(StorageError) as caught:
        open_storage("sqlite:////nonexistent-dir/triggers.db", "uid")
    assert str(caught.value).count("unable to open database file") == 1, caught.value


def test_unknown_scheme_lists_schemes() -> None:
    with pytest.raises(RegistryError) as caught:
        open_storage("sqlit:///x.db", "uid")
    message = str(caught.value)
    for scheme in ("sqlite", "postgresql", "mysql", "mariadb", "memory"):
        assert scheme in message
    assert "did you mean 'sqlite'" in message


def test_create_schema_twice_and_from_fresh_file(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        create_schema(engine)
        create_schema(engine)
        storage = SQLAlchemyStorage("s", engine)
        assert storage.load().version is None
    finally:
        engine.dispose()


def test_sqlite_url_creates_its_tables_unless_told_not_to(tmp_path: Path) -> None:
    from triggers_backends.sqlalchemy import dispose_engines
    from triggers_core import SchemaMissingError, TriggerManager

    try:
        manager = TriggerManager(f"sqlite:///{tmp_path / 'app.db'}", uid="survey-42")
        manager.update_configuration({"t_a": {"after": ["x"], "run": "noop"}})
        assert manager.storage.load().version == 1
        refused = open_storage(f"sqlite:///{tmp_path / 'b.db'}?triggers_create_schema=false", "u")
        with pytest.raises(SchemaMissingError, match="create_schema"):
            refused.load()
    finally:
        dispose_engines()


def test_a_held_write_lock_is_a_conflict_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from triggers_backends.sqlalchemy import _engines as backend
    from triggers_core import ConflictError, SessionState
    from triggers_core.engine.scopes import Changes

    monkeypatch.setattr(backend, "SQLITE_BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "locked.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        create_schema(engine)
        storage = SQLAlchemyStorage("s", engine)
        version = storage.compare_and_swap(None, SessionState(), Changes())
        holder.execute("BEGIN IMMEDIATE")  # another process mid-write, or crashed mid-write
        with pytest.raises(ConflictError, match="database is locked"):
            storage.compare_and_swap(version, SessionState(), Changes())
        assert storage.load().version == version  # readers are not blocked (WAL)
        holder.execute("ROLLBACK")
        assert storage.compare_and_swap(version, SessionState(), Changes()) == version + 1
    finally:
        holder.close()
        engine.dispose()


def test_reference_names_the_sqlite_file_absolutely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from triggers_backends.sqlalchemy import dispose_engines

    monkeypatch.chdir(tmp_path)
    try:
        storage = open_storage("sqlite:///relative.db", "u")
        assert storage.reference() == f"sqlite:///{tmp_path / 'relative.db'}"
    finally:
        dispose_engines()


def test_lock_timeout_from_the_url_is_sqlites_busy_timeout(tmp_path: Path) -> None:
    import sqlite3

    from triggers_backends.sqlalchemy import dispose_engines
    from triggers_core import ConflictError, SessionState
    from triggers_core.engine.scopes import Changes

    path = tmp_path / "bounded.db"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        default = open_storage(f"sqlite:///{path}", "s")
        assert isinstance(default, SQLAlchemyStorage)
        with default.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 5000
        storage = open_storage(f"sqlite:///{path}?triggers_lock_timeout=0.2", "s")
        assert isinstance(storage, SQLAlchemyStorage)
        assert "triggers_lock_timeout=0.2" in storage.reference()
        with storage.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 200
        version = storage.compare_and_swap(None, SessionState(), Changes())
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(ConflictError, match="database is locked"):
            storage.compare_and_swap(version, SessionState(), Changes())
        holder.execute("ROLLBACK")
        with pytest.raises(ValueError, match="triggers_lock_timeout must be a number of seconds"):
            open_storage(f"sqlite:///{path}?triggers_lock_timeout=-1", "s")
    finally:
        holder.close()
        dispose_engines()


def _synchronous(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        level = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    assert isinstance(level, int)
    return level


def test_synchronous_level_is_per_storage_and_set_before_each_write(tmp_path: Path) -> None:
    from triggers_backends.sqlalchemy import dispose_engines
    from triggers_core import SessionState
    from triggers_core.engine.scopes import Changes

    # One pooled connection, shared by a FULL and a NORMAL storage.
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'sync.db'}", pool_size=1, max_overflow=0)
    try:
        create_schema(engine)
        full = SQLAlchemyStorage("full", engine)
        normal = SQLAlchemyStorage("normal", engine, sqlite_synchronous="NORMAL")
        assert (full.sqlite_synchronous, normal.sqlite_synchronous) == ("full", "normal")
        normal.compare_and_swap(None, SessionState(), Changes())
        assert _synchronous(engine) == 1  # NORMAL
        full.compare_and_swap(None, SessionState(), Changes())
        assert _synchronous(engine) == 2  # FULL
        normal.compare_and_swap(1, SessionState(), Changes())
        assert _synchronous(engine) == 1
        assert normal.load().version == 2
    finally:
        engine.dispose()
        dispose_engines()


def test_synchronous_from_url_and_in_the_reference(tmp_path: Path) -> None:
    from triggers_backends.sqlalchemy import dispose_engines

    url = f"sqlite:///{tmp_path / 'u.db'}"
    try:
        normal = open_storage(f"{url}?triggers_sqlite_synchronous=normal", "s")
        assert isinstance(normal, SQLAlchemyStorage)
        assert normal.sqlite_synchronous == "normal"
        assert normal.reference() == f"{url}?triggers_sqlite_synchronous=normal"
        reopened = open_storage(normal.reference() or "", "s")
        assert isinstance(reopened, SQLAlchemyStorage)
        assert reopened.sqlite_synchronous == "normal"
        default = open_storage(url, "s")
        assert isinstance(default, SQLAlchemyStorage)
        assert default.sqlite_synchronous == "full"
        assert default.reference() == url
        assert default.engine is normal.engine  # the level is not part of the engine
        with pytest.raises(ValueError, match="triggers_sqlite_synchronous must be one of"):
            open_storage(f"{url}?triggers_sqlite_synchronous=off", "s")
    finally:
        dispose_engines()


def test_two_tickers_race_on_a_thousand_due_timers(tmp_path: Path) -> None:
    """Issue 24: 1,000 due timers, two tickers (two engines, as two processes would have)
    at once: each fires exactly once."""
    from triggers_core.testing.timer_contract import TimerContract

    url = f"sqlite:///{tmp_path / 'race.db'}"
    engines = [sa.create_engine(url), sa.create_engine(url)]
    create_schema(engines[0], "r_")

    class Race(TimerContract):
        timer_race_sessions = 1000

        def make_storage(self, uid: str) -> SQLAlchemyStorage:
            # Sessions 0, 2, 4... on one engine, the others on the other: the two
            # racing tickers each start from a storage of their own engine.
            engine = engines[uid.endswith(("1", "3", "5", "7", "9"))]
            return SQLAlchemyStorage(uid, engine, table_prefix="r_", sqlite_synchronous="normal")

    try:
        Race().test_two_tickers_racing_apply_each_timer_once("timer-sqlite")
    finally:
        for engine in engines:
            engine.dispose()
