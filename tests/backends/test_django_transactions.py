"""Fires and Django transactions (issue 27 item 5, docs/transactions.md).

``on_commit=True`` defers the fire to ``transaction.on_commit`` of the current atomic
block (not atomic with the data); ``session=connection`` writes a SQL storage on the
same database inside the block itself (atomic with the data), dispatching after the
outermost block commits. Django is configured by ``tests/django_env.py``: ``default``
is a SQLite file, ``pg`` the test PostgreSQL database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import require_service

from triggers_backends.sqlalchemy import SQLAlchemyStorage, create_schema, drop_schema
from triggers_core import MemoryStorage, MemoryStore, TriggerManager
from triggers_core.engine.state import Status
from triggers_core.testing.storage_contract import RecordingRunner

CONFIG = {"t_order": {"after": ["ordered"], "andEvery": "ordered", "run": "contract_task"}}
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(autouse=True)
def _django(django_settings: dict[str, Any]) -> None:
    """Django configured from the run's settings."""


def recording(storage: Any, uid: str | None = None) -> tuple[TriggerManager, RecordingRunner]:
    rec = RecordingRunner()
    if isinstance(storage, str):
        uid = uid or f"dj-{uuid.uuid4().hex}"
    manager = TriggerManager(storage, uid, runners={"rec": rec}, default_runner="rec")
    manager.update_configuration(CONFIG)
    return manager, rec


class Boom(Exception):
    pass


# -- on_commit=True: after the block, not atomic with it -----------------------------------


@pytest.fixture
def memory_manager() -> tuple[TriggerManager, RecordingRunner]:
    return recording(MemoryStorage(f"dj-{uuid.uuid4().hex}", MemoryStore()))


def test_on_commit_fires_after_the_block_commits(
    memory_manager: tuple[TriggerManager, RecordingRunner],
) -> None:
    from django.db import transaction

    manager, rec = memory_manager
    with transaction.atomic():
        assert manager.fire("ordered", {"order": 1}, on_commit=True) == []
        assert manager.storage.load_full().state.instances == {}
        assert rec.dispatched == []
    assert rec.dispatched == ["t_order#0"]
    assert manager.storage.get_instance("t_order#0").status is Status.SCHEDULED


def test_on_commit_never_fires_for_a_rolled_back_block(
    memory_manager: tuple[TriggerManager, RecordingRunner],
) -> None:
    from django.db import transaction

    manager, rec = memory_manager

    def rolled_back() -> None:
        with transaction.atomic():
            manager.fire("ordered", on_commit=True)
            raise Boom

    with pytest.raises(Boom):
        rolled_back()

    def savepoint_rolled_back() -> None:
        with transaction.atomic():
            manager.fire("ordered", {"in": "savepoint"}, on_commit=True)
            raise Boom

    with transaction.atomic():
        with pytest.raises(Boom):
            savepoint_rolled_back()
        manager.fire("ordered", {"in": "block"}, on_commit="default")
    assert rec.dispatched == ["t_order#0"]
    assert dict(manager.storage.load_full().state.latest_kwargs["ordered"]) == {"in": "block"}


def test_on_commit_outside_atomic_fires_at_once(
    memory_manager: tuple[TriggerManager, RecordingRunner],
) -> None:
    manager, rec = memory_manager
    assert [i.name for i in manager.fire("ordered", on_commit=True)] == ["t_order#0"]
    assert rec.dispatched == ["t_order#0"]


def test_session_and_on_commit_together_are_refused(
    memory_manager: tuple[TriggerManager, RecordingRunner],
) -> None:
    from django.db import connection

    manager, _ = memory_manager
    with pytest.raises(ValueError, match="not both"):
        manager.fire("ordered", session=connection, on_commit=True)


# -- session=connection: inside the block, atomic with it --------------------------------


class Tables:
    """The storage's tables and an application table in one Django database."""

    def __init__(self, alias: str, url: str) -> None:
        from django.db import connections

        self.alias = alias
        self.prefix = f"dj{uuid.uuid4().hex[:10]}_"
        self.url = url
        create_schema_on(url, self.prefix)
        self.orders = f"{self.prefix}orders"
        with connections[alias].cursor() as cursor:
            cursor.execute(f"CREATE TABLE {self.orders} (id INTEGER PRIMARY KEY)")

    def storage(self, uid: str) -> SQLAlchemyStorage:
        return SQLAlchemyStorage(uid, self.url, table_prefix=self.prefix)

    def insert(self, order: int) -> None:
        from django.db import connections

        with connections[self.alias].cursor() as cursor:
            cursor.execute(f"INSERT INTO {self.orders} (id) VALUES (%s)", [order])

    def order_ids(self) -> list[int]:
        from django.db import connections

        with connections[self.alias].cursor() as cursor:
            cursor.execute(f"SELECT id FROM {self.orders} ORDER BY id")
            return [row[0] for row in cursor.fetchall()]

    def drop(self) -> None:
        from django.db import connections

        with connections[self.alias].cursor() as cursor:
            cursor.execute(f"DROP TABLE {self.orders}")
        import sqlalchemy as sa

        engine = sa.create_engine(self.url)
        try:
            drop_schema(engine, self.prefix)
        finally:
            engine.dispose()


