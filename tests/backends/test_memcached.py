"""The memcached storage on real memcached servers: the contract suite (multi-process
race included), URLs, a 10,000-instance session, a 5 MB payload, lost sessions, faults.

Each test session starts its own memcached (``tests/memcached_server.py``); each
test uses its own key prefix.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from memcached_server import SMALL_ITEM_SIZE, MemcachedServer, free_port
from services import finishes
from tcp_proxy import FreezingProxy

from triggers_backends.kv.documents import decode
from triggers_backends.kv.due_index import SHARDS, bucket_of, shard_of
from triggers_backends.memcached import (
    MemcachedStorage,
    close_clients,
    parse_url,
    shared_client,
)
from triggers_backends.pymemcache_client import ITEM_OVERHEAD, PymemcacheClient
from triggers_core import (
    SessionState,
    Status,
    Storage,
    StorageError,
    TriggerManager,
    engine,
    open_storage,
)
from triggers_core.engine import update_configuration
from triggers_core.engine.leases import DueKind, Lease
from triggers_core.engine.scopes import Changes
from triggers_core.engine.state import TaskInstance
from triggers_core.errors import RegistryError
from triggers_core.runtime.recovery import sweep_store
from triggers_core.testing.lease_contract import LeaseContract
from triggers_core.testing.storage_contract import RecordingRunner, StorageContract

pytestmark = pytest.mark.service

EVERY = {"t_every": {"after": ["tick"], "andEvery": "tick", "run": "contract_task"}}


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


class TestMemcachedStorage(StorageContract):
    supports_multiprocess = True

    @pytest.fixture(autouse=True)
    def _server(self, memcached: MemcachedServer) -> Iterator[None]:
        self.server = memcached
        self.prefix = unique_prefix()
        self.client = PymemcacheClient(memcached.address, timeout=10)
        yield
        self.client.close()
        close_clients()

    def make_storage(self, uid: str) -> MemcachedStorage:
        return MemcachedStorage(uid, self.client, prefix=self.prefix)


class TestMemcachedLeases(LeaseContract):
    """Leases and the due index on a real memcached (records, hints, gets/cas)."""

    @pytest.fixture(autouse=True)
    def _server(self, memcached: MemcachedServer) -> Iterator[None]:
        self.prefix = unique_prefix()
        self.client = PymemcacheClient(memcached.address, timeout=10)
        yield
        self.client.close()

    def make_storage(self, uid: str) -> MemcachedStorage:
        return MemcachedStorage(uid, self.client, prefix=self.prefix)


class TestMemcachedStorageSmallItems(TestMemcachedStorage):
    """The contract on a ``-I 64k`` server (the multi-process race runs on the default one)."""

    supports_multiprocess = False

    @pytest.fixture(autouse=True)
    def _server(self, memcached_small: MemcachedServer) -> Iterator[None]:
        self.server = memcached_small
        self.prefix = unique_prefix()
        self.client = PymemcacheClient(memcached_small.address, timeout=10)
        yield
        self.client.close()


# -- helpers --------------------------------------------------------------------------


@pytest.fixture
def uid() -> str:
    return f"mc-{uuid.uuid4().hex}"


@pytest.fixture
def client(memcached: MemcachedServer) -> Iterator[PymemcacheClient]:
    made = PymemcacheClient(memcached.address, timeout=10)
    yield made
    made.close()


def manager_on(storage: Storage) -> tuple[TriggerManager, RecordingRunner]:
    runner = RecordingRunner()
    return TriggerManager(storage, runners={"rec": runner}, default_runner="rec"), runner


# -- URLs -----------------------------------------------------------------------------


def test_open_storage_from_a_url(memcached: MemcachedServer, uid: str) -> None:
    prefix = unique_prefix()
    url = f"memcached://{memcached.address}?prefix={prefix}&timeout=5"
    try:
        storage = open_storage(url, uid)
        assert isinstance(storage, MemcachedStorage)
        assert storage.prefix == prefix
        assert storage.memcached.timeout == 5.0
        manager = TriggerManager(url, uid=uid, runners={"rec": RecordingRunner()})
        manager.default_runner = "rec"
        manager.update_configuration(EVERY)
        assert [i.name for i in manager.fire("tick")] == ["t_every#0"]
        # The reference reopens the same session, through the same client.
        reference = storage.reference()
        assert reference.startswith(f"memcached://{memcached.address}?")
        reopened = open_storage(reference, uid)
        assert isinstance(reopened, MemcachedStorage)
        assert reopened.memcached is storage.memcached
        assert reopened["t_every#0"].status is Status.SCHEDULED
    finally:
        close_clients()


def test_url_parsing() -> None:
    servers, options = parse_url("memcached://a:1,[::1]:2/?ttl=60&pool_size=3&prefix=x:")
    assert servers == "a:1,[::1]:2"
    assert options == {
        "prefix": "x:",
        "max_value_bytes": 1024 * 1024,
        "ttl": 60,
        "connect_timeout": 2.0,
        "timeout": 2.0,
        "pool_size": 3,
    }
    assert parse_url("memcached://h")[0] == "h:11211"
    with pytest.raises(ValueError, match="did you mean 'timeout'"):
        parse_url("memcached://h:1?timout=3")
    with pytest.raises(ValueError, match="ttl"):
        parse_url("memcached://h:1?ttl=soon")
    with pytest.raises(ValueError, match="no user or password") as caught:
        parse_url("memcached://user:s3cret@h:1")
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ValueError, match="path"):
        parse_url("memcached://h:1/db")
    with pytest.raises(RegistryError, match="did you mean 'memcached'"):
        open_storage("memcache://h:1", "u")


def test_equal_urls_share_one_client() -> None:
    try:
        first = shared_client("memcached://127.0.0.1:1?prefix=a:")
        assert shared_client("memcached://127.0.0.1:1/?prefix=b:") is first
        assert shared_client("memcached://127.0.0.1:1?timeout=3") is not first
    finally:
        close_clients()


# -- size -----------------------------------------------------------------------------


def seeded(count: int) -> SessionState:
    tasks = update_configuration(SessionState(), EVERY).state.tasks
    start = datetime(2024, 1, 1, tzinfo=UTC)
    instances = {}
    for n in range(count):
        stamp = (start + timedelta(seconds=n)).isoformat()
        instances[f"t_every#{n}"] = TaskInstance(
            name=f"t_every#{n}",
            task_name="t_every",
            status=Status.FINISHED,
            kwargs={"tick": {"n": n, "payload": "x" * 64}},
            metadata={"created": stamp, "result": {"n": n}},
        )
    return SessionState(tasks=tasks, instances=instances, counters={"t_every": count})


@pytest.mark.slow
def test_a_session_of_10000_instances(client: PymemcacheClient, uid: str) -> None:
    storage = MemcachedStorage(uid, client, prefix=unique_prefix())
    state = seeded(10_000)
    storage.compare_and_swap(
        None, state, Changes(instances=frozenset(state.instances), config=True)
    )
    manager, runner = manager_on(storage)
    manager.fire("tick", {"n": 10_000})
    assert runner.dispatched == ["t_every#10000"]
    active = client.get_many([storage.keys.active])[storage.keys.active]
    assert len(active) < 4096  # 40 page references, not 10,000 entries
    fresh = MemcachedStorage(uid, client, prefix=storage.prefix)
    loaded = fresh.load_full().state.instances
    assert len(loaded) == 10_001
    assert loaded["t_every#1234"].metadata["result"] == {"n": 1234}
    assert fresh.load().state.instances == {}


@pytest.mark.slow
def test_a_5mb_trigger_payload(client: PymemcacheClient, uid: str) -> None:
    # 15 MB encoded ("\u00e9" per character): over the 1 MiB default bound on a value.
    storage = MemcachedStorage(uid, client, prefix=unique_prefix(), max_value_bytes=32 * 1024**2)
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    payload = {"blob": "é" * (5 * 1024 * 1024 // 2), "n": 1}
    manager.fire("tick", payload)
    fresh = MemcachedStorage(uid, client, prefix=storage.prefix)
    assert fresh["t_every#0"].kwargs["tick"] == payload
    assert fresh.latest_kwargs["tick"] == payload
    assert client.max_value_size == 1024 * 1024 - ITEM_OVERHEAD
    manager.fire("tick", {"n": 2})  # the next fire replaces the big latest kwargs
    assert fresh.latest_kwargs["tick"] == {"n": 2}


def test_chunks_on_a_small_item_server(memcached_small: MemcachedServer, uid: str) -> None:
    client = PymemcacheClient(memcached_small.address, timeout=10)
    try:
        storage = MemcachedStorage(uid, client, prefix=unique_prefix())
        manager, _ = manager_on(storage)
        manager.update_configuration(EVERY)
        payload = {"blob": "z" * (3 * SMALL_ITEM_SIZE)}
        manager.fire("tick", payload)
        assert (
            MemcachedStorage(uid, client, prefix=storage.prefix)["t_every#0"].kwargs["tick"]
            == payload
        )
    finally:
        client.close()


# -- lost sessions --------------------------------------------------------------------


def test_an_evicted_active_document_is_a_lost_session(client: PymemcacheClient, uid: str) -> None:
    storage = MemcachedStorage(uid, client, prefix=unique_prefix())
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    manager.fire("tick")
    client.delete_many([storage.keys.active])  # what an LRU eviction does
    with pytest.raises(StorageError, match="is gone") as caught:
        manager.fire("tick")
    assert caught.value.backend == "memcached"
    assert caught.value.session == uid
    with pytest.raises(StorageError, match="is gone"):
        MemcachedStorage(uid, client, prefix=storage.prefix).load()
    assert client.gets(storage.keys.active) is None  # not started over


# -- evicted leases and index ----------------------------------------------------------

LEASED = {"t_a": {"after": ["go"], "run": "contract_task"}}
T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def running_under_an_expired_lease(storage: MemcachedStorage) -> None:
    """``t_a#0`` running under run ``run-1``'s lease, which expired in 2024."""
    for step in (
        lambda s: engine.update_configuration(s, LEASED),
        lambda s: engine.fire(s, "go", now=T0),
        lambda s: engine.mark_running(
            s, "t_a#0", now=T0, lease=Lease("run-1", T0 + timedelta(seconds=30), 30, {})
        ),
    ):
        snapshot = storage.load_full()
        transition = step(snapshot.state)
        storage.compare_and_swap(snapshot.version, transition.state, transition.changes)


