"""Fire records in the key-value layout: outside the active document, never taken from a
lost swap, found through pointers, scoped by the session's epoch (see kv/storage.py)."""

from __future__ import annotations

import uuid

import pytest
from kv_helpers import ScriptedClient, manager_on, reachable_keys, session_keys, values
from kv_memory import AtomicDictClient, DictKeyValueClient, DictStore

from triggers_backends.kv.documents import decode, encode
from triggers_backends.kv.keys import digest
from triggers_backends.kv.storage import KeyValueStorage
from triggers_core import SessionState, Status
from triggers_core.engine.idempotency import FireKey, fire_key
from triggers_core.engine.scopes import Changes, Scope
from triggers_core.errors import ConflictError

EVERY = {"t_every": {"after": ["tick"], "andEvery": "tick", "run": "contract_task"}}


@pytest.fixture
def store() -> DictStore:
    return DictStore(max_value_size=64 * 1024)


@pytest.fixture
def uid() -> str:
    return f"records-{uuid.uuid4().hex}"


def record_of(storage: KeyValueStorage, key: FireKey) -> tuple[str, ...] | None:
    return storage.load(Scope(fire_keys=frozenset({key}))).state.fire_records.get(key)


def active_body(storage: KeyValueStorage, store: DictStore) -> dict[str, object]:
    raw = values(store)[storage.keys.active]
    body = decode(raw, "active", storage.uid, "active")
    assert isinstance(body, dict)
    return body


def assert_no_garbage(storage: KeyValueStorage, store: DictStore) -> None:
    stored = values(store)
    assert session_keys(storage, stored) == reachable_keys(storage, stored)


def test_the_active_document_does_not_grow_with_the_number_of_keys(
    store: DictStore, uid: str
) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    sizes = []
    for n in range(300):
        manager.fire("ping", {"n": n}, idempotency_key=f"delivery-{n}")
        sizes.append(len(values(store)[storage.keys.active]))
    # One record in "fires" at a time; only the version's digits grow.
    assert max(sizes[10:]) - min(sizes[10:]) <= 2
    assert len(active_body(storage, store)["fires"]) == 1  # type: ignore[arg-type]
    assert_no_garbage(storage, store)
    # Every key is still found (through its pointer), by a process with a cold cache.
    cold = KeyValueStorage(uid, DictKeyValueClient(store))
    keys = frozenset(fire_key("ping", f"delivery-{n}") for n in range(300))
    assert len(cold.load(Scope(fire_keys=keys)).state.fire_records) == 300


def test_a_record_is_found_through_its_pointer_after_later_commits(
    store: DictStore, uid: str
) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    manager.fire("tick", {"n": 0}, idempotency_key="k")
    for n in range(3):
        manager.fire("tick", {"n": n + 1})
    assert "fires" not in active_body(storage, store)
    version = storage.load().version
    cold, cold_runner = manager_on(KeyValueStorage(uid, DictKeyValueClient(store)))
    assert [i.name for i in cold.fire("tick", {"n": 9}, idempotency_key="k")] == ["t_every#0"]
    assert storage.load().version == version
    assert cold_runner.dispatched == []
    assert_no_garbage(storage, store)


def test_a_record_of_a_lost_swap_is_never_taken_as_committed(store: DictStore, uid: str) -> None:
    client = ScriptedClient(store)
    storage = KeyValueStorage(uid, client)
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    first = fire_key("tick", "first")
    manager.fire("tick", {"n": 0}, idempotency_key="first")  # in the active "fires" now
    base = storage.load(Scope(fire_keys=frozenset({first})))
    assert dict(base.state.fire_records) == {first: ("t_every#0",)}
    # Another writer commits first (confirming "first" through its pointer)...
    other, _ = manager_on(KeyValueStorage(uid, DictKeyValueClient(store)))
    other.fire("tick", {"n": 1})
    # ... so this write, which creates "second", loses its swap.
    second = fire_key("tick", "second")
    with pytest.raises(ConflictError):
        storage.compare_and_swap(
            base.version, base.state, Changes(fire_records={second: ("t_every#1",)})
        )
    assert record_of(storage, second) is None
    assert record_of(KeyValueStorage(uid, DictKeyValueClient(store)), second) is None
    # The loser deleted its own record document, but not the pointer both wrote.
    assert record_of(KeyValueStorage(uid, DictKeyValueClient(store)), first) == ("t_every#0",)
    assert_no_garbage(storage, store)


