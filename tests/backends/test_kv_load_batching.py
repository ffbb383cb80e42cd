"""The key-value layout reads a load's documents in as few requests as it can (issue 22),
and never returns a state mixed from two versions.

A load reads the active document, then the documents it refers to. What a
scope needs without the header (a :class:`~triggers_core.engine.scopes.Fixed`
selector, a plain :class:`Scope`, a full load: its index pages and the pointers
of its fire records) comes in one request with the configuration; the
instances and the fire records in the next. These tests count the requests,
and commit to the session between the read of the active document and the
read of its documents (the moment the batching widened) to check that the
load returns the state of one version, and that a commit based on an old one
conflicts.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from kv_helpers import ScriptedClient, manager_on, outage
from kv_memory import AtomicDictClient, DictKeyValueClient, DictStore

from triggers_backends.kv.storage import KeyValueStorage
from triggers_backends.kv_client import CasToken
from triggers_core import Status
from triggers_core.engine.idempotency import FireKey, fire_key
from triggers_core.engine.scopes import Changes, Fixed, Scope, fire_scope, instance_scope
from triggers_core.errors import ConflictError

EVERY = {"t_every": {"after": ["tick"], "andEvery": "tick", "run": "contract_task"}}


@pytest.fixture
def store() -> DictStore:
    return DictStore(max_value_size=64 * 1024)


@pytest.fixture
def uid() -> str:
    return f"batch-{uuid.uuid4().hex}"


def kinds(storage: KeyValueStorage, keys: Any) -> list[str]:
    return sorted({key[len(storage.prefix)] for key in keys})


def keyed_session(store: DictStore, uid: str) -> tuple[FireKey, FireKey]:
    """Session ``uid`` with t_every#0 (recorded under key ``k-1``, whose pointer a later
    commit wrote) and t_every#1; returns the key of ``k-1`` and one never used."""
    manager, _ = manager_on(KeyValueStorage(uid, DictKeyValueClient(store)))
    manager.update_configuration(EVERY)
    manager.fire("tick", {"n": 1}, idempotency_key="k-1")  # t_every#0, record of k-1
    manager.fire("tick", {"n": 2})  # confirms it: its pointer is written
    return fire_key("tick", "k-1"), fire_key("tick", "k-2")


def reads(client: ScriptedClient, storage: KeyValueStorage) -> list[list[str]]:
    """The kinds of keys of each ``get_many`` the client is asked for, from now on."""
    seen: list[list[str]] = []
    client.hooks["get_many"] = lambda keys: seen.append(kinds(storage, keys))
    return seen


def test_a_fixed_scope_reads_its_page_with_the_configuration(store: DictStore, uid: str) -> None:
    manager, _ = manager_on(KeyValueStorage(uid, DictKeyValueClient(store)))
    manager.update_configuration(EVERY)
    manager.fire("tick", {"n": 1})
    manager.fire("tick", {"n": 2})
    client = ScriptedClient(store)
    fresh = KeyValueStorage(uid, client)  # another process: nothing cached
    seen = reads(client, fresh)
    snapshot = fresh.load(instance_scope("t_every#1", cascade=False))
    assert sorted(snapshot.state.instances) == ["t_every#1"]
    assert snapshot.state.instances["t_every#1"].kwargs["tick"] == {"n": 2}
    assert seen == [["c", "p"], ["i"]]
    assert client.calls.count("gets") == 1
    # a plain scope is known without the header too; a full load reads every page at once
    seen.clear()
    assert sorted(KeyValueStorage(uid, client).load(Scope(unresolved=True)).state.instances) == [
        "t_every#0",
        "t_every#1",
    ]
    assert seen == [["c", "p"], ["i"]]
    seen.clear()
    KeyValueStorage(uid, client).load_full()
    assert seen == [["c", "p"], ["i"]]


