"""SQLAlchemy storage on PostgreSQL (psycopg 3): the contract suite and backend tests.

Needs PostgreSQL on 127.0.0.1:5432 with a database ``test`` (skipped on a laptop
without it, a failure when ``CI=true``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from _sql_cases import SQLAlchemyCases
from _sql_lease_cases import ServerLeaseCases
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


class TestPostgresLeases(ServerLeaseCases):
    """Leases and the due table (the lease contract and SQL specifics)."""

    # The due writes ride on the version UPDATE (one statement with CTEs).
    extra_due_statements = (0, 0)


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


def test_a_url_without_a_password_never_borrows_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither from TRIGGERS_STORAGE_URL nor from an engine opened with a password.

    Borrowing was how a forged reference (the same database, plus ``?port=`` or
    ``?hostaddr=`` pointing elsewhere) got a worker to send its password to
    another server.
    """
    from triggers_backends.sqlalchemy import SQLAlchemyStorage, dispose_engines
    from triggers_core import open_storage

    monkeypatch.setenv("TRIGGERS_STORAGE_URL", "postgresql://postgres:s3cret@127.0.0.1:1/test")
    try:
        with_password = open_storage("postgresql+psycopg://postgres:s3cret@127.0.0.1:1/test", "u")
        assert isinstance(with_password, SQLAlchemyStorage)
        assert with_password.engine.url.password == "s3cret"
        assert "s3cret" not in with_password.reference()
        for url in [
            "postgresql+psycopg://postgres@127.0.0.1:1/test",
            "postgresql+psycopg://postgres@127.0.0.1:1/test?port=2",
            "postgresql+psycopg://postgres@127.0.0.1:1/test?hostaddr=127.0.0.2",
            "postgresql+psycopg://postgres@127.0.0.1:1/other",
        ]:
            storage = open_storage(url, "u")
            assert isinstance(storage, SQLAlchemyStorage)
            assert storage.engine is not with_password.engine, url
            assert storage.engine.url.password is None, url
    finally:
        dispose_engines()


def test_two_tickers_race_on_a_thousand_due_timers(sql_engine: sa.Engine) -> None:
    """Issue 24: 1,000 due timers, two tickers at once: each fires exactly once."""
    from triggers_backends.sqlalchemy import SQLAlchemyStorage, create_schema, drop_schema
    from triggers_core.testing.timer_contract import TimerContract

    prefix = f"r{uuid.uuid4().hex[:12]}_"
    create_schema(sql_engine, prefix)

    class Race(TimerContract):
        timer_race_sessions = 1000

        def make_storage(self, uid: str) -> SQLAlchemyStorage:
            return SQLAlchemyStorage(uid, sql_engine, table_prefix=prefix)

    try:
        Race().test_two_tickers_racing_apply_each_timer_once(f"timer-{uuid.uuid4().hex}")
    finally:
        drop_schema(sql_engine, prefix)


def test_two_tickers_race_on_a_thousand_due_retry_cooldowns(sql_engine: sa.Engine) -> None:
    """Issue 24: 1,000 retries waiting for their cooldown, two tickers at once: each clone is
    scheduled (and dispatched) exactly once."""
    from triggers_backends.sqlalchemy import SQLAlchemyStorage, create_schema, drop_schema
    from triggers_core.testing.timer_contract import TimerContract

    prefix = f"r{uuid.uuid4().hex[:12]}_"
    create_schema(sql_engine, prefix)

    class Race(TimerContract):
        retry_race_sessions = 1000

        def make_storage(self, uid: str) -> SQLAlchemyStorage:
            return SQLAlchemyStorage(uid, sql_engine, table_prefix=prefix)

    try:
        Race().test_two_tickers_racing_schedule_each_retry_once(f"retry-{uuid.uuid4().hex}")
    finally:
        drop_schema(sql_engine, prefix)