def test_a_crash_after_writing_a_record_leaves_nothing_that_counts(
    store: DictStore, uid: str
) -> None:
    client = ScriptedClient(store)
    storage = KeyValueStorage(uid, client)
    manager, runner = manager_on(storage)
    manager.update_configuration(EVERY)

    def crash(*_: object) -> None:
        raise SystemExit("the process dies between writing its documents and the swap")

    client.hooks["cas"] = crash
    with pytest.raises(SystemExit):
        manager.fire("tick", {"n": 0}, idempotency_key="k")
    client.hooks.clear()
    written = [k for k in values(store) if k[len(storage.prefix)] == "f"]
    assert len(written) == 1  # its record document is left behind, referenced by nothing
    key = fire_key("tick", "k")
    assert record_of(KeyValueStorage(uid, DictKeyValueClient(store)), key) is None
    # The fire was not applied: a retry applies it.
    again, again_runner = manager_on(KeyValueStorage(uid, DictKeyValueClient(store)))
    assert [i.name for i in again.fire("tick", {"n": 1}, idempotency_key="k")] == ["t_every#0"]
    assert again_runner.dispatched == ["t_every#0"]
    assert runner.dispatched == []


def test_creating_a_record_that_a_pointer_holds_is_a_conflict(store: DictStore, uid: str) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    manager.fire("tick", idempotency_key="k")
    manager.fire("tick")  # "k" moves from the active document to its pointer
    fresh = KeyValueStorage(uid, DictKeyValueClient(store))
    current = fresh.load()  # a load that did not name the key
    with pytest.raises(ConflictError, match="already stored"):
        fresh.compare_and_swap(
            current.version, current.state, Changes(fire_records={fire_key("tick", "k"): ()})
        )
    assert fresh.load().version == current.version
    assert record_of(fresh, fire_key("tick", "k")) == ("t_every#0",)


def test_a_keyed_fire_reads_one_pointer_and_its_commit_none(store: DictStore, uid: str) -> None:
    client = ScriptedClient(store)
    storage = KeyValueStorage(uid, client)
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    manager.fire("tick", idempotency_key="warm")
    client.calls.clear()
    manager.fire("tick")
    plain = list(client.calls)
    client.calls.clear()
    manager.fire("tick", idempotency_key="k")
    keyed = list(client.calls)
    assert keyed.count("get_many") == plain.count("get_many") + 1
    assert keyed.count("set_many") == plain.count("set_many")


def test_a_session_created_again_does_not_see_its_predecessors_records(
    store: DictStore, uid: str
) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    manager.fire("tick", idempotency_key="k")
    manager.fire("tick")  # the record is behind a pointer now
    epoch = active_body(storage, store)["epoch"]
    storage.delete()
    manager.update_configuration(EVERY)
    assert active_body(storage, store)["epoch"] != epoch
    assert [i.name for i in manager.fire("tick", idempotency_key="k")] == ["t_every#0"]
    assert [i.name for i in manager.fire("tick", idempotency_key="k")] == ["t_every#0"]


def test_a_session_written_before_fire_records_gets_an_epoch(store: DictStore, uid: str) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    manager.fire("tick")
    # As an earlier version wrote it: no epoch, no fires.
    body = active_body(storage, store)
    del body["epoch"]
    with store.lock:
        _, token = store.items[storage.keys.active]
        store.items[storage.keys.active] = (encode("active", uid, body), token)
    old = KeyValueStorage(uid, DictKeyValueClient(store))
    assert old.load().version == 2
    assert record_of(old, fire_key("tick", "k")) is None  # no pointer can exist: none read
    legacy, _ = manager_on(old)
    assert [i.name for i in legacy.fire("tick", idempotency_key="k")] == ["t_every#1"]
    assert active_body(storage, store)["epoch"]
    assert [i.name for i in legacy.fire("tick", idempotency_key="k")] == ["t_every#1"]
    legacy.fire("tick")
    assert [i.name for i in legacy.fire("tick", idempotency_key="k")] == ["t_every#1"]


