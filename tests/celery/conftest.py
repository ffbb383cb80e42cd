"""Fixtures for the Celery tests: storages, brokers and real ``celery worker`` processes.

Workers are started per broker once per test session (two of them, sharing one
queue) and stopped at the end: SIGTERM, then SIGKILL after a timeout, always
in a ``finally``. Every process a test starts is tracked so that none is left
behind, even when a test fails half-way. Broker and database tests skip on a
laptop without the server and fail in CI (``tests/services.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import (
    BROKERS,
    PG_DSN,
    PG_PASSWORD,
    RUN_ID,
    STARTED,
    WorkerProcess,
    queue_for,
    start_worker,
    stop_all,
)
from services import require_service
from worker_app import EFFECTS_TABLE


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """Whatever happens, no worker outlives the test session."""
    try:
        yield
    finally:
        stop_all(list(STARTED), timeout=5)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("celery-workers")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL storage URL (with a password) on tables private to this run."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    from triggers_backends.sqlalchemy import create_schema, drop_schema, shared_engine

    prefix = f"tc{RUN_ID}_"
    base = f"postgresql+psycopg://postgres:{PG_PASSWORD}@127.0.0.1:5432/test"
    engine = shared_engine(base)
    create_schema(engine, prefix)
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {EFFECTS_TABLE} ("
            " session text NOT NULL, instance text NOT NULL, pid integer NOT NULL,"
            " PRIMARY KEY (session, instance))"
        )
    try:
        yield f"{base}?triggers_prefix={prefix}"
    finally:
        drop_schema(engine, prefix)
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DELETE FROM {EFFECTS_TABLE} WHERE session LIKE %s", (f"%{RUN_ID}%",))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("celery-sqlite") / "triggers.db"
    return f"sqlite:///{path}?triggers_create_schema=true"


@pytest.fixture(scope="session")
def storages(pg_url: str, sqlite_url: str) -> dict[str, str]:
    """The ``triggers_storages`` setting of the workers and of the sender app."""
    return {"default": pg_url, "sqlite": sqlite_url}


@pytest.fixture(scope="session", params=sorted(BROKERS))
def broker(request: pytest.FixtureRequest) -> str:
    """Each broker in turn (tests are grouped by broker so workers start once each)."""
    label, host, port, url = BROKERS[request.param]
    require_service(label, host, port)
    return url


@pytest.fixture(scope="session")
def sender(broker: str, storages: dict[str, str]) -> Iterator[Any]:
    """The test process's Celery app on ``broker`` (same settings as the workers)."""
    from worker_app import make_app

    app = make_app(broker, queue_for(broker), storages)
    yield app
    app.close()


@pytest.fixture(scope="session")
def workers(broker: str, storages: dict[str, str], log_dir: Path) -> Iterator[list[WorkerProcess]]:
    """Two workers consuming the broker's main queue, for the whole session."""
    queue = queue_for(broker)
    kind = queue.rsplit("-", 1)[1]
    started = [
        start_worker(f"{kind}{n}-{RUN_ID}", broker, [queue], storages, log_dir) for n in (1, 2)
    ]
    try:
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        stop_all(started)
