"""The key-value layout on the in-process dict client: contract suite, commit order, size,
lost and damaged sessions, and what a fire reads and writes."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kv_helpers import (
    CompareValueClient,
    ScriptedClient,
    manager_on,
    outage,
    reachable_keys,
    session_keys,
    values,
)
from kv_memory import AtomicDictClient, DictKeyValueClient, DictStore

from triggers_backends.kv.storage import KeyValueStorage
from triggers_core import SerializationError, SessionState, Status, StorageError
from triggers_core.errors import ConflictError
from triggers_core.testing.storage_contract import StorageContract

EVERY = {"t_every": {"after": ["tick"], "andEvery": "tick", "run": "contract_task"}}
WAITING = {
    "t_wait": {"after": ["tick", "gate"], "andEvery": "tick", "run": "contract_task"},
}


class TestKeyValueStorageOnDict(StorageContract):
    # In-process only: the multi-process race runs on memcached (test_memcached.py).
    supports_multiprocess = False

    def setup_method(self) -> None:
        self.store = DictStore(max_value_size=64 * 1024)

    def make_storage(self, uid: str) -> KeyValueStorage:
        return KeyValueStorage(uid, DictKeyValueClient(self.store))


class TestKeyValueStorageCompareValue(TestKeyValueStorageOnDict):
    """A client whose CAS compares values: safe because the version only grows."""

    def make_storage(self, uid: str) -> KeyValueStorage:
        return KeyValueStorage(uid, CompareValueClient(self.store))


class TestKeyValueStorageTinyItems(TestKeyValueStorageOnDict):
    """Items of 640 bytes: nearly every document is chunked (the active document of the
    contract's 500-character UID, which cannot be, still fits)."""

    def setup_method(self) -> None:
        self.store = DictStore(max_value_size=640)


class TestKeyValueStorageAtomicCommit(TestKeyValueStorageOnDict):
    """A client that commits in one atomic step (as Redis does with a script)."""

    def make_storage(self, uid: str) -> KeyValueStorage:
        return KeyValueStorage(uid, AtomicDictClient(self.store))


# -- helpers --------------------------------------------------------------------------


@pytest.fixture
def store() -> DictStore:
    return DictStore(max_value_size=64 * 1024)


@pytest.fixture
def uid() -> str:
    return f"layout-{uuid.uuid4().hex}"


def assert_no_garbage(storage: KeyValueStorage, store: DictStore) -> None:
    stored = values(store)
    assert session_keys(storage, stored) == reachable_keys(storage, stored)


def kind(storage: KeyValueStorage, key: str) -> str:
    return key[len(storage.prefix)]


# -- commit order ---------------------------------------------------------------------


def test_successful_commits_leave_exactly_the_referenced_documents(
    store: DictStore, uid: str
) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    for n in range(5):
        manager.fire("tick", {"n": n})
        manager.update_instance_status(f"t_every#{n}", Status.FINISHED)
    manager.update_configuration({**EVERY, "t_other": {"after": ["x"], "run": "contract_task"}})
    assert_no_garbage(storage, store)


@pytest.mark.parametrize("crash_at", ["set_many", "cas"])
def test_a_crash_before_the_swap_leaves_the_session_intact(
    store: DictStore, uid: str, crash_at: str
) -> None:
    client = ScriptedClient(store)
    storage = KeyValueStorage(uid, client)
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    manager.fire("tick", {"n": 0})
    before = storage.load_full()
    # "set_many": the process dies before step 1 completes; "cas": after it.
    client.hooks[crash_at] = outage
    with pytest.raises(StorageError) as caught:
        manager.fire("tick", {"n": 1})
    assert caught.value.session == uid
    assert caught.value.backend == "scripted"
    client.hooks.clear()
    reopened = KeyValueStorage(uid, DictKeyValueClient(store))
    after = reopened.load_full()
    assert after.version == before.version
    assert set(after.state.instances) == set(before.state.instances)
    # Only unreferenced documents may be left behind, and the session goes on.
    stored = values(store)
    assert reachable_keys(reopened, stored) <= session_keys(reopened, stored)
    manager_on(reopened)[0].fire("tick", {"n": 2})
    assert set(reopened.load_full().state.instances) == {"t_every#0", "t_every#1"}


def test_a_crash_during_cleanup_leaves_only_garbage(store: DictStore, uid: str) -> None:
    client = ScriptedClient(store)
    storage = KeyValueStorage(uid, client)
    manager, runner = manager_on(storage)
    manager.update_configuration(EVERY)
    manager.fire("tick", {"n": 0})
    client.hooks["delete_many"] = outage
    manager.fire("tick", {"n": 1})  # committed: the failed cleanup is not an error
    manager.update_instance_status("t_every#0", Status.FINISHED)
    assert runner.dispatched == ["t_every#0", "t_every#1"]
    stored = values(store)
    assert reachable_keys(storage, stored) < session_keys(storage, stored)
    snapshot = KeyValueStorage(uid, DictKeyValueClient(store)).load_full()
    assert snapshot.state.instances["t_every#0"].status is Status.FINISHED


def test_a_losing_writer_removes_what_it_wrote(store: DictStore, uid: str) -> None:
    first = KeyValueStorage(uid, DictKeyValueClient(store))
    second = KeyValueStorage(uid, DictKeyValueClient(store))
    manager, _ = manager_on(first)
    manager.update_configuration(EVERY)
    stale = second.load()
    manager.fire("tick", {"n": 0})
    state = stale.state
    with pytest.raises(ConflictError):
        second.compare_and_swap(stale.version, state, _changes(config=True))
    assert_no_garbage(first, store)


def _changes(**kwargs: Any) -> Any:
    from triggers_core.engine.scopes import Changes

    return Changes(**kwargs)


def test_a_reader_reloads_when_a_concurrent_commit_removed_a_document(
    store: DictStore, uid: str
) -> None:
    writer = KeyValueStorage(uid, DictKeyValueClient(store))
    manager, _ = manager_on(writer)
    manager.update_configuration(EVERY)
    manager.fire("tick", {"n": 0})
    client = ScriptedClient(store)
    reader = KeyValueStorage(uid, client)
    commits = []

    def commit_in_between(keys: Any) -> None:
        if not commits:  # once: between reading the active document and its pages
            commits.append(manager.update_instance_status("t_every#0", Status.RUNNING))

    client.hooks["get_many"] = commit_in_between
    snapshot = reader.load_full()
    assert commits
    assert snapshot.state.instances["t_every#0"].status is Status.RUNNING
    assert snapshot.version == writer.load().version
    assert client.calls.count("gets") >= 2  # it reloaded


# -- lost and damaged sessions --------------------------------------------------------


def test_a_lost_active_document_is_an_error_not_a_new_session(store: DictStore, uid: str) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    manager.fire("tick")
    storage.client.delete_many([storage.keys.active])  # "evicted"
    for call in (storage.load, storage.load_full, lambda: manager.fire("tick")):
        with pytest.raises(StorageError, match="is gone") as caught:
            call()
        assert caught.value.session == uid
        assert "evictions" in str(caught.value)
    assert storage.keys.active not in values(store)  # nothing started over


def test_a_lost_document_is_reported_with_its_key(store: DictStore, uid: str) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    manager.fire("tick")
    manager.update_instance_status("t_every#0", Status.FINISHED)
    instance_keys = [k for k in values(store) if kind(storage, k) == "i"]
    assert len(instance_keys) == 1
    store.items.pop(instance_keys[0])
    fresh = KeyValueStorage(uid, DictKeyValueClient(store))
    with pytest.raises(StorageError, match="missing") as caught:
        fresh.load_full()
    assert instance_keys[0] in str(caught.value)
    assert "damaged" in str(caught.value)


def test_a_corrupted_document_is_reported_and_left_alone(store: DictStore, uid: str) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    manager.fire("tick")
    key = next(k for k in values(store) if kind(storage, k) == "i")
    store.items[key] = (b'{"hand": "edited"', 0)
    fresh = KeyValueStorage(uid, DictKeyValueClient(store))
    with pytest.raises(SerializationError) as caught:
        fresh.load_full()
    assert uid in str(caught.value)
    assert "t_every#0" in str(caught.value)
    assert store.items[key][0] == b'{"hand": "edited"'


def test_a_document_of_another_session_is_refused(store: DictStore, uid: str) -> None:
    first = KeyValueStorage(uid, DictKeyValueClient(store))
    other = KeyValueStorage(uid + "-other", DictKeyValueClient(store))
    for storage in (first, other):
        manager_on(storage)[0].update_configuration(EVERY)
    store.items[first.keys.active] = store.items[other.keys.active]
    with pytest.raises(SerializationError, match="belongs to session"):
        first.load()


# -- what a fire reads and writes -----------------------------------------------------


def test_a_fire_writes_one_page_one_instance_and_the_active_document(
    store: DictStore, uid: str
) -> None:
    client = ScriptedClient(store)
    storage = KeyValueStorage(uid, client)
    manager, _ = manager_on(storage)
    manager.update_configuration(WAITING)
    for n in range(600):  # 600 instances waiting for "gate", in three pages
        manager.fire("tick", {"n": n})
    client.written.clear()
    client.calls.clear()
    manager.fire("tick", {"n": 600})
    kinds = sorted(kind(storage, k) for k in client.written)
    # The new instance, its page, the latest kwargs of "tick", then the active document.
    assert kinds == ["a", "i", "k", "p"]
    # Read: only the active document (everything else this process wrote is cached).
    assert client.calls.count("get_many") == 0
    assert_no_garbage(storage, store)


def test_a_fresh_process_reads_only_what_the_fire_needs(store: DictStore, uid: str) -> None:
    writer = KeyValueStorage(uid, DictKeyValueClient(store))
    manager, _ = manager_on(writer)
    manager.update_configuration(WAITING)
    for n in range(600):
        manager.fire("tick", {"n": n})
    client = ScriptedClient(store)
    fresh = KeyValueStorage(uid, client)
    read: list[str] = []
    client.hooks["get_many"] = read.extend
    manager_on(fresh)[0].fire("tick", {"n": 600})
    # Configuration and the one page the new instance goes into: no latest kwargs (the
    # new instance has no other trigger to be seeded from).
    assert sorted(kind(fresh, k) for k in read) == ["c", "p"]


def test_the_active_document_does_not_grow_with_history(store: DictStore, uid: str) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    sizes = []
    for n in range(1200):
        manager.fire("tick", {"n": n})
        manager.update_instance_status(f"t_every#{n}", Status.FINISHED)
        if n in (10, 1199):
            sizes.append(len(values(store)[storage.keys.active]))
    # One page reference per 256 instances: a few dozen bytes, not one entry per instance.
    assert sizes[1] - sizes[0] < 200


def test_an_active_document_too_large_is_refused_before_anything_is_written(uid: str) -> None:
    store = DictStore(max_value_size=2000)
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    manager, _ = manager_on(storage)
    manager.update_configuration(
        {f"t_{n:03}": {"after": [f"trigger_{n}"], "run": "contract_task"} for n in range(60)}
    )
    failed: list[str] = []
    for n in range(60):
        before = values(store)
        try:
            manager.fire(f"trigger_{n}", {"n": n})
        except StorageError as exc:
            failed.append(str(exc))
            assert values(store) == before
            break
    assert failed, "the active document never outgrew 2000 bytes"
    assert "nothing was written" in failed[0]
    assert "2000 bytes" in failed[0]


def test_large_documents_are_chunked_and_read_back(uid: str) -> None:
    store = DictStore(max_value_size=4096)
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    blob = "ü" * 50_000
    manager.fire("tick", {"blob": blob})
    stored = values(store)
    assert max(len(v) for v in stored.values()) <= 4096
    assert any(k.endswith(":20") for k in stored)  # a document in more than 20 chunks
    fresh = KeyValueStorage(uid, DictKeyValueClient(store))
    assert fresh["t_every#0"].kwargs["tick"]["blob"] == blob
    assert fresh.latest_kwargs["tick"]["blob"] == blob


def test_a_load_that_keeps_losing_to_writers_gives_up_clearly(store: DictStore, uid: str) -> None:
    writer = KeyValueStorage(uid, DictKeyValueClient(store))
    manager, _ = manager_on(writer)
    manager.update_configuration(EVERY)
    manager.fire("tick", {"n": 0})
    client = ScriptedClient(store)

    class Impatient(KeyValueStorage):
        read_attempts = 3

    reader = Impatient(uid, client)
    statuses = iter([Status.RUNNING, Status.SCHEDULED] * 5)
    # Every read of documents races a commit that replaces the page being read.
    client.hooks["get_many"] = lambda keys: manager.update_instance_status(
        "t_every#0", next(statuses)
    )
    with pytest.raises(StorageError, match="changed during each of 3 attempts") as caught:
        reader.load_full()
    assert caught.value.session == uid


def test_delete_removes_every_document_and_starts_a_lost_session_over(
    store: DictStore, uid: str
) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    other = KeyValueStorage(uid + "-other", DictKeyValueClient(store))
    for each in (storage, other):
        manager, _ = manager_on(each)
        manager.update_configuration(EVERY)
        for n in range(300):
            manager.fire("tick", {"n": n})
    storage.delete()
    assert session_keys(storage, values(store)) == set()
    assert storage.load().version is None
    assert len(other.load_full().state.instances) == 300  # the neighbour is untouched
    # A lost session (active document evicted) is an error until it is deleted.
    other.client.delete_many([other.keys.active])
    with pytest.raises(StorageError, match="is gone"):
        other.load()
    other.delete()
    assert other.load().version is None
    manager_on(other)[0].update_configuration(EVERY)
    assert other.load().version == 1


@pytest.mark.parametrize("doing", ["load", "create"])
def test_a_session_created_between_two_reads_is_not_mistaken_for_a_lost_one(
    store: DictStore, uid: str, doing: str
) -> None:
    client = ScriptedClient(store)
    racer = KeyValueStorage(uid, client)
    creator = manager_on(KeyValueStorage(uid, DictKeyValueClient(store)))[0]
    created: list[bool] = []

    def create_first(keys: Any) -> None:
        # Between "no active document" and "is there a marker?": another writer
        # creates the session (active document, then marker).
        if racer.keys.marker in keys and not created:
            created.append(True)
            creator.update_configuration(EVERY)

    client.hooks["get_many"] = create_first
    if doing == "load":
        assert racer.load().version == 1
    else:
        with pytest.raises(ConflictError, match="created the session first"):
            racer.compare_and_swap(None, SessionState(), _changes(config=True))
    assert created


# -- the marker: a session whose creator did not add it -------------------------------


def _fail_on_marker(storage: KeyValueStorage) -> Any:
    def hook(key: str, value: bytes) -> None:
        if key == storage.keys.marker:
            outage()

    return hook


def test_the_commit_after_the_creation_adds_a_missing_marker(store: DictStore, uid: str) -> None:
    client = ScriptedClient(store)
    storage = KeyValueStorage(uid, client)
    manager, _ = manager_on(storage)
    # The creator's marker add fails (or it dies right after adding the active document).
    client.hooks["add"] = _fail_on_marker(storage)
    manager.update_configuration(EVERY)
    assert storage.keys.active in values(store)
    assert storage.keys.marker not in values(store)
    client.hooks.clear()
    # The next commit, by any process, adds the marker before its swap...
    other = KeyValueStorage(uid, DictKeyValueClient(store))
    manager_on(other)[0].fire("tick", {"n": 0})
    assert storage.keys.marker in values(store)
    # ...so the session can no longer silently start over when its active document goes.
    store.items.pop(storage.keys.active)
    with pytest.raises(StorageError, match="is gone"):
        KeyValueStorage(uid, DictKeyValueClient(store)).load()


def test_a_second_commit_that_cannot_add_the_marker_writes_nothing(
    store: DictStore, uid: str
) -> None:
    client = ScriptedClient(store)
    storage = KeyValueStorage(uid, client)
    manager, _ = manager_on(storage)
    client.hooks["add"] = _fail_on_marker(storage)
    manager.update_configuration(EVERY)
    before = values(store)
    with pytest.raises(StorageError, match="adding the session marker") as caught:
        manager.fire("tick", {"n": 0})
    assert caught.value.session == uid
    assert values(store) == before  # no document written, version 1 still current
    client.hooks.clear()
    manager.fire("tick", {"n": 1})
    assert storage.load().version == 2
    assert storage.keys.marker in values(store)
    assert_no_garbage(storage, store)


def test_later_commits_do_not_touch_the_marker(store: DictStore, uid: str) -> None:
    client = ScriptedClient(store)
    storage = KeyValueStorage(uid, client)
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    manager.fire("tick", {"n": 0})
    client.calls.clear()
    manager.fire("tick", {"n": 1})
    assert "add" not in client.calls


# -- clients that commit in one atomic step -------------------------------------------


class ScriptedAtomicClient(ScriptedClient, AtomicDictClient):
    """Records calls, and commits in one step."""

    backend_name = "scripted-atomic"

    def commit(self, key: str, value: bytes, token: Any, **rest: Any) -> bool:
        self._hook("commit", key, value, token, rest)
        self.written.append(key)
        return super().commit(key, value, token, **rest)


def test_an_atomic_client_commits_a_fire_in_one_call(store: DictStore, uid: str) -> None:
    client = ScriptedAtomicClient(store)
    storage = KeyValueStorage(uid, client)
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    # The creation carries the marker: no window without it.
    assert {storage.keys.active, storage.keys.marker} <= set(values(store))
    for n in range(3):
        manager.fire("tick", {"n": n})
        manager.update_instance_status(f"t_every#{n}", Status.FINISHED)
    client.calls.clear()
    manager.fire("tick", {"n": 3})
    assert client.calls == ["gets", "commit"]
    assert_no_garbage(storage, store)


def test_an_atomic_commit_that_loses_writes_nothing(store: DictStore, uid: str) -> None:
    client = ScriptedAtomicClient(store)
    storage = KeyValueStorage(uid, client)
    manager, _ = manager_on(storage)
    manager.update_configuration(EVERY)
    other = manager_on(KeyValueStorage(uid, DictKeyValueClient(store)))[0]

    def overtake(*_: Any) -> None:  # another writer commits first, once
        client.hooks.clear()
        other.fire("tick", {"by": "other"})

    client.hooks["commit"] = overtake
    client.calls.clear()
    manager.fire("tick", {"by": "us"})  # loses the first commit, retries, wins
    assert client.calls.count("commit") == 2
    state = storage.load_full().state
    assert {i.kwargs["tick"]["by"] for i in state.instances.values()} == {"us", "other"}
    # Nothing of the lost attempt was ever written (no garbage to clean up either).
    assert_no_garbage(storage, store)


def test_large_commits_are_written_in_steps_even_on_an_atomic_client(
    store: DictStore, uid: str
) -> None:
    from datetime import UTC, datetime

    from triggers_backends.kv.commit import ONE_STEP_MAX_KEYS
    from triggers_core import engine

    now = datetime(2024, 1, 1, tzinfo=UTC)
    big = engine.update_configuration(SessionState(), EVERY).state
    for n in range(ONE_STEP_MAX_KEYS):
        big = engine.fire(big, "tick", {"n": n}, now=now).state
    client = ScriptedAtomicClient(store)
    storage = KeyValueStorage(uid, client)
    names = frozenset(big.instances)
    storage.compare_and_swap(None, big, _changes(instances=names, created=names, config=True))
    assert "commit" not in client.calls
    assert "set_many" in client.calls
    assert "add" in client.calls
    assert len(storage.load_full().state.instances) == ONE_STEP_MAX_KEYS
    assert_no_garbage(storage, store)