def evict_the_due_index(storage: MemcachedStorage) -> None:
    """Delete every key of the store's due index, as an eviction (or a restart) would."""
    index = storage._index
    doomed = []
    for kind in DueKind:
        for shard in range(SHARDS):
            directory = index.directory(kind, shard)
            raw = storage.memcached.get_many([directory]).get(directory, b"")
            for entry in raw.decode().strip(",").split(","):
                if entry:
                    bucket, _, number = entry.partition(".")
                    doomed.append(index.slot_key(kind, shard, int(bucket), int(number)))
            doomed.append(directory)
    storage.memcached.delete_many(doomed)


def sweep(storage: MemcachedStorage) -> list[tuple[str, str]]:
    runner = RecordingRunner()
    report = sweep_store(
        storage,
        lambda s: TriggerManager(s, runners={"rec": runner}, default_runner="rec"),
        limit=1000,
    )
    return [(a.session, a.action) for a in report.acted]


def test_an_evicted_lease_record_still_lets_the_sweep_take_over(
    client: PymemcacheClient, uid: str
) -> None:
    storage = MemcachedStorage(uid, client, prefix=unique_prefix())
    running_under_an_expired_lease(storage)
    client.delete_many([storage.keys.lease("t_a#0", "run-1")])  # evicted
    # The hint and the instance document's lease are enough; the claim re-creates the
    # record with add, so a renewal racing it still loses.
    assert sweep(storage) == [(uid, "taken over")]
    assert storage.get_instance("t_a#0").status is Status.REPLAYED
    assert storage.get_lease("t_a#0") is None


