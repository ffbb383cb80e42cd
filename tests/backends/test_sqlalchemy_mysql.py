"""SQLAlchemy storage on MariaDB/MySQL (PyMySQL): the contract suite and backend tests.

Needs MariaDB or MySQL on 127.0.0.1:3306 (user root, no password) with a
database ``test`` (skipped on a laptop without it, a failure when ``CI=true``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from _sql_cases import SQLAlchemyCases
from _sql_lease_cases import ServerLeaseCases
from _sql_timeout_cases import FrozenServerCases
from services import require_service

URL = "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4"

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def sql_engine() -> Iterator[sa.Engine]:
    require_service("MariaDB", "127.0.0.1", 3306)
    engine = sa.create_engine(URL)
    yield engine
    engine.dispose()


class TestMySQLStorage(SQLAlchemyCases):
    dialect = "sqlalchemy/mysql"
    dead_url = "mysql://root:s3cret@127.0.0.1:1/test"


class TestMySQLLeases(ServerLeaseCases):
    """Leases and the due table (the lease contract and SQL specifics)."""


class TestMySQLTimeouts(FrozenServerCases):
    direct_url = URL
    port = 3306

    def settings(self, conn: sa.Connection) -> dict[str, float]:
        row = conn.exec_driver_sql(
            "SELECT @@innodb_lock_wait_timeout, @@max_statement_time, @@idle_transaction_timeout"
        ).one()
        return {"lock": int(row[0]), "statement": float(row[1]), "idle": int(row[2])}