def test_fire_record_pointers_come_with_the_pages(store: DictStore, uid: str) -> None:
    key, other = keyed_session(store, uid)
    client = ScriptedClient(store)
    fresh = KeyValueStorage(uid, client)
    seen = reads(client, fresh)
    # a guarded finish (a Cascade selector): its own page and record pointer come with
    # the configuration, the rest of what its cascade needs (here nothing) after the
    # header, then the documents
    snapshot = fresh.load(instance_scope("t_every#1", cascade=True, guard=key))
    assert snapshot.state.fire_records == {key: ("t_every#0",)}
    assert sorted(snapshot.state.instances) == ["t_every#1"]
    assert seen == [["c", "g", "p"], ["f", "i"]]
    seen.clear()  # a fire (of an andEvery trigger: no page): pointers alone, then records
    snapshot = KeyValueStorage(uid, client).load(fire_scope("tick", key))
    assert snapshot.state.fire_records == {key: ("t_every#0",)}
    assert seen == [["c"], ["g"], ["f"]]
    # a fixed scope with records: pointers with the configuration and the page
    seen.clear()
    fixed = instance_scope("t_every#1", cascade=False, guard=other)
    assert isinstance(fixed, Fixed)
    snapshot = KeyValueStorage(uid, client).load(Fixed(fixed.scope | Scope(fire_keys={key})))
    assert snapshot.state.fire_records == {key: ("t_every#0",)}
    assert sorted(snapshot.state.instances) == ["t_every#1"]
    assert seen == [["c", "g", "p"], ["f", "i"]]
    # a record found absent is known absent at that version: a commit creating it
    # there reads no pointer again
    storage = KeyValueStorage(uid, client)
    found = storage.load(fire_scope("tick", other))
    assert found.state.fire_records == {}
    seen.clear()
    state = found.state
    storage.compare_and_swap(found.version, state, Changes(fire_records={other: ()}))
    assert "g" not in {k for batch in seen for k in batch}


@pytest.mark.parametrize("client_class", [DictKeyValueClient, AtomicDictClient])
@pytest.mark.parametrize(
    "scope",
    [
        pytest.param(lambda: instance_scope("t_every#0", cascade=False), id="fixed"),
        pytest.param(lambda: instance_scope("t_every#0", cascade=True), id="selector"),
        pytest.param(lambda: Scope(names=frozenset({"t_every#0"})), id="plain"),
    ],
)
def test_a_commit_between_the_active_document_and_its_documents_is_never_mixed_in(
    store: DictStore, uid: str, client_class: type[DictKeyValueClient], scope: Any
) -> None:
    writer = KeyValueStorage(uid, client_class(store))
    manager, _ = manager_on(writer)
    manager.update_configuration(EVERY)
    manager.fire("tick", {"n": 1})
    client = ScriptedClient(store)
    reader = KeyValueStorage(uid, client)
    commits: list[Any] = []

    def commit_in_between(_keys: Any) -> None:
        if not commits:  # once: after the active document, before the documents
            commits.append(manager.update_instance_status("t_every#0", Status.RUNNING))

    client.hooks["get_many"] = commit_in_between
    snapshot = reader.load(scope())
    assert commits
    current = writer.load_full()
    # the page and instance it read at first were replaced (and removed): it read again
    assert snapshot.version == current.version
    assert snapshot.state.instances["t_every#0"].status is Status.RUNNING
    assert snapshot.state.instances["t_every#0"] == current.state.instances["t_every#0"]
    assert snapshot.state.counters == current.state.counters


def test_an_old_version_read_whole_is_returned_whole_and_cannot_be_committed(
    store: DictStore, uid: str
) -> None:
    """A concurrent commit whose clean-up did not happen (a crash after its swap) leaves
    the documents the reader's active document refers to: the load returns that
    older version, consistently, and a commit based on it conflicts."""
    writer_client = ScriptedClient(store)
    writer = KeyValueStorage(uid, writer_client)
    manager, _ = manager_on(writer)
    manager.update_configuration(EVERY)
    manager.fire("tick", {"n": 1})
    old = writer.load_full()
    writer_client.hooks["delete_many"] = outage  # its clean-up fails: old documents stay
    client = ScriptedClient(store)
    reader = KeyValueStorage(uid, client)
    commits: list[Any] = []

    def commit_in_between(_keys: Any) -> None:
        if not commits:
            commits.append(manager.update_instance_status("t_every#0", Status.RUNNING))

    client.hooks["get_many"] = commit_in_between
    snapshot = reader.load(instance_scope("t_every#0", cascade=False))
    assert commits
    assert snapshot.version == old.version
    assert snapshot.state.instances["t_every#0"] == old.state.instances["t_every#0"]
    assert snapshot.state.instances["t_every#0"].status is Status.SCHEDULED
    with pytest.raises(ConflictError):
        reader.compare_and_swap(
            snapshot.version, snapshot.state, Changes(instances=frozenset({"t_every#0"}))
        )


