"""The pool of an async engine keeps its connections under a burst of coroutines.

With SQLAlchemy's default (5 kept, 10 overflow), connections handed back in one
turn of the loop pile up in the pool's queue before the coroutines waiting for
them run, and the pool closes the overflow that the waiters then open again
(issue 27's benchmark: 129 connections opened for 15 slots). The async storage
keeps all 15 (``POOL_SIZE``, no overflow): at most 15 are ever opened.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from services import require_service
from sqlalchemy.pool import Pool

from triggers_backends.sqlalchemy import create_schema, drop_schema
from triggers_backends.sqlalchemy.asyncio import (
    POOL_SIZE,
    AsyncSQLAlchemyStorage,
    dispose_async_engines,
)

pytestmark = pytest.mark.service

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def prefix() -> Iterator[str]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    engine = sa.create_engine(PG)
    prefix = f"q{uuid.uuid4().hex[:12]}_"
    create_schema(engine, prefix)
    yield prefix
    drop_schema(engine, prefix)
    engine.dispose()


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
def test_a_burst_of_coroutines_opens_at_most_the_pool_size(prefix: str, driver: str) -> None:
    url = f"postgresql+{driver}://postgres@127.0.0.1:5432/test?triggers_prefix={prefix}"
    opened: list[object] = []

    def count(dbapi_connection: object, record: object) -> None:
        opened.append(dbapi_connection)

    async def burst() -> int:
        storages = [AsyncSQLAlchemyStorage.from_url(url, f"pool-{n}") for n in range(100)]

        async def loads(storage: AsyncSQLAlchemyStorage) -> None:
            for _ in range(5):
                assert (await storage.load()).version is None  # no such session yet

        await asyncio.gather(*(loads(s) for s in storages))
        concurrent = len(opened)
        await dispose_async_engines()
        return concurrent

    sa.event.listen(Pool, "connect", count)
    try:
        assert asyncio.run(burst()) <= POOL_SIZE
    finally:
        sa.event.remove(Pool, "connect", count)
    assert len(opened) > 1  # the burst did use several connections at once
