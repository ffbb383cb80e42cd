"""An outcome the database refuses to store ends the instance ``failed``, with the reason,
instead of leaving it ``running``: on MariaDB (a row over ``max_allowed_packet``), on
SQLite (a value over the connection's length limit) and, through a storage that refuses
the finish, on any backend.

The result is sized from the server's own limit (``SELECT @@max_allowed_packet``; the
test never changes a global setting): the finish's instance document holds it, and the
cascade's latest kwargs too.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from services import require_service

from triggers_backends.sqlalchemy import SQLAlchemyStorage, create_schema
from triggers_core import MemoryStorage, Status, TaskContext, TriggerManager, TriggerTask
from triggers_core.engine.scopes import Changes
from triggers_core.engine.state import SessionState
from triggers_core.errors import StorageError
from triggers_core.runtime.storage import Version
from triggers_core.testing.storage_contract import RecordingRunner

CONFIG = {"t_echo": {"after": ["big"], "run": "tests.unwritable.Inflates"}}


class Inflates(TriggerTask):
    """Returns ``size`` characters: a result far larger than the kwargs it ran with."""

    name: ClassVar[str] = "tests.unwritable.Inflates"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {"blob": "x" * int(context.trigger_kwargs["big"]["size"])}


MARIADB = "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4"


def run_echo(storage: Any, size: int) -> str:
    """Fire ``big``, run ``t_echo#0``, which returns ``size`` characters: refused."""
    manager = TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")
    manager.update_configuration(CONFIG)
    manager.fire("big", {"size": size})
    outcome = manager.run_instance("t_echo#0")
    assert outcome is not None
    assert outcome.status is Status.FAILED
    stored = storage.session(storage.uid) if hasattr(storage, "session") else storage
    instance = stored.load_full().state.instances["t_echo#0"]
    assert instance.status is Status.FAILED
    assert "could not be written" in instance.metadata["exceptionInfo"]
    assert instance.metadata["exceptionType"].endswith("StorageError")
    info: str = instance.metadata["exceptionInfo"]
    return info


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}_"


@pytest.mark.service
def test_a_row_over_max_allowed_packet_fails_the_instance_on_mariadb(prefix: str) -> None:
    require_service("MariaDB", "127.0.0.1", 3306)
    engine = sa.create_engine(MARIADB, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            packet = int(conn.execute(sa.text("SELECT @@max_allowed_packet")).scalar_one())
        create_schema(engine, prefix)
        storage = SQLAlchemyStorage(
            f"packet-{uuid.uuid4().hex}",
            engine,
            table_prefix=prefix,
            max_value_bytes=packet,  # the storage's own bound lets it through
        )
        info = run_echo(storage, packet - 1024)
        assert "max_allowed_packet" in info  # the refusal, not the reset after it
    finally:
        with engine.begin() as conn:
            for table in ("due", "fire_keys", "instances", "sessions"):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {prefix}{table}"))
        engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'limit.db'}")

    @sa.event.listens_for(engine, "connect")
    def _limit(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000_000)

    yield engine
    engine.dispose()


def test_a_value_over_sqlites_length_limit_fails_the_instance(
    sqlite_engine: sa.Engine, prefix: str
) -> None:
    create_schema(sqlite_engine, prefix)
    storage = SQLAlchemyStorage(
        "limit", sqlite_engine, table_prefix=prefix, max_value_bytes=4_000_000
    )
    run_echo(storage, 1_100_000)


class RefusingFinish(MemoryStorage):
    """A memory storage whose writes of more than ``limit`` bytes of instance fail, as a
    database that refuses the row would."""

    limit = 100_000

    def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        written = sum(len(repr(state.instances[n].metadata)) for n in changes.instances)
        if written > self.limit:
            raise StorageError("the row is too large", backend="refusing", session=self.uid)
        return super().compare_and_swap(expected, state, changes)


def test_a_refused_finish_fails_the_instance_on_any_storage() -> None:
    run_echo(RefusingFinish(f"refusing-{uuid.uuid4().hex}"), 200_000)


class RefusingOnce(MemoryStorage):
    """A memory storage whose first write of a finished instance fails (a dropped
    connection): the outcome is written again, not turned into a failure."""

    refused = 0

    def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        finishing = any(state.instances[n].status is Status.FINISHED for n in changes.instances)
        if finishing and not self.refused:
            self.refused += 1
            raise StorageError("connection reset", backend="flaky", session=self.uid)
        return super().compare_and_swap(expected, state, changes)


def test_a_passing_fault_while_writing_an_outcome_is_retried() -> None:
    storage = RefusingOnce(f"flaky-{uuid.uuid4().hex}")
    manager = TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")
    manager.update_configuration(CONFIG)
    manager.fire("big", {"size": 10})
    outcome = manager.run_instance("t_echo#0")
    assert storage.refused == 1
    assert outcome is not None
    assert outcome.status is Status.FINISHED
    assert storage.load_full().state.instances["t_echo#0"].metadata["result"] == {"blob": "x" * 10}
