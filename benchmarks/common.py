"""What every benchmark shares: the backends, a recording runner, seeding and timing helpers."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
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


#: A memcached to use instead of starting one (``off``: leave memcached out).
MEMCACHED_URL_ENV = "TRIGGERS_BENCH_MEMCACHED_URL"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def memcached_process() -> Iterator[str]:
    """A ``memcached`` of our own on 127.0.0.1 (1 GB, default item size); yields its URL."""
    port = _free_port()
    command = [shutil.which("memcached") or "memcached", "-l", "127.0.0.1", "-p", str(port)]
    command += ["-U", "0", "-m", "1024", "-t", "2", "-c", "1024"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command += ["-u", "root"]  # memcached refuses to run as root without -u
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"memcached did not start ({' '.join(command)})") from None
                time.sleep(0.02)
        yield f"memcached://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def memcached_backend(url: str | None) -> Iterator[StorageFactory]:
    """Sessions in memcached: the server at ``url``, or a fresh one of our own."""
    from triggers_backends.memcached import (  # noqa: PLC0415 - optional extra
        MemcachedStorage,
        close_clients,
    )

    with contextlib.ExitStack() as stack:
        if url is None:
            url = stack.enter_context(memcached_process())
        prefix = f"bench{uuid.uuid4().hex[:8]}:"
        stack.callback(close_clients)
        yield lambda session: MemcachedStorage(session, url, prefix=prefix)


def memcached_version() -> str | None:
    """The version of the memcached the benchmarks use (the server's, or the binary's)."""
    url = os.environ.get(MEMCACHED_URL_ENV)
    if url == "off":
        return None
    try:
        if url is None:
            done = subprocess.run(
                ["memcached", "-V"], capture_output=True, text=True, timeout=10, check=True
            )
            return done.stdout.strip()
        from pymemcache.client.base import Client  # noqa: PLC0415 - optional extra

        from triggers_backends.memcached import parse_url  # noqa: PLC0415
        from triggers_backends.pymemcache_client import parse_servers  # noqa: PLC0415

        client = Client(parse_servers(parse_url(url)[0])[0], connect_timeout=1, timeout=1)
        try:
            return f"memcached {client.version().decode()}"
        finally:
            client.close()
    except Exception:
        return None


def backends(tmp: str, wanted: set[str] | None = None) -> list[Backend]:
    """memory, sqlite (FULL and NORMAL), memcached, the database servers that answer, and
    the Django caches (Redis, memcached) that can run."""
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
    if wanted is None or "memcached" in wanted:
        url = os.environ.get(MEMCACHED_URL_ENV)
        if url != "off" and (url is not None or shutil.which("memcached")):
            found.append(Backend("memcached", lambda: memcached_backend(url)))
        elif url != "off":
            print("(memcached: not installed and no TRIGGERS_BENCH_MEMCACHED_URL; skipped)")
    found += _django_backends(wanted)
    return [b for b in found if wanted is None or b.label in wanted]


def _django_backends(wanted: set[str] | None) -> list[Backend]:
    """CacheStorageBackend on Django's RedisCache and PyMemcacheCache, where available."""
    from benchmarks import django_cache  # noqa: PLC0415 - needs Django only when used

    labels: set[str] = set()
    if wanted is None or "django-redis-cache" in wanted:
        if django_cache.redis_reachable():
            labels.add("django-redis-cache")
        elif django_cache.redis_url() != "off":
            print(f"(django-redis-cache: no Redis at {django_cache.redis_url()}; skipped)")
    if wanted is None or "django-pymemcache" in wanted:
        if shutil.which("memcached"):
            labels.add("django-pymemcache")
        else:
            print("(django-pymemcache: memcached is not installed; skipped)")
    return [
        Backend(label, lambda label=label: django_cache.django_backend(label, labels))  # type: ignore[misc]
        for label in sorted(labels, reverse=True)  # the Redis cache first
    ]