def create_schema_on(url: str, prefix: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        create_schema(engine, prefix)
    finally:
        engine.dispose()


@pytest.fixture(params=["default", "pg"])
def tables(request: pytest.FixtureRequest, django_settings: dict[str, Any]) -> Iterator[Tables]:
    if request.param == "pg":
        require_service("PostgreSQL", "127.0.0.1", 5432)
        url = PG
    else:
        url = f"sqlite:///{Path(django_settings['DATABASES']['default']['NAME'])}"
    found = Tables(request.param, url)
    yield found
    found.drop()


def test_session_connection_commits_with_the_block(tables: Tables) -> None:
    from django.db import connections, transaction

    uid = f"dj-{uuid.uuid4().hex}"
    manager, rec = recording(tables.storage(uid))
    with transaction.atomic(using=tables.alias):
        tables.insert(1)
        scheduled = manager.fire("ordered", {"order": 1}, session=connections[tables.alias])
        assert [i.name for i in scheduled] == ["t_order#0"]
        assert rec.dispatched == []
        tables.insert(2)  # the block goes on
    assert rec.dispatched == ["t_order#0"]
    assert tables.storage(uid).get_instance("t_order#0").status is Status.SCHEDULED
    assert tables.order_ids() == [1, 2]


def test_session_connection_rolls_back_with_the_block(tables: Tables) -> None:
    from django.db import connections, transaction

    uid = f"dj-{uuid.uuid4().hex}"
    manager, rec = recording(tables.storage(uid))
    before = tables.storage(uid).load_full().version

    def rolled_back() -> None:
        with transaction.atomic(using=tables.alias):
            tables.insert(1)
            manager.fire("ordered", session=connections[tables.alias])
            raise Boom

    with pytest.raises(Boom):
        rolled_back()
    with transaction.atomic(using=tables.alias):
        with pytest.raises(Boom):
            rolled_back()  # now a savepoint of the outer block
        tables.insert(2)
    assert rec.dispatched == []
    after = tables.storage(uid).load_full()
    assert after.version == before
    assert after.state.instances == {}
    assert tables.order_ids() == [2]
    # Django's connection still works as before (its transactions are its own).
    with transaction.atomic(using=tables.alias):
        manager.fire("ordered", session=connections[tables.alias])
    assert rec.dispatched == ["t_order#0"]


def test_session_connection_outside_atomic_is_refused(tables: Tables) -> None:
    from django.db import connections

    manager, rec = recording(tables.storage(f"dj-{uuid.uuid4().hex}"))
    with pytest.raises(ValueError, match=r"needs an open transaction\.atomic\(\) block"):
        manager.fire("ordered", session=connections[tables.alias])
    assert rec.dispatched == []


def test_session_connection_on_another_database_is_refused(tmp_path: Path) -> None:
    from django.db import connection, transaction

    storage = SQLAlchemyStorage("dj-other", "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/x")
    manager = TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")
    with transaction.atomic(), pytest.raises(ValueError, match="Django's database 'default'") as e:
        manager.fire("ordered", session=connection)
    assert "s3cret" not in str(e.value)


def test_the_database_cache_still_refuses_atomic_and_on_commit_fires_after_it() -> None:
    """The DatabaseCache adapter keeps its refusal inside atomic(); on_commit=True moves the
    fire after the block, where it commits on its own."""
    import django_env
    from django.db import transaction

    from triggers_core.errors import StorageError

    manager, rec = recording(f"django-cache://{django_env.DB_SQLITE}")
    with transaction.atomic():
        with pytest.raises(StorageError, match="atomic"):
            manager.fire("ordered")
        assert manager.fire("ordered", on_commit=True) == []
    assert rec.dispatched == ["t_order#0"]
    assert manager.storage.get_instance("t_order#0").status is Status.SCHEDULED


def test_session_connection_retries_a_conflict_in_a_savepoint(
    django_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL (READ COMMITTED): another writer between the load and the write."""
    import threading

    from django.db import connections, transaction

    from triggers_backends.sqlalchemy._transactional import BoundStorage

    require_service("PostgreSQL", "127.0.0.1", 5432)
    tables = Tables("pg", PG)
    try:
        uid = f"dj-{uuid.uuid4().hex}"
        manager, rec = recording(tables.storage(uid))
        other, _ = recording(tables.storage(uid))
        original = BoundStorage.compare_and_swap
        attempts: list[int] = []

        def interfering(self: BoundStorage, *args: Any) -> Any:
            attempts.append(1)
            if len(attempts) == 1:
                thread = threading.Thread(target=lambda: other.fire("ordered", {"by": "other"}))
                thread.start()
                thread.join(30)
            return original(self, *args)

        monkeypatch.setattr(BoundStorage, "compare_and_swap", interfering)
        with transaction.atomic(using="pg"):
            tables.insert(1)
            scheduled = manager.fire("ordered", {"by": "caller"}, session=connections["pg"])
            tables.insert(2)
        assert len(attempts) == 2
        assert [i.name for i in scheduled] == ["t_order#1"]
        assert rec.dispatched == ["t_order#1"]  # ours, after the commit
        assert tables.order_ids() == [1, 2]
    finally:
        tables.drop()