def test_an_evicted_index_is_rebuilt_and_the_run_taken_over(
    client: PymemcacheClient, uid: str
) -> None:
    storage = MemcachedStorage(uid, client, prefix=unique_prefix())
    running_under_an_expired_lease(storage)
    evict_the_due_index(storage)
    assert sweep(storage) == []  # nothing points at the run any more...
    assert storage.get_instance("t_a#0").status is Status.RUNNING
    # ...but the session does: the per-session recovery, or the rebuild, finds it.
    assert storage.rebuild_due_index([uid]) == 1
    assert sweep(storage) == [(uid, "taken over")]
    assert storage.get_instance("t_a#1").status is Status.SCHEDULED


def test_an_evicted_slot_loses_only_its_hints(client: PymemcacheClient, uid: str) -> None:
    prefix = unique_prefix()
    first = MemcachedStorage(uid, client, prefix=prefix)
    running_under_an_expired_lease(first)
    # The directory survives, the slot is gone: the sweep prunes the entry, and carries on.
    index = first._index
    shard = shard_of(first.keys.session)
    bucket = bucket_of(T0 + timedelta(seconds=30))
    client.delete_many([index.slot_key(DueKind.LEASE, shard, bucket, 0)])
    assert sweep(first) == []
    directory = index.directory(DueKind.LEASE, shard)
    assert f",{bucket}.0,".encode() not in client.get_many([directory]).get(directory, b"")
    first.rebuild_due_index([uid])
    assert sweep(first) == [(uid, "taken over")]


