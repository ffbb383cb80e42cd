"""``load_sessions``: a tick's batch load of many sessions, on the key-value layout.

It must return, for each session, what that session's own ``load`` returns
(missing and expired sessions, lost ones, sessions a commit changes meanwhile),
in a number of round trips that does not grow with the sessions, and leave
each storage ready to commit without reading its active document again. Run on
the in-process dict client (with and without ``gets_many``) and on Redis
through Django's cache; the memory storage's default (one load per session)
is held to the same answers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import django_env
import pytest
from kv_helpers import ScriptedClient, manager_on
from kv_memory import AtomicDictClient, DictKeyValueClient, DictStore
from services import require_service

from triggers_backends.kv.storage import KeyValueStorage
from triggers_backends.kv_client import CasToken
from triggers_core import Status, StorageError, TriggerManager, engine
from triggers_core.engine.idempotency import fire_key
from triggers_core.engine.scopes import HEADER_ONLY, Scope, Selector
from triggers_core.runtime.memory import MemoryStorage, MemoryStore
from triggers_core.runtime.storage import Snapshot, Storage
from triggers_core.testing.storage_contract import RecordingRunner

CONFIG = {
    "t_a": {"after": ["go"], "run": "contract_task", "delay": "1h"},
    "t_b": {"after": ["go"], "run": "contract_task"},
    "t_miss": {
        "after": ["go"],
        "run": "contract_task",
        "within": "1h",
        "onMiss": "missed",
    },
    "t_chase": {"after": ["missed"], "run": "contract_task"},
}

SCOPES: list[Scope | Selector] = [
    HEADER_ONLY,
    Scope(unresolved=True),
    Scope(names=frozenset(("t_a#0", "t_b#1", "t_nope#0"))),
    engine.timer_scope("t_a#0"),
    engine.timer_scope("t_miss#0"),
    # A keyed fire's record (session 3 has it, the others not).
    Scope(fire_keys=frozenset((fire_key("go", "once"), fire_key("go", "never")))),
]


def _populate(make: Callable[[str], Storage], prefix: str) -> list[str]:
    """Sessions in various states; the last two were never stored."""
    uids = [f"{prefix}-{n}" for n in range(8)]
    for n, uid in enumerate(uids[:6]):
        manager = TriggerManager(
            make(uid), runners={"rec": RecordingRunner()}, default_runner="rec"
        )
        manager.sweep_interval = None
        manager.update_configuration(CONFIG)
        for k in range(n):  # 0 .. 5 fires: more instances, more pages of history
            manager.fire("go", {"k": k})
        if n == 3:
            manager.fire("go", {"keyed": True}, idempotency_key="once")
    return uids


def _seen(snapshot: Snapshot) -> tuple[Any, ...]:
    state = snapshot.state
    return (
        snapshot.version,
        dict(state.tasks),
        dict(state.instances),
        dict(state.counters),
        {k: dict(v) for k, v in state.latest_kwargs.items()},
        dict(state.fire_records),
    )


def _check_same_as_single_loads(make: Callable[[str], Storage], prefix: str) -> None:
    uids = _populate(make, prefix)
    for scope in SCOPES:
        batch_storage = make(uids[0])
        peers = [batch_storage.session(uid) for uid in uids]
        batch = batch_storage.load_sessions([(peer, scope) for peer in peers])
        single = [make(uid).load(scope) for uid in uids]
        assert [_seen(s) for s in batch] == [_seen(s) for s in single]
        assert [s.version for s in batch[-2:]] == [None, None]  # never stored: empty
        assert batch[-1].state.instances == {}
        keyed = isinstance(scope, Scope) and bool(scope.fire_keys)
        assert scope is HEADER_ONLY or keyed or batch[5].state.instances  # something to compare
        if keyed:  # only session 3 fired with the key "once"
            assert [bool(s.state.fire_records) for s in batch] == [False] * 3 + [True] + [False] * 4


def test_the_memory_storage_loads_each_session_as_its_load_does() -> None:
    store = MemoryStore()
    _check_same_as_single_loads(lambda uid: MemoryStorage(uid, store), "mem")


@pytest.mark.parametrize("client_class", [AtomicDictClient, DictKeyValueClient, ScriptedClient])
def test_a_batch_load_returns_what_each_load_returns(client_class: type[Any]) -> None:
    store = DictStore()
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    _check_same_as_single_loads(
        lambda uid: KeyValueStorage(uid, client_class(store), prefix=prefix), "kv"
    )


class CountingClient(AtomicDictClient):
    """Counts the calls that go to the store."""

    def __init__(self, store: DictStore) -> None:
        super().__init__(store)
        self.calls: list[str] = []

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        self.calls.append("get_many")
        return super().get_many(keys)

    def gets(self, key: str) -> tuple[bytes, CasToken] | None:
        self.calls.append("gets")
        return super().gets(key)

    def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, CasToken]]:
        self.calls.append("gets_many")
        with self.store.lock:
            return {k: self.store.items[k] for k in keys if k in self.store.items}


def test_a_batch_load_reads_per_document_kind_not_per_session_and_commits_without_a_read() -> None:
    store = DictStore()
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    uids = _populate(lambda uid: KeyValueStorage(uid, AtomicDictClient(store), prefix=prefix), "n")
    client = CountingClient(store)  # a fresh process: nothing cached
    storage = KeyValueStorage(uids[0], client, prefix=prefix)
    peers = [storage.session(uid) for uid in uids[1:6]]  # each holds t_a#0, delayed 1 h
    snapshots = storage.load_sessions([(peer, engine.timer_scope("t_a#0")) for peer in peers])
    # The active documents, then configurations, index pages, instances: one call each.
    assert client.calls == ["gets_many", "get_many", "get_many", "get_many"]
    client.calls.clear()
    later = datetime.now(UTC) + timedelta(hours=2)
    for peer, snapshot in zip(peers, snapshots, strict=True):
        manager, runner = manager_on(peer)
        transition = manager.advance_instance("t_a#0", later, loaded=snapshot)
        assert transition is not None
        assert runner.dispatched == ["t_a#0"]
    assert client.calls == []  # each commit compared against the token the batch read
    for uid in uids[1:6]:
        assert (
            KeyValueStorage(uid, AtomicDictClient(store), prefix=prefix)["t_a#0"].status
            is Status.SCHEDULED
        )


def test_a_session_lost_or_gone_meanwhile_loads_as_on_its_own() -> None:
    store = DictStore()
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    make = lambda uid: KeyValueStorage(uid, DictKeyValueClient(store), prefix=prefix)  # noqa: E731
    uids = _populate(make, "lost")
    lost = make(uids[1])
    with store.lock:
        del store.items[lost.keys.active]  # the marker stays: lost, not new
    with pytest.raises(StorageError):
        lost.load()
    storage = make(uids[0])
    with pytest.raises(StorageError):
        storage.load_sessions([(storage.session(uid), HEADER_ONLY) for uid in uids])
    # Expired (every key gone, as a cache's timeout does): an empty, new session.
    expired = make(uids[2])
    with store.lock:
        for key in [k for k in store.items if expired.keys.session in k]:
            del store.items[key]
    storage = make(uids[0])
    got = storage.load_sessions([(storage.session(uids[2]), HEADER_ONLY)])
    assert _seen(got[0]) == _seen(make(uids[2]).load()) == _seen(Snapshot(got[0].state, None))
    assert got[0].version is None


def test_a_session_committed_between_the_reads_is_loaded_again() -> None:
    """A commit lands after the active documents were read and deletes the documents they
    referenced: that session is loaded on its own, the others come from the batch."""
    store = DictStore()
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    uids = _populate(lambda uid: KeyValueStorage(uid, AtomicDictClient(store), prefix=prefix), "mv")
    client = ScriptedClient(store)
    storage = KeyValueStorage(uids[0], client, prefix=prefix)
    writer = KeyValueStorage(uids[4], AtomicDictClient(store), prefix=prefix)
    done: list[bool] = []

    def commit_once(*_: Any) -> None:
        if not done:
            done.append(True)
            manager, _ = manager_on(writer)
            manager.update_configuration({"t_new": {"after": ["go"], "run": "contract_task"}})

    client.hooks["get_many"] = commit_once
    peers = [storage.session(uid) for uid in uids]
    batch = storage.load_sessions([(peer, Scope(unresolved=True)) for peer in peers])
    assert done
    assert "t_new" in batch[4].state.tasks  # read again, after the commit
    fresh = [
        KeyValueStorage(uid, AtomicDictClient(store), prefix=prefix).load(Scope(unresolved=True))
        for uid in uids
    ]
    assert [_seen(s) for s in batch] == [_seen(s) for s in fresh]


def test_peers_of_another_store_are_refused() -> None:
    storage = KeyValueStorage("a", AtomicDictClient(DictStore()))
    other = KeyValueStorage("b", AtomicDictClient(DictStore()))
    with pytest.raises(ValueError, match="not a session of the store"):
        storage.load_sessions([(other, HEADER_ONLY)])


@pytest.mark.usefixtures("django_settings")
def test_on_redis_a_batch_load_returns_what_each_load_returns() -> None:
    require_service("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)
    from triggers_backends.django_cache import CacheStorageBackend

    prefix = f"t{uuid.uuid4().hex[:10]}:"

    def make(uid: str) -> Storage:
        return CacheStorageBackend(uid, django_env.REDIS, prefix=prefix)

    _check_same_as_single_loads(make, "redis")
    storage = make("redis-0")
    assert isinstance(storage, KeyValueStorage)
    lost = make("redis-1")
    assert isinstance(lost, KeyValueStorage)
    lost.client.delete_many([lost.keys.active])
    with pytest.raises(StorageError):
        storage.load_sessions([(storage.session("redis-1"), HEADER_ONLY)])
