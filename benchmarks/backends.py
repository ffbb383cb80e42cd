"""The backends the benchmarks run on: memory, SQLite, the database servers that answer,
memcached (:mod:`benchmarks.memcached`) and the Django caches (:mod:`benchmarks.django_cache`)."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks import django_cache
from benchmarks.common import Backend, StorageFactory
from benchmarks.memcached import MEMCACHED_URL_ENV, memcached_backend
from triggers_core import MemoryStorage, MemoryStore

DEFAULT_URLS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test",
}
URL_ENV = {"postgresql": "TRIGGERS_BENCH_POSTGRES_URL", "mariadb": "TRIGGERS_BENCH_MYSQL_URL"}


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
