"""SQLAlchemy storage on PostgreSQL (psycopg 3): the contract suite and backend tests.

Needs PostgreSQL on 127.0.0.1:5432 with a database ``test`` (skipped on a laptop
without it, a failure when ``CI=true``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from _sql_cases import SQLAlchemyCases
from _sql_timeout_cases import FrozenServerCases
from services import require_service

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def sql_engine() -> Iterator[sa.Engine]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    engine = sa.create_engine(URL)
    yield engine
    engine.dispose()


class TestPostgresStorage(SQLAlchemyCases):
    dialect = "sqlalchemy/postgresql"
    dead_url = "postgresql://postgres:s3cret@127.0.0.1:1/test"


class TestPostgresTimeouts(FrozenServerCases):
    direct_url = URL
    port = 5432

    def settings(self, conn: sa.Connection) -> dict[str, float]:
        def seconds(name: str) -> float:
            value = conn.exec_driver_sql(f"SELECT current_setting('{name}')").scalar_one()
            return (
                int(value.removesuffix("s")) if value.endswith("s") and value[-2].isdigit() else -1
            )

        return {
            "lock": seconds("lock_timeout"),
            "statement": seconds("statement_timeout"),
            "idle": seconds("idle_in_transaction_session_timeout"),
        }


def test_password_comes_from_the_environment_not_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from triggers_backends.sqlalchemy import SQLAlchemyStorage, dispose_engines
    from triggers_core import open_storage

    monkeypatch.setenv("TRIGGERS_STORAGE_URL", "postgresql://postgres:s3cret@127.0.0.1:1/test")
    try:
        storage = open_storage("postgresql+psycopg://postgres@127.0.0.1:1/test", "u")
        assert isinstance(storage, SQLAlchemyStorage)
        assert storage.engine.url.password == "s3cret"
        assert "s3cret" not in storage.reference()
        other = open_storage("postgresql+psycopg://postgres@127.0.0.1:1/other", "u")
        assert isinstance(other, SQLAlchemyStorage)
        assert other.engine.url.password is None
    finally:
        dispose_engines()
