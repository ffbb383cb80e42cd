"""The Django-cache key-value adapters: the client contract on every supported cache
(multi-process race included where the cache is shared), no expiry, the value
encoding, and what is specific to each cache class.

Django is configured by the ``django_settings`` fixture (``conftest.py``,
``django_env.py``): real Redis, a memcached the run starts, DatabaseCache on
SQLite and PostgreSQL, LocMem; each cache has ``TIMEOUT: 1``.
"""

from __future__ import annotations

import functools
import pickle
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import django_env
import pytest
from kv_client_contract import AtomicCommitContract, KeyValueClientContract
from services import require_service

from triggers_backends.django_cache._common import ENVELOPE
from triggers_backends.kv_client import KeyValueClient, KeyValueError, KeyValueUnavailable

#: Small, so the contract's too-large test stays cheap.
MAX_VALUE_SIZE = 256 * 1024


def build_client(spec: dict[str, Any], alias: str, **options: Any) -> KeyValueClient:
    """Configure Django from ``spec`` (in a spawned process) and open ``alias``."""
    django_env.configure(spec)
    from triggers_backends.django_cache import key_value_client

    return key_value_client(alias, **options)


class DjangoCacheCases(KeyValueClientContract):
    """The contract plus the no-expiry and encoding checks, on one cache alias."""

    alias: ClassVar[str]
    #: (name, host, port) of the server the cache needs, if any.
    service: ClassVar[tuple[str, str, int] | None] = None
    #: What Django's own ``cache.get`` raises on one of our keys (it must never unpickle);
    #: None: it returns the stored bytes as they are.
    foreign_read_error: ClassVar[type[BaseException] | None] = pickle.UnpicklingError

    @pytest.fixture(autouse=True)
    def _django(self, django_settings: dict[str, Any]) -> None:
        if self.service is not None:
            require_service(*self.service)
        self.spec = django_settings

    def make_client(self) -> KeyValueClient:
        return build_client(self.spec, self.alias, max_value_size=MAX_VALUE_SIZE)

    def process_client_factory(self) -> Callable[[], KeyValueClient]:
        return functools.partial(build_client, self.spec, self.alias, max_value_size=MAX_VALUE_SIZE)

    @property
    def cache(self) -> Any:
        from django.core.cache import caches

        return caches[self.alias]

    @pytest.mark.slow
    def test_nothing_expires_unless_a_timeout_is_given(self, key: str) -> None:
        # The cache says TIMEOUT=1; a client without a timeout must ignore it.
        keep = self.make_client()
        assert keep.add(key, b"added")
        keep.set_many({f"{key}-set": b"set"})
        keep.add(f"{key}-cas", b"v1")
        found = keep.gets(f"{key}-cas")
        assert found is not None
        assert keep.cas(f"{key}-cas", b"v2", found[1])
        expiring = build_client(self.spec, self.alias, timeout=1)
        assert expiring.add(f"{key}-ttl-add", b"x")
        expiring.set_many({f"{key}-ttl-set": b"y"})
        time.sleep(2.5)
        assert keep.get_many([key, f"{key}-set", f"{key}-cas"]) == {
            key: b"added",
            f"{key}-set": b"set",
            f"{key}-cas": b"v2",
        }
        assert keep.get_many([f"{key}-ttl-add", f"{key}-ttl-set"]) == {}
        assert keep.gets(f"{key}-ttl-add") is None
        # An expired key can be added again.
        assert keep.add(f"{key}-ttl-add", b"again")

    def test_the_caches_own_get_never_unpickles_our_values(self, key: str) -> None:
        client = self.make_client()
        value = b"\x80\x04K\x01." + bytes(range(256))  # looks like a pickle
        client.add(key, value)
        if self.foreign_read_error is None:
            assert self.cache.get(key) == ENVELOPE + value
            return
        with pytest.raises(self.foreign_read_error):
            self.cache.get(key)

    def test_a_value_written_by_someone_else_is_an_error(self, key: str) -> None:
        self.cache.set(key, {"written": "by Django"}, None)
        client = self.make_client()
        with pytest.raises(KeyValueError, match="did not write"):
            client.get_many([key])
        with pytest.raises(KeyValueError, match="did not write"):
            client.gets(key)

    def test_keys_go_through_the_caches_key_function(self, key: str) -> None:
        client = self.make_client()
        client.add(key, b"v")
        self.cache.delete(key)  # Django finds our key under the same name
        assert client.get_many([key]) == {}


