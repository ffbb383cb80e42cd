"""Shared fixtures. ``storage_factory`` is parametrized over storage backends so the
end-to-end behaviour suite runs unchanged on each (see STORAGE_KINDS)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django_env import django_settings  # noqa: F401 - a fixture for every test
from memcached_server import (  # noqa: F401 - fixtures for every test
    MemcachedServer,
    memcached,
    memcached_small,
)
from services import services_required

from triggers_core import MemoryStorage, MemoryStore, Storage

#: Storage kinds the behaviour suite runs on. Backends add themselves here.
STORAGE_KINDS = ["memory", "sqlite", "memcached", "django_cache"]

StorageFactory = Callable[[str], Storage]


@pytest.fixture(autouse=True)
def _stop_background_sweepers() -> Iterator[None]:
    """Stop the store sweepers a test's threading managers started (their stores go away)."""
    from triggers_core.runtime.recovery import StoreSweeper

    before = set(StoreSweeper._running.values())
    yield
    for sweeper in list(StoreSweeper._running.values()):
        if sweeper not in before:
            sweeper.stop()


@pytest.fixture
def session_uid() -> str:
    """A fresh session UID per test."""
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def sqlite_storage_factory(tmp_path: Path) -> Iterator[StorageFactory]:
    """``make(uid)`` on a SQLite file (WAL) in ``tmp_path``, tables created."""
    import sqlalchemy as sa

    from triggers_backends.sqlalchemy import SQLAlchemyStorage, create_schema

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'triggers.db'}")
    create_schema(engine)
    yield lambda uid: SQLAlchemyStorage(uid, engine)
    engine.dispose()


@pytest.fixture
def memcached_storage_factory(request: pytest.FixtureRequest) -> Iterator[StorageFactory]:
    """``make(uid)`` on the test session's memcached, with a key prefix of its own."""
    from triggers_backends.memcached import MemcachedStorage
    from triggers_backends.pymemcache_client import PymemcacheClient

    server: MemcachedServer = request.getfixturevalue("memcached")
    client = PymemcacheClient(server.address, timeout=10)
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    yield lambda uid: MemcachedStorage(uid, client, prefix=prefix)
    client.close()


@pytest.fixture
def django_cache_storage_factory(request: pytest.FixtureRequest) -> StorageFactory:
    """``make(uid)`` on Django's RedisCache (the test Redis database), a key prefix of its own."""
    import django_env
    from services import require_service

    require_service("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)
    request.getfixturevalue("django_settings")
    from triggers_backends.django_cache import CacheStorageBackend

    prefix = f"t{uuid.uuid4().hex[:12]}:"
    return lambda uid: CacheStorageBackend(uid, django_env.REDIS, prefix=prefix)


#: SQL servers some behaviour tests run on too (``every_storage_factory``).
SQL_SERVERS = {
    "postgresql": ("PostgreSQL", 5432, "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": ("MariaDB", 3306, "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4"),
}


@pytest.fixture(params=[*STORAGE_KINDS, *SQL_SERVERS])
def every_storage_factory(request: pytest.FixtureRequest) -> Iterator[StorageFactory]:
    """``make(uid)`` on the behaviour suite's storages, then PostgreSQL and MariaDB (a
    table prefix of its own, dropped afterwards)."""
    if request.param == "memory":
        store = MemoryStore()
        yield lambda uid: MemoryStorage(uid, store)
        return
    if request.param in STORAGE_KINDS:
        yield request.getfixturevalue(f"{request.param}_storage_factory")
        return
    import sqlalchemy as sa
    from services import require_service

    from triggers_backends.sqlalchemy import SQLAlchemyStorage, create_schema, drop_schema

    label, port, url = SQL_SERVERS[request.param]
    require_service(label, "127.0.0.1", port)
    engine = sa.create_engine(url)
    prefix = f"g{uuid.uuid4().hex[:10]}_"
    create_schema(engine, prefix)
    try:
        yield lambda uid: SQLAlchemyStorage(uid, engine, table_prefix=prefix)
    finally:
        drop_schema(engine, prefix)
        engine.dispose()


@pytest.fixture(params=STORAGE_KINDS)
def storage_factory(request: pytest.FixtureRequest) -> Iterator[StorageFactory]:
    """Returns ``make(uid) -> Storage`` on the parametrized backend."""
    kind = request.param
    if kind == "memory":
        store = MemoryStore()
        yield lambda uid: MemoryStorage(uid, store)
        return
    factory = request.getfixturevalue(f"{kind}_storage_factory")
    yield factory


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI, any skipped test fails the run: CI must never pass by running less.

    ``tests/services.py`` already fails service tests whose server is missing;
    this catches every other way a test could quietly not run.
    """
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if services_required() and skipped and exitstatus == 0:
        reasons = sorted({str(getattr(report, "longrepr", "")) for report in skipped})
        print(f"\nCI=true: {len(skipped)} test(s) skipped, which CI treats as failure:")
        for reason in reasons:
            print(f"  {reason}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