def test_a_record_committed_between_the_active_document_and_the_pointers(
    store: DictStore, uid: str
) -> None:
    """The record a concurrent keyed fire commits after the reader's active document is
    not in the reader's version: the load says it is absent there, and creating it
    from that version conflicts (the fire is applied once)."""
    manager, _ = manager_on(KeyValueStorage(uid, DictKeyValueClient(store)))
    manager.update_configuration(EVERY)
    manager.fire("tick", {"n": 1})
    key = fire_key("tick", "k-9")
    client = ScriptedClient(store)
    reader = KeyValueStorage(uid, client)
    before = reader.load_full().version
    commits: list[Any] = []

    def commit_in_between(_keys: Any) -> None:
        if not commits:
            commits.append(manager.fire("tick", {"n": 2}, idempotency_key="k-9"))

    reader = KeyValueStorage(uid, client)
    client.hooks["get_many"] = commit_in_between
    snapshot = reader.load(instance_scope("t_every#0", cascade=True, guard=key))
    assert commits
    if snapshot.version == before:  # read whole at the old version: the record is not there
        assert snapshot.state.fire_records == {}
        with pytest.raises(ConflictError):
            reader.compare_and_swap(
                snapshot.version, snapshot.state, Changes(fire_records={key: ()})
            )
    else:  # read again at the new one: the record is
        assert snapshot.state.fire_records == {key: ("t_every#1",)}
    client.hooks.clear()
    again = KeyValueStorage(uid, client).load(instance_scope("t_every#0", cascade=True, guard=key))
    assert again.version == before + 1
    assert again.state.fire_records == {key: ("t_every#1",)}


class GetsWithClient(ScriptedClient):
    """A scripted dict client that reads a key for ``cas`` and others in one call."""

    def gets_with(
        self, key: str, others: Sequence[str]
    ) -> tuple[tuple[bytes, CasToken] | None, dict[str, bytes]]:
        self._hook("gets_with", key, others)
        with self.store.lock:  # one atomic read, as Redis's MGET
            items = self.store.items
            found = items.get(key)
            values = {k: items[k][0] for k in others if k in items}
            return (None if found is None else (found[0], found[1])), values


def test_a_guarded_finish_reads_its_pointer_with_the_active_document(
    store: DictStore, uid: str
) -> None:
    key, other = keyed_session(store, uid)
    client = GetsWithClient(store)
    storage = KeyValueStorage(uid, client)
    storage.load(instance_scope("t_every#1", cascade=False))  # mark-running's load
    client.calls.clear()
    seen = reads(client, storage)
    asked: list[Any] = []
    client.hooks["gets_with"] = lambda _key, others: asked.append(kinds(storage, others))
    snapshot = storage.load(instance_scope("t_every#1", cascade=True, guard=key))
    assert snapshot.state.fire_records == {key: ("t_every#0",)}
    assert client.calls == ["gets_with", "get_many"]  # the record's document
    assert asked == [["g"]]
    assert seen == [["f"]]
    # an absent record: known absent at that version, a commit creating it there
    # reads no pointer again
    client.calls.clear()
    absent = storage.load(instance_scope("t_every#1", cascade=True, guard=other))
    assert absent.state.fire_records == {}
    assert client.calls == ["gets_with"]
    seen.clear()
    storage.compare_and_swap(absent.version, absent.state, Changes(fire_records={other: ()}))
    assert "g" not in {k for batch in seen for k in batch}


def test_a_pointer_read_under_an_old_epoch_is_not_taken_for_the_new_session(
    store: DictStore, uid: str
) -> None:
    """The pointers read with the active document are guessed from the epoch of the
    last one read; a session deleted and created again has another epoch: a pointer
    left under the old one (its clean-up did not run) must not count."""
    manager, _ = manager_on(KeyValueStorage(uid, DictKeyValueClient(store)))
    manager.update_configuration(EVERY)
    manager.fire("tick", {"n": 1}, idempotency_key="k-1")
    manager.fire("tick", {"n": 2})  # the pointer of k-1, under the first epoch
    key = fire_key("tick", "k-1")
    client = GetsWithClient(store)
    storage = KeyValueStorage(uid, client)
    storage.load(instance_scope("t_every#0", cascade=False))  # mark-running's load
    with store.lock:
        left = dict(store.items)
    KeyValueStorage(uid, DictKeyValueClient(store)).delete()
    with store.lock:  # the old session's keys come back (as if their deletion failed)
        for k, item in left.items():
            if k[len(storage.prefix)] in "gfh":
                store.items[k] = item
    again, _ = manager_on(KeyValueStorage(uid, DictKeyValueClient(store)))
    again.update_configuration(EVERY)
    again.fire("tick", {"n": 3})  # t_every#0 of the new session; k-1 never fired here
    asked: list[Any] = []
    client.hooks["gets_with"] = lambda _key, others: asked.append(list(others))
    snapshot = storage.load(instance_scope("t_every#0", cascade=True, guard=key))
    assert asked  # the old epoch's pointer was read with the active document...
    assert snapshot.state.fire_records == {}  # ...and not believed
    assert snapshot.state.instances["t_every#0"].kwargs["tick"] == {"n": 3}
    with pytest.raises(ConflictError):  # a stale base (the old session's) cannot commit
        storage.compare_and_swap(1, snapshot.state, Changes())
