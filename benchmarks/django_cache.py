"""The Django-cache backends of the benchmarks: ``CacheStorageBackend`` on Django's
RedisCache and on PyMemcacheCache.

Django is configured once per process from ``DJANGO_SETTINGS_MODULE`` =
``benchmarks.django_settings``, which reads its ``CACHES`` from the environment
variable :data:`CACHES_ENV`; the contention benchmark's spawned processes
inherit both and configure Django the same way (as an application's workers
do), then reopen the storage from its reference ``django-cache://<alias>``.

Redis: ``TRIGGERS_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/12``,
``off`` to leave it out), a cache ``KEY_PREFIX`` per run and a key prefix per
benchmark, deleted afterwards. memcached: one server of our own for the run
(the cache's ``LOCATION`` must be known when Django is configured).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from benchmarks.common import StorageFactory
from benchmarks.memcached import memcached_process

#: Where the benchmark's Redis is (``off``: leave the Django Redis backend out).
REDIS_URL_ENV = "TRIGGERS_BENCH_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
SETTINGS_MODULE = "benchmarks.django_settings"
CACHES_ENV = "TRIGGERS_BENCH_DJANGO_CACHES"

REDIS_ALIAS = "redis"
MEMCACHED_ALIAS = "memcached"
#: Backend label -> cache alias.
LABELS = {"django-redis-cache": REDIS_ALIAS, "django-pymemcache": MEMCACHED_ALIAS}

_run_id = uuid.uuid4().hex[:8]
_configured: dict[str, Any] | None = None


def redis_url() -> str:
    return os.environ.get(REDIS_URL_ENV, DEFAULT_REDIS_URL)


def redis_reachable() -> bool:
    url = redis_url()
    if url == "off":
        return False
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1.0):
            return True
    except OSError:
        return False


def _start_memcached() -> str:
    stack = contextlib.ExitStack()
    url = stack.enter_context(memcached_process())
    atexit.register(stack.close)
    return url.removeprefix("memcached://")


def configure(labels: set[str]) -> None:
    """Configure Django (once per process) with a cache per wanted backend label."""
    global _configured  # noqa: PLW0603 - Django's settings are process-wide too
    if _configured is not None:
        return
    caches: dict[str, Any] = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    if "django-redis-cache" in labels:
        caches[REDIS_ALIAS] = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url(),
            "KEY_PREFIX": f"trgbench-{_run_id}",
            "OPTIONS": {"socket_timeout": 10, "socket_connect_timeout": 10},
        }
    if "django-pymemcache" in labels:
        caches[MEMCACHED_ALIAS] = {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "LOCATION": _start_memcached(),
        }
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    os.environ[CACHES_ENV] = json.dumps(caches)
    import django  # noqa: PLC0415 - optional extra

    django.setup()
    _configured = caches


@contextmanager
def django_backend(label: str, labels: set[str]) -> Iterator[StorageFactory]:
    """Sessions in the cache of ``label``, under a key prefix of their own.

    ``labels``: every Django backend of the run (Django is configured once, for all).
    """
    from triggers_backends.django_cache import CacheStorageBackend  # noqa: PLC0415

    configure(labels)
    alias = LABELS[label]
    prefix = f"b{uuid.uuid4().hex[:8]}:"
    try:
        yield lambda session: CacheStorageBackend(session, alias, prefix=prefix)
    finally:
        if alias == REDIS_ALIAS:
            _delete_redis_keys(prefix)


def _delete_redis_keys(prefix: str) -> None:
    import redis  # noqa: PLC0415 - optional

    assert _configured is not None
    pattern = f"{_configured[REDIS_ALIAS]['KEY_PREFIX']}:*:{prefix}*"
    client = redis.Redis.from_url(redis_url(), socket_timeout=30)
    try:
        batch = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(batch), 1000):
            client.delete(*batch[start : start + 1000])
    finally:
        client.close()


def redis_version() -> str | None:
    """``Redis x.y.z`` of the benchmark's Redis, if it answers."""
    if not redis_reachable():
        return None
    try:
        import redis  # noqa: PLC0415 - optional

        client = redis.Redis.from_url(redis_url(), socket_timeout=2)
        try:
            return f"Redis {client.info('server')['redis_version']}"
        finally:
            client.close()
    except Exception:
        return None