# -- faults ---------------------------------------------------------------------------


def test_a_server_that_is_down_is_a_storage_error(uid: str) -> None:
    url = f"memcached://127.0.0.1:{free_port()}?connect_timeout=0.5&timeout=0.5"
    try:
        storage = open_storage(url, uid)
        manager = TriggerManager(storage, runners={"rec": RecordingRunner()})
        for call in (storage.load, lambda: manager.update_configuration(EVERY)):
            error = finishes(call)
            assert isinstance(error, StorageError), error
            assert error.backend == "memcached"
            assert error.session == uid
            assert uid in str(error)
            assert "refused" in str(error).lower()
    finally:
        close_clients()


@pytest.mark.parametrize("freeze_at", ["load", "commit"])
def test_a_frozen_server_is_a_storage_error_and_nothing_is_half_visible(
    memcached: MemcachedServer, uid: str, freeze_at: str
) -> None:
    prefix = unique_prefix()
    with FreezingProxy((memcached.host, memcached.port)) as proxy:
        client = PymemcacheClient(proxy.address, connect_timeout=0.5, timeout=0.5)
        storage = MemcachedStorage(uid, client, prefix=prefix)
        manager, _ = manager_on(storage)
        manager.update_configuration(EVERY)
        manager.fire("tick", {"n": 0})
        before = storage.load_full()
        if freeze_at == "load":
            proxy.freeze()
        else:
            original = client.cas

            def freeze_then_cas(*args: Any) -> bool:
                proxy.freeze()  # the documents are written; the swap hangs
                return original(*args)

            client.cas = freeze_then_cas  # type: ignore[method-assign]
        error = finishes(lambda: manager.fire("tick", {"n": 1}))
        assert isinstance(error, StorageError), error
        assert error.backend == "memcached"
        assert error.session == uid
        assert proxy.address in str(error)
        proxy.thaw()
        client.close()
    # On the server itself: the session is at the old version or (if the swap reached
    # the server before it froze) the new one, and either way complete.
    direct = PymemcacheClient(memcached.address, timeout=10)
    try:
        after = MemcachedStorage(uid, direct, prefix=prefix).load_full()
        assert after.version in (before.version, before.version + 1)  # type: ignore[operator]
        expected = {"t_every#0"} if after.version == before.version else {"t_every#0", "t_every#1"}
        assert set(after.state.instances) == expected
    finally:
        direct.close()


def test_the_decoded_active_document_names_its_session(client: PymemcacheClient, uid: str) -> None:
    storage = MemcachedStorage(uid, client, prefix=unique_prefix())
    manager_on(storage)[0].update_configuration(EVERY)
    raw = client.get_many([storage.keys.active])[storage.keys.active]
    body = decode(raw, "active", uid, "active")
    assert body["version"] == 1
    assert b'"uid":' in raw
    assert len(storage.keys.active) < 250
    assert storage.keys.active.startswith(storage.prefix + "a:{")


def test_a_worker_can_name_and_reopen_a_memcached_storage(
    memcached: MemcachedServer, uid: str
) -> None:
    # What a Celery message carries: the configured name, or a reference a worker
    # configured with the same URL accepts (triggers_celery.storages).
    from triggers_celery.storages import message_storage, open_configured_storage

    url = f"memcached://{memcached.address}?prefix={unique_prefix()}&ttl=3600"
    try:
        storage = open_storage(url, uid)
        manager_on(storage)[0].update_configuration(EVERY)
        conf = {"triggers_storages": {"cache": url}}
        assert message_storage(storage, conf) == "cache"
        reference = storage.reference()
        assert reference is not None
        assert message_storage(storage, {}) == reference
        reopened = open_configured_storage(conf, reference, uid)
        assert isinstance(reopened, MemcachedStorage)
        assert reopened.load().version == 1
        assert reopened.memcached.ttl == 3600
    finally:
        close_clients()
