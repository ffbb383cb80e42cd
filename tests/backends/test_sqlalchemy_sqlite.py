"""SQLAlchemy storage on SQLite (a file, WAL mode): the contract suite and backend tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from _sql_cases import SQLAlchemyCases

from triggers_backends.sqlalchemy import SQLAlchemyStorage, create_schema
from triggers_core import RegistryError, StorageError, open_storage


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
        storage = open_storage(self.dead_url, uid)
        with pytest.raises(StorageError) as caught:
            storage.load()
        assert caught.value.backend == self.dialect
        assert uid in str(caught.value)
        assert "unable to open database file" in str(caught.value)

    def test_wal_mode(self) -> None:
        with self.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ValueError, match="memory://"):
        open_storage("sqlite://", "uid")


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
