"""What every benchmark shares: the backends, a recording runner, seeding and timing helpers."""

from __future__ import annotations

import os
import socket
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from triggers_core import MemoryStorage, MemoryStore, SessionState, Storage, TriggerManager
from triggers_core.effects import ScheduleInstance
from triggers_core.runners import TaskRunner
from triggers_core.scopes import Changes

StorageFactory = Callable[[str], Storage]

DEFAULT_URLS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test",
}
URL_ENV = {"postgresql": "TRIGGERS_BENCH_POSTGRES_URL", "mariadb": "TRIGGERS_BENCH_MYSQL_URL"}


@attrs.frozen
class Backend:
    """A named way to make storages; ``open()`` sets it up and tears it down."""

    label: str
    open: Callable[[], AbstractContextManager[StorageFactory]]
    #: A URL child processes can reopen storages from (None: in-process only).
    shared: bool = True


class RecordingRunner(TaskRunner):
    """Records dispatches and runs nothing: the fire is timed, not the task."""

    name = "bench-recording"

    def __init__(self) -> None:
        self.dispatched: list[str] = []

    def dispatch(self, manager: TriggerManager, effect: ScheduleInstance) -> None:
        self.dispatched.append(effect.instance_name)


def recording_manager(storage: Storage) -> tuple[TriggerManager, RecordingRunner]:
    runner = RecordingRunner()
    return TriggerManager(storage, runners={"rec": runner}, default_runner="rec"), runner


def uid(label: str) -> str:
    return f"bench-{label}-{uuid.uuid4().hex}"


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(call: Callable[[], Any]) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


# -- seeding a session without thousands of round trips ------------------------------


def clock(start: datetime | None = None) -> Callable[[], datetime]:
    """A deterministic clock for building states with the pure engine."""
    ticks = iter(range(10**9))
    origin = start or datetime(2024, 1, 1, tzinfo=UTC)
    return lambda: origin + timedelta(milliseconds=next(ticks))


def store_state(storage: Storage, state: SessionState) -> None:
    """Write ``state`` (built with the pure engine) as a new session in one commit."""
    names = frozenset(state.instances)
    storage.compare_and_swap(None, state, Changes(instances=names, created=names, config=True))


# -- backends ----------------------------------------------------------------------


@contextmanager
def memory_backend() -> Iterator[StorageFactory]:
    store = MemoryStore()
    yield lambda session: MemoryStorage(session, store)


@contextmanager
def sql_backend(url: str, **options: str) -> Iterator[StorageFactory]:
    from triggers_backends.sqlalchemy import (  # noqa: PLC0415 - optional extra
        SQLAlchemyStorage,
        create_schema,
        drop_schema,
        shared_engine,
    )

    engine = shared_engine(url)
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    create_schema(engine, prefix)
    try:
        yield lambda session: SQLAlchemyStorage(session, engine, table_prefix=prefix, **options)
    finally:
        drop_schema(engine, prefix)


def reachable(url: str) -> bool:
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - only when SQL backends run

    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 0), 1.0):
            return True
    except OSError:
        return False


def backends(tmp: str, wanted: set[str] | None = None) -> list[Backend]:
    """memory, sqlite (FULL and NORMAL), and the database servers that answer."""
    sqlite_url = f"sqlite:///{os.path.join(tmp, 'bench.db')}"
    found = [
        Backend("memory", memory_backend, shared=False),
        Backend("sqlite", lambda: sql_backend(sqlite_url)),
        Backend("sqlite-normal", lambda: sql_backend(sqlite_url, sqlite_synchronous="normal")),
    ]
    for label in ("postgresql", "mariadb"):
        if wanted is not None and label not in wanted:
            continue
        url = os.environ.get(URL_ENV[label], DEFAULT_URLS[label])
        if url != "off" and reachable(url):
            found.append(Backend(label, lambda url=url: sql_backend(url)))  # type: ignore[misc]
        elif url != "off":
            print(f"({label}: not reachable at {url}; skipped)", flush=True)
    return [b for b in found if wanted is None or b.label in wanted]
