"""The variants of issue 22: a broker, a storage, and what to count on them.

Each :func:`open_variant` is a context manager that prepares the storage
(fresh tables, a fresh memcached, or a fresh key prefix in the Django cache),
yields a :class:`Variant`, and removes what it made. The floor variants
(``floor-redis``, ``floor-rabbitmq``) have a broker and no storage: they
run the same message flow as plain Celery tasks
(:mod:`benchmarks.celery_e2e.floor`). Servers are found where the test
suite finds them; environment variables override the URLs:

* ``TRIGGERS_BENCH_E2E_REDIS_BROKER`` (default ``redis://127.0.0.1:6379/11``)
* ``TRIGGERS_BENCH_E2E_AMQP_BROKER`` (default ``amqp://guest:guest@127.0.0.1:5672//``)
* ``TRIGGERS_BENCH_POSTGRES_URL`` (storage and effect rows; default the test database)
* ``TRIGGERS_BENCH_REDIS_URL`` (the Django cache's Redis, default database 12)
* ``TRIGGERS_BENCH_MEMCACHED_URL`` (default: a memcached started for the run)
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs

from benchmarks import django_cache
from benchmarks.backends import DEFAULT_URLS, URL_ENV, sql_backend
from benchmarks.celery_e2e.verify import BenchmarkFailure
from benchmarks.memcached import MEMCACHED_URL_ENV, memcached_backend, memcached_version

REDIS_BROKER_ENV = "TRIGGERS_BENCH_E2E_REDIS_BROKER"
AMQP_BROKER_ENV = "TRIGGERS_BENCH_E2E_AMQP_BROKER"
DEFAULT_REDIS_BROKER = "redis://127.0.0.1:6379/11"
DEFAULT_AMQP_BROKER = "amqp://guest:guest@127.0.0.1:5672//"

#: Variant name -> what it is, in the report.
VARIANTS: Mapping[str, str] = {
    "redis-django": "Redis broker + `django-cache://` on Redis",
    "redis-memcached": "Redis broker + `memcached://`",
    "rabbitmq-postgresql": "RabbitMQ + PostgreSQL",
    "floor-redis": "Celery alone, Redis broker",
    "floor-rabbitmq": "Celery alone, RabbitMQ",
}
#: The floor variants: Celery alone, no Triggers, no storage.
FLOORS = frozenset({"floor-redis", "floor-rabbitmq"})


def is_floor(name: str) -> bool:
    return name in FLOORS


def broker_of(name: str) -> str:
    """``"redis"`` or ``"rabbitmq"``: the broker of variant ``name``."""
    return "rabbitmq" if name.startswith("rabbitmq-") or name == "floor-rabbitmq" else "redis"


@attrs.frozen
class Variant:
    name: str
    broker: str
    storage: str
    counting: Mapping[str, Any]
    #: Extra environment of every subprocess (the Django settings for ``redis-django``).
    env: Mapping[str, str]
    #: Server versions, for the report.
    versions: str

    @property
    def floor(self) -> bool:
        return is_floor(self.name)


def postgres_url() -> str:
    """The SQLAlchemy URL of the PostgreSQL server (storage, and the effect rows)."""
    return os.environ.get(URL_ENV["postgresql"], DEFAULT_URLS["postgresql"])


def libpq_dsn(url: str) -> str:
    """The libpq form (``postgresql://...``) of a SQLAlchemy ``postgresql+driver://`` URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith("postgresql"):
        raise BenchmarkFailure(f"not a PostgreSQL URL: {scheme}://...")
    return f"postgresql://{rest}"


def require(label: str, url: str, default_port: int) -> None:
    """Fail with a clear message unless the server of ``url`` accepts connections."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), 2.0):
            return
    except OSError as exc:
        raise BenchmarkFailure(f"{label} is not reachable at {host}:{port} ({exc})") from None


def _redis_location(url: str) -> list[int]:
    parts = urlsplit(url)
    return [parts.port or 6379, int(parts.path.strip("/") or 0)]


def postgres_version() -> str:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(libpq_dsn(postgres_url()), connect_timeout=5) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


def rabbitmq_version(url: str) -> str:
    from kombu import Connection  # noqa: PLC0415

    with Connection(url, connect_timeout=5) as conn:
        conn.ensure_connection(max_retries=1)
        version = conn.connection.server_properties.get("version", "?")
    return f"RabbitMQ {version.decode() if isinstance(version, bytes) else version}"


@contextmanager
def open_variant(name: str) -> Iterator[Variant]:
    """Prepare variant ``name``'s storage; yield it; remove what was made."""
    if name not in VARIANTS:
        raise BenchmarkFailure(f"no such variant {name!r}; the variants are {sorted(VARIANTS)}")
    require("PostgreSQL (effect rows)", postgres_url(), 5432)
    if broker_of(name) == "redis":
        broker = os.environ.get(REDIS_BROKER_ENV, DEFAULT_REDIS_BROKER)
        require("Redis (broker)", broker, 6379)
        broker_versions = str(django_cache.redis_version() or "Redis ?") + " broker"
    else:
        broker = os.environ.get(AMQP_BROKER_ENV, DEFAULT_AMQP_BROKER)
        require("RabbitMQ (broker)", broker, 5672)
        broker_versions = rabbitmq_version(broker)
    if is_floor(name):
        counting = {"broker_redis": _redis_location(broker)} if broker_of(name) == "redis" else {}
        yield Variant(
            name, broker, "", counting, {}, f"{broker_versions}; PostgreSQL for effect rows"
        )
    elif name == "redis-django":
        with _django_redis(broker, broker_versions) as variant:
            yield variant
    elif name == "redis-memcached":
        with _memcached(broker, broker_versions) as variant:
            yield variant
    else:
        with sql_backend(postgres_url()) as make:
            yield Variant(
                name,
                broker,
                _reference(make),
                {"storage": "sql"},
                {},
                f"{broker_versions}; {postgres_version()} (storage and effect rows)",
            )


def _reference(make: Any) -> str:
    storage = make("reference-probe")
    try:
        reference = storage.reference()
    finally:
        with contextlib.suppress(Exception):
            storage.close()
    if not reference:
        raise BenchmarkFailure("the storage has no reference URL that workers could open")
    return str(reference)


@contextmanager
def _django_redis(broker: str, broker_versions: str) -> Iterator[Variant]:
    cache_url = django_cache.redis_url()
    require("Redis (Django cache)", cache_url, 6379)
    storage_at, broker_at = _redis_location(cache_url), _redis_location(broker)
    if storage_at == broker_at:
        raise BenchmarkFailure(
            f"the Django cache ({cache_url}) and the broker ({broker}) share a Redis database; "
            "their round trips could not be told apart"
        )
    import django  # noqa: PLC0415 - only for this variant

    with django_cache.django_backend("django-redis-cache", {"django-redis-cache"}) as make:
        env = {key: os.environ[key] for key in ("DJANGO_SETTINGS_MODULE", django_cache.CACHES_ENV)}
        yield Variant(
            "redis-django",
            broker,
            _reference(make),
            {"storage": "redis", "storage_redis": storage_at, "broker_redis": broker_at},
            env,
            f"{broker_versions}; cache on {django_cache.redis_version()} "
            f"(Django {django.get_version()} RedisCache); PostgreSQL for effect rows",
        )


@contextmanager
def _memcached(broker: str, broker_versions: str) -> Iterator[Variant]:
    with memcached_backend(os.environ.get(MEMCACHED_URL_ENV)) as make:
        yield Variant(
            "redis-memcached",
            broker,
            _reference(make),
            {"storage": "memcached", "broker_redis": _redis_location(broker)},
            {},
            f"{broker_versions}; {memcached_version()}; PostgreSQL for effect rows",
        )
