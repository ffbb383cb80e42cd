"""``delete()`` on the key-value storages leaves no key of the session behind, and counts read
from the store are bounded: checked by listing the whole keyspace of the test's prefix, on
the in-memory client, a real memcached (``lru_crawler metadump``) and Django's cache on a
real Redis (``SCAN``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import django_env
import pytest
from kv_helpers import values
from kv_memory import AtomicDictClient, DictKeyValueClient, DictStore
from memcached_server import MemcachedServer
from services import require_service

from triggers_backends.kv.documents import decode, encode
from triggers_backends.kv.storage import KeyValueStorage
from triggers_backends.memcached import MemcachedStorage
from triggers_backends.pymemcache_client import PymemcacheClient
from triggers_core import Status, TriggerManager
from triggers_core.errors import SerializationError
from triggers_core.testing.storage_contract import RecordingRunner

CONFIG = {
    "t_every": {"after": ["tick"], "andEvery": "tick", "run": "triggers.DevNullTask"},
    "t_next": {"after": ["t_every"], "andEvery": "t_every", "run": "triggers.DevNullTask"},
    "t_later": {"after": ["go"], "delay": "1h", "run": "triggers.DevNullTask"},
}


class Stop(Exception):
    """Raised once an instance is running: it stays running, under its lease."""


def stop(_: object) -> None:
    raise Stop


def busy_session(storage: KeyValueStorage) -> None:
    """Keyed fires, guarded finishes (records of their cascades), a run under a lease, due
    entries (dispatch leases, a delay timer), settled history."""
    manager = TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")
    manager.update_configuration(CONFIG)
    for n in range(6):
        manager.fire("tick", {"n": n, "pad": "x" * 200}, idempotency_key=f"delivery-{n}")
    manager.fire("tick", {"n": 0}, idempotency_key="delivery-0")  # a duplicate
    for n in range(4):
        finished = manager.run_instance(f"t_every#{n}", guard_cascade=True)
        assert finished is not None
        assert finished.status is Status.FINISHED
    with pytest.raises(Stop):
        manager.run_instance("t_every#4", on_started=stop)
    assert storage["t_every#4"].status is Status.RUNNING
    manager.fire("go", idempotency_key="go-1")
    manager.fire("other", {"big": "y" * 3000})


def check_nothing_left(
    storage: KeyValueStorage, keyspace: Callable[[], dict[str, bytes]], *, other: str
) -> None:
    before = keyspace()
    tag = "{" + storage.keys.session + "}"
    assert any(tag in key for key in before)
    uid = storage.uid.encode()
    shared = {
        k.rpartition(storage.prefix)[2][:2] for k, v in before.items() if uid in v and tag not in k
    }
    assert shared == {"s:", "x:"}  # its lines in the session index and the due index
    kinds = {k.rpartition(storage.prefix)[2][:2] for k in before if tag in k}
    assert {"f:", "g:", "h:", "l:", "i:", "p:", "k:"} <= kinds
    storage.delete()
    after = keyspace()
    left = sorted(key for key in after if tag in key)
    assert left == [], f"{len(left)} keys of the deleted session are left: {left[:10]}"
    mentions = sorted(key for key, value in after.items() if uid in value)
    assert mentions == [], f"keys still naming the deleted session: {mentions}"
    # The other session of the store is untouched and complete.
    assert any("{" + storage.session(other).keys.session + "}" in k for k in after)
    assert storage.session(other).load_full().state.instances


def damaged_reference(storage: KeyValueStorage, put: Callable[[str, bytes], None]) -> None:
    """Rewrite the session's active document so its configuration claims 10**12 chunks."""
    found = storage.client.gets(storage.keys.active)
    assert found is not None
    what = "active"
    body = decode(found[0], "active", storage.uid, what)
    body["config"] = [body["config"][0], 10**12, "0" * 32]
    put(storage.keys.active, encode("active", storage.uid, body))


def check_huge_counts_refused(storage: KeyValueStorage, put: Callable[[str, bytes], None]) -> None:
    manager = TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")
    manager.update_configuration(CONFIG)
    damaged_reference(storage, put)
    fresh = storage.session(storage.uid)
    with pytest.raises(SerializationError) as caught:
        fresh.load()
    assert storage.uid in str(caught.value)
    assert "chunks" in str(caught.value)


