"""Django settings for the Django-cache tests, configured by the tests themselves.

One settings dict per test run (:func:`build_settings`), applied with
``settings.configure`` by :func:`configure`, in the test process and in every
process a multi-process race spawns (they get the same dict). Each run uses its
own names everywhere, so runs on a shared machine never meet:

* Redis: database :data:`REDIS_DB` (no other test suite uses it), and a key prefix
  with the run id for each Redis alias;
* DatabaseCache: one table per run on SQLite (a file in the run's temporary
  directory, database alias ``default``) and one on PostgreSQL (alias ``pg``,
  routed by :class:`CacheRouter`), created with Django's ``createcachetable``;
* LocMemCache: a ``LOCATION`` with the run id;
* memcached: the session's server from ``tests/memcached_server.py``.

Every cache has ``TIMEOUT: 1``: the adapters must ignore it (nothing may expire).

Processes the tests start (the storage contract's spawned racers, Celery workers)
configure Django the way an application's processes do, from
``DJANGO_SETTINGS_MODULE``: :func:`process_environment` names
``django_test_settings``, which reads the run's settings from an environment
variable.

The ``django_settings`` fixture (made available to every test by
``tests/conftest.py``) configures Django once per test session.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
#: Redis database number of these tests (Celery's tests use 0).
REDIS_DB = 13
PG = {"HOST": "127.0.0.1", "PORT": 5432, "NAME": "test", "USER": "postgres"}

#: Cache aliases, by what they exercise.
LOCMEM, REDIS, DJANGO_REDIS, DB_SQLITE, DB_POSTGRES, MEMCACHED = (
    "locmem",
    "redis",
    "django_redis",
    "db_sqlite",
    "db_postgres",
    "memcached",
)
DUMMY, FILEBASED = "dummy", "filebased"

#: The settings module of processes the tests start, and where it finds the settings.
SETTINGS_MODULE = "django_test_settings"
SETTINGS_ENV = "TRIGGERS_TEST_DJANGO_SETTINGS"

_configured: dict[str, Any] | None = None


def build_settings(run_id: str, workdir: Path, memcached: str | None) -> dict[str, Any]:
    """The settings of one test run (plain data: it is sent to spawned processes)."""
    redis_url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    pg_table = f"trg_cache_pg_{run_id}"

    def cache(backend: str, location: str, **extra: Any) -> dict[str, Any]:
        return {"BACKEND": backend, "LOCATION": location, "TIMEOUT": 1, **extra}

    return {
        "DEBUG": False,
        "USE_TZ": True,
        "SECRET_KEY": f"tests-{run_id}",
        "INSTALLED_APPS": [],
        "DATABASES": {
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(workdir / "django.sqlite3"),
                "OPTIONS": {"timeout": 60},
            },
            "pg": {"ENGINE": "django.db.backends.postgresql", **PG},
        },
        "DATABASE_ROUTERS": ["django_env.CacheRouter"],
        "TRIGGERS_TEST_PG_CACHE_TABLE": pg_table,
        "CACHES": {
            "default": cache("django.core.cache.backends.locmem.LocMemCache", f"d-{run_id}"),
            LOCMEM: cache("django.core.cache.backends.locmem.LocMemCache", f"l-{run_id}"),
            REDIS: cache(
                "django.core.cache.backends.redis.RedisCache",
                redis_url,
                KEY_PREFIX=f"trg-{run_id}-dj",
            ),
            DJANGO_REDIS: cache(
                "django_redis.cache.RedisCache", redis_url, KEY_PREFIX=f"trg-{run_id}-dr"
            ),
            DB_SQLITE: cache("django.core.cache.backends.db.DatabaseCache", f"trg_cache_{run_id}"),
            DB_POSTGRES: cache("django.core.cache.backends.db.DatabaseCache", pg_table),
            MEMCACHED: cache(
                "django.core.cache.backends.memcached.PyMemcacheCache",
                memcached or "127.0.0.1:1",
                KEY_PREFIX=f"trg-{run_id}",
            ),
            DUMMY: cache("django.core.cache.backends.dummy.DummyCache", ""),
            FILEBASED: cache(
                "django.core.cache.backends.filebased.FileBasedCache", str(workdir / "files")
            ),
        },
    }


def process_environment(spec: dict[str, Any]) -> dict[str, str]:
    """Environment variables that make a new process configure Django with ``spec``."""
    return {"DJANGO_SETTINGS_MODULE": SETTINGS_MODULE, SETTINGS_ENV: json.dumps(spec)}


def configure(spec: dict[str, Any]) -> None:
    """Apply ``spec`` once per process (again with the same spec: nothing to do)."""
    global _configured  # noqa: PLW0603 - Django's settings are process-wide too
    if _configured is not None:
        if _configured != spec:
            raise RuntimeError("Django is already configured with other test settings")
        return
    import django
    from django.conf import settings

    settings.configure(**spec)
    django.setup()
    _configured = spec


class CacheRouter:
    """Routes the PostgreSQL cache table to ``pg``; everything else to ``default``."""

    def _target(self, model: Any) -> str | None:
        from django.conf import settings

        if getattr(model._meta, "app_label", None) != "django_cache":
            return None
        if model._meta.db_table == settings.TRIGGERS_TEST_PG_CACHE_TABLE:
            return "pg"
        return "default"

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return self._target(model)

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return self._target(model)

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        model = hints.get("model")
        if model is None:
            return None
        return self._target(model) == db


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def new_run_id() -> str:
    return uuid.uuid4().hex[:10]


def create_cache_tables(pg_available: bool) -> None:
    """``createcachetable`` on SQLite, and on PostgreSQL when it is reachable."""
    from django.core.management import call_command

    call_command("createcachetable", database="default", verbosity=0)
    if pg_available:
        call_command("createcachetable", database="pg", verbosity=0)


def drop_pg_cache_table() -> None:
    from django.conf import settings
    from django.db import connections

    with connections["pg"].cursor() as cursor:
        table = connections["pg"].ops.quote_name(settings.TRIGGERS_TEST_PG_CACHE_TABLE)
        cursor.execute(f"DROP TABLE IF EXISTS {table}")


def delete_redis_keys(spec: dict[str, Any]) -> None:
    """Remove this run's keys from the test Redis database."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=10)
    try:
        for alias in (REDIS, DJANGO_REDIS):
            prefix = spec["CACHES"][alias]["KEY_PREFIX"]
            batch = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for start in range(0, len(batch), 500):
                client.delete(*batch[start : start + 500])
    finally:
        client.close()


@pytest.fixture(scope="session")
def django_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Django configured for the Django-cache tests; yields the settings dict, which
    spawned processes apply to themselves (``configure`` or :func:`process_environment`)."""
    # The memcached cache needs the session's server; without the binary only the
    # memcached tests fail (or skip on a laptop), through the fixture they request.
    address = request.getfixturevalue("memcached").address if shutil.which("memcached") else None
    spec = build_settings(new_run_id(), tmp_path_factory.mktemp("dj"), address)
    configure(spec)
    pg_available = port_open(PG["PORT"])
    create_cache_tables(pg_available)
    yield spec
    if pg_available:
        drop_pg_cache_table()
    if port_open(REDIS_PORT):
        delete_redis_keys(spec)