def test_an_evicted_pointer_forgets_its_key(store: DictStore, uid: str) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    manager.fire("tick", idempotency_key="k")
    manager.fire("tick")
    epoch = active_body(storage, store)["epoch"]
    assert isinstance(epoch, str)
    pointer = storage.keys.fire_pointer(epoch, digest(fire_key("tick", "k").digest))
    assert pointer in values(store)
    DictKeyValueClient(store).delete_many([pointer])  # what an eviction does
    cold, _ = manager_on(KeyValueStorage(uid, DictKeyValueClient(store)))
    assert [i.name for i in cold.fire("tick", idempotency_key="k")] == ["t_every#2"]


def test_a_large_record_is_chunked(uid: str) -> None:
    store = DictStore(max_value_size=600)
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    names = tuple(f"t_task_with_a_rather_long_name_{n:03}#0" for n in range(100))
    key = fire_key("go", "k")
    v1 = storage.compare_and_swap(None, SessionState(), Changes(fire_records={key: names}))
    storage.compare_and_swap(v1, SessionState(), Changes())  # behind its pointer now
    chunks = [k for k in values(store) if k[len(storage.prefix)] == "f"]
    assert len(chunks) > 5
    assert record_of(KeyValueStorage(uid, DictKeyValueClient(store)), key) == names
    assert_no_garbage(storage, store)


def test_an_atomic_commit_that_loses_writes_no_record_and_no_pointer(
    store: DictStore, uid: str
) -> None:
    storage = KeyValueStorage(uid, AtomicDictClient(store))
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    manager.fire("tick", idempotency_key="first")
    base = storage.load()
    before = set(values(store))
    other, _ = manager_on(KeyValueStorage(uid, AtomicDictClient(store)))
    other.update_instance_status("t_every#0", Status.FINISHED)
    after_other = set(values(store))
    with pytest.raises(ConflictError):
        storage.compare_and_swap(
            base.version, base.state, Changes(fire_records={fire_key("tick", "second"): ()})
        )
    assert set(values(store)) == after_other  # the loser wrote nothing at all
    assert after_other - before  # the winner confirmed "first" through its pointer
    assert_no_garbage(storage, store)
    assert record_of(storage, fire_key("tick", "first")) == ("t_every#0",)


def test_records_absent_at_a_load_stay_known_absent_after_this_storage_commits(
    store: DictStore, uid: str
) -> None:
    """A record a load found absent at version v is absent at v + 1 if this storage
    committed v + 1 without creating it: a commit on v + 1 that creates it reads no
    pointer (a finish on the snapshot its start left, issue 22)."""
    client = ScriptedClient(store)
    storage = KeyValueStorage(uid, client)
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    manager.fire("tick", idempotency_key="old")
    manager.fire("tick")  # "old" moves to its pointer
    key = fire_key("tick", "new")
    loaded = storage.load(Scope(fire_keys=frozenset({key, fire_key("tick", "old")})))
    assert key not in loaded.state.fire_records
    v1 = storage.compare_and_swap(loaded.version, loaded.state, Changes())
    client.calls.clear()

    v2 = storage.compare_and_swap(v1, loaded.state, Changes(fire_records={key: ()}))

    assert "get_many" not in client.calls  # neither the pointer nor anything else read
    assert record_of(KeyValueStorage(uid, DictKeyValueClient(store)), key) == ()
    # Known absent no more: this storage created it at v2, so a commit on v2 creating
    # it again is refused (through the active document, no pointer read either).
    with pytest.raises(ConflictError, match="already stored"):
        storage.compare_and_swap(v2, loaded.state, Changes(fire_records={key: ()}))
    # A record found stored is never taken for absent: "old" is behind its pointer.
    with pytest.raises(ConflictError, match="already stored"):
        storage.compare_and_swap(
            v2, loaded.state, Changes(fire_records={fire_key("tick", "old"): ()})
        )