# -- the in-memory client ------------------------------------------------------------------


@pytest.mark.parametrize("client", [DictKeyValueClient, AtomicDictClient])
def test_delete_leaves_nothing_in_memory(client: type[DictKeyValueClient]) -> None:
    store = DictStore(max_value_size=2048)  # small items: chunked documents too
    storage = KeyValueStorage(f"clean-{uuid.uuid4().hex}", client(store))
    busy_session(storage)
    busy_session(storage.session(other := f"other-{uuid.uuid4().hex}"))
    check_nothing_left(storage, lambda: values(store), other=other)


def test_huge_counts_are_refused_in_memory() -> None:
    store = DictStore()
    storage = KeyValueStorage(f"huge-{uuid.uuid4().hex}", DictKeyValueClient(store))

    def put(key: str, value: bytes) -> None:
        found = storage.client.gets(key)
        assert found is not None
        assert storage.client.cas(key, value, found[1])

    check_huge_counts_refused(storage, put)


# -- memcached -------------------------------------------------------------------------------


@pytest.fixture
def mc(memcached: MemcachedServer) -> Iterator[tuple[PymemcacheClient, str]]:
    client = PymemcacheClient(memcached.address, timeout=10, max_value_size=4096)
    yield client, f"t{uuid.uuid4().hex[:10]}:"
    client.close()


@pytest.mark.service
def test_delete_leaves_nothing_on_memcached(mc: tuple[PymemcacheClient, str]) -> None:
    client, prefix = mc

    def keyspace() -> dict[str, bytes]:
        return client.get_many(client.keys_with_prefix(prefix))

    storage = MemcachedStorage(f"clean-{uuid.uuid4().hex}", client, prefix=prefix)
    busy_session(storage)
    busy_session(storage.session(other := f"other-{uuid.uuid4().hex}"))
    check_nothing_left(storage, keyspace, other=other)


@pytest.mark.service
def test_huge_counts_are_refused_on_memcached(mc: tuple[PymemcacheClient, str]) -> None:
    client, prefix = mc
    storage = MemcachedStorage(f"huge-{uuid.uuid4().hex}", client, prefix=prefix)
    check_huge_counts_refused(storage, lambda k, v: client.set_many({k: v}))


# -- Django's cache on Redis -----------------------------------------------------------------


@pytest.fixture
def redis_cache(django_settings: dict[str, Any]) -> Iterator[tuple[Any, str]]:
    require_service("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)
    import redis

    connection = redis.Redis(django_env.REDIS_HOST, django_env.REDIS_PORT, db=django_env.REDIS_DB)
    yield connection, f"t{uuid.uuid4().hex[:10]}:"
    connection.close()


@pytest.mark.service
def test_delete_leaves_nothing_on_django_redis(redis_cache: tuple[Any, str]) -> None:
    from triggers_backends.django_cache import CacheStorageBackend

    connection, prefix = redis_cache

    def keyspace() -> dict[str, bytes]:
        keys = list(connection.scan_iter(match=f"*{prefix}*", count=1000))
        found = connection.mget(keys) if keys else []
        return {k.decode(): v for k, v in zip(keys, found, strict=True) if v is not None}

    uid = f"clean-{uuid.uuid4().hex}"
    storage = CacheStorageBackend(uid, django_env.REDIS, prefix=prefix, max_value_size=4096)
    busy_session(storage)
    busy_session(storage.session(other := f"other-{uuid.uuid4().hex}"))
    check_nothing_left(storage, keyspace, other=other)


@pytest.mark.service
def test_huge_counts_are_refused_on_django_redis(redis_cache: tuple[Any, str]) -> None:
    from triggers_backends.django_cache import CacheStorageBackend

    _, prefix = redis_cache
    storage = CacheStorageBackend(f"huge-{uuid.uuid4().hex}", django_env.REDIS, prefix=prefix)

    def put(key: str, value: bytes) -> None:
        found = storage.client.gets(key)
        assert found is not None
        assert storage.client.cas(key, value, found[1])

    check_huge_counts_refused(storage, put)