class TestLocMemCache(DjangoCacheCases):
    alias = django_env.LOCMEM
    foreign_read_error = TypeError

    def test_not_shared_across_processes(self) -> None:
        assert self.make_client().shared_across_processes is False  # type: ignore[attr-defined]


class TestRedisCache(DjangoCacheCases, AtomicCommitContract):
    alias = django_env.REDIS
    service = ("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)
    supports_multiprocess = True
    cas_detects_aba = False  # compare-by-value (the layout's version counter prevents ABA)

    def test_keys_carry_the_cache_prefix(self, key: str) -> None:
        import redis

        self.make_client().add(key, b"v")
        raw = redis.Redis(host=django_env.REDIS_HOST, port=django_env.REDIS_PORT, db=13)
        try:
            prefix = self.spec["CACHES"][self.alias]["KEY_PREFIX"]
            assert raw.get(f"{prefix}:1:{key}") is not None
            assert raw.get(key) is None
        finally:
            raw.close()

    def _raw(self) -> Any:
        import redis

        return redis.Redis(host=django_env.REDIS_HOST, port=django_env.REDIS_PORT, db=13)

    def test_scripts_the_server_forgot_are_loaded_again(self, key: str) -> None:
        client, raw = self.make_atomic(), self._raw()
        try:
            for _ in range(2):  # each script call meets a server without its script
                raw.script_flush()
                assert client.add(key, b"v0")
            raw.script_flush()
            found = client.gets(key)
            assert found is not None
            assert client.cas(key, b"v1", found[1])
            found = client.gets(key)
            assert found is not None
            raw.script_flush()
            docs = {f"{key}-d": b"doc"}
            assert client.commit(
                key, b"v2", found[1], documents=docs, obsolete=[], marker=(f"{key}-m", b"m")
            )
            assert client.get_many([key, *docs, f"{key}-m"]) == {
                key: b"v2",
                **docs,
                f"{key}-m": b"m",
            }
        finally:
            raw.close()

    def test_stored_bytes_are_the_envelope_and_the_value(self, key: str) -> None:
        """Whatever buffer a value comes in, the server holds the envelope and its bytes,
        under the cache's key."""
        client, raw = self.make_atomic(), self._raw()
        prefix = self.spec["CACHES"][self.alias]["KEY_PREFIX"]
        try:
            assert client.add(key, bytearray(b"a\x00\xff"))
            assert raw.get(f"{prefix}:1:{key}") == ENVELOPE + b"a\x00\xff"
            found = client.gets(key)
            assert found is not None
            assert client.cas(key, memoryview(b"c\r\n"), found[1])
            assert raw.get(f"{prefix}:1:{key}") == ENVELOPE + b"c\r\n"
            found = client.gets(key)
            assert found is not None
            assert client.commit(
                key,
                bytearray(b"v"),
                found[1],
                documents={f"{key}-d": memoryview(b"d\xb6")},
                obsolete=[],
                marker=(f"{key}-m", b"m"),
            )
            assert raw.mget([f"{prefix}:1:{k}" for k in (key, f"{key}-d", f"{key}-m")]) == [
                ENVELOPE + b"v",
                ENVELOPE + b"d\xb6",
                ENVELOPE + b"m",
            ]
        finally:
            raw.close()


class TestDjangoRedisCache(TestRedisCache):
    alias = django_env.DJANGO_REDIS

    def test_shard_client_is_refused(self) -> None:
        from django_redis.cache import RedisCache

        from triggers_backends.django_cache import UnsupportedCacheError, key_value_client

        cache = RedisCache(
            f"redis://{django_env.REDIS_HOST}:{django_env.REDIS_PORT}/13",
            {"OPTIONS": {"CLIENT_CLASS": "django_redis.client.ShardClient"}},
        )
        with pytest.raises(UnsupportedCacheError, match="ShardClient"):
            key_value_client(cache)


class TestPyMemcacheCache(DjangoCacheCases):
    alias = django_env.MEMCACHED
    supports_multiprocess = True
    foreign_read_error = None  # the flags say "bytes": Django hands them back untouched

    @pytest.fixture(autouse=True)
    def _server(self, memcached: Any) -> None:
        """The session's memcached (the cache's LOCATION)."""

    def test_limit_is_the_servers_item_size(self) -> None:
        from triggers_backends.django_cache import key_value_client

        client = key_value_client(self.alias)
        # memcached's default -I is 1 MiB; the client keeps room for key and header.
        assert 1024 * 1024 - 1024 < client.max_value_size < 1024 * 1024

    def test_a_key_too_long_with_the_prefix_is_refused(self) -> None:
        with pytest.raises(KeyValueError, match="250"):
            self.make_client().gets("k" * 240)

    def test_clients_share_connections(self) -> None:
        first, second = self.make_client(), self.make_client()
        assert first._client is second._client  # type: ignore[attr-defined]


class TestDatabaseCacheSQLite(DjangoCacheCases):
    alias = django_env.DB_SQLITE
    supports_multiprocess = True
    cas_detects_aba = False  # compare-by-value, as above
    database = "default"

    def test_rows_are_in_the_routed_database(self, key: str) -> None:
        from django.db import connections

        self.make_client().add(key, b"v")
        table = self.cache._table
        connection = connections[self.database]
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT value FROM {connection.ops.quote_name(table)} WHERE cache_key = %s",
                [self.cache.make_key(key)],
            )
            (value,) = cursor.fetchone()
        assert value.startswith("triggers-kv01:")

    def test_refused_inside_a_transaction_and_nothing_written(self, key: str) -> None:
        from django.db import transaction

        client = self.make_client()
        with transaction.atomic(using=self.database), pytest.raises(KeyValueError, match="atomic"):
            client.add(key, b"v")
        assert client.get_many([key]) == {}


class TestDatabaseCachePostgres(TestDatabaseCacheSQLite):
    alias = django_env.DB_POSTGRES
    service = ("PostgreSQL", "127.0.0.1", 5432)
    database = "pg"


# -- Redis: bounded calls and errors --------------------------------------------------


@pytest.fixture
def frozen_port() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.slow
def test_redis_call_on_a_frozen_server_is_bounded(
    django_settings: dict[str, Any], frozen_port: int
) -> None:
    from django.core.cache.backends.redis import RedisCache

    from triggers_backends.django_cache import key_value_client

    # No socket timeout in the cache's options: the adapter must bring its own.
    cache = RedisCache(
        f"redis://127.0.0.1:{frozen_port}/0",
        {"OPTIONS": {"socket_timeout": None, "socket_connect_timeout": None}},
    )
    client = key_value_client(cache, io_timeout=0.3)
    with pytest.raises(KeyValueUnavailable, match="django-cache/redis: gets failed"):
        client.gets("k")


def test_redis_errors_never_show_the_password(django_settings: dict[str, Any]) -> None:
    from django.core.cache.backends.redis import RedisCache

    from triggers_backends.django_cache import key_value_client

    cache = RedisCache("redis://:s3cret@127.0.0.1:1/0", {})
    client = key_value_client(cache, io_timeout=0.3)
    with pytest.raises(KeyValueUnavailable) as caught:
        client.add("k", b"v")
    assert "s3cret" not in str(caught.value)
    assert "s3cret" not in repr(caught.value)
