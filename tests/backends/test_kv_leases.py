"""Leases and the due index of the key-value layout on in-process clients: the shipped
lease contract (plain and atomic clients, and a client whose token is the value), plus
what the layout adds: where records and hints go, what a renewal writes, the cost of a
sweep (it must not grow with the number of sessions), lost hints and the rebuild,
slot chains and their pruning, hostile index data, and ``delete``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kv_helpers import (
    CompareValueClient,
    ScriptedClient,
    reachable_keys,
    session_keys,
    values,
)
from kv_memory import AtomicDictClient, DictKeyValueClient, DictStore

from triggers_backends.kv.due_index import (
    SHARDS,
    SLOT_BYTES,
    DueIndex,
    Hint,
    SlotPositions,
    bucket_of,
    lines_of,
    parse_line,
    shard_of,
)
from triggers_backends.kv.storage import KeyValueStorage
from triggers_backends.kv_client import INDEX_TOMBSTONE, CasToken
from triggers_core import SessionState, Status, TriggerManager, engine
from triggers_core.engine.leases import Due, DueKind, Lease
from triggers_core.engine.scopes import Changes
from triggers_core.engine.state import TaskInstance
from triggers_core.engine.transition import Transition
from triggers_core.runtime.recovery import sweep_store
from triggers_core.runtime.storage import Storage
from triggers_core.testing.lease_contract import LeaseContract
from triggers_core.testing.storage_contract import RecordingRunner

T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
CONFIG = {
    "t_a": {"after": ["go"], "run": "contract_task"},
    "t_b": {"after": ["t_a"], "run": "contract_task"},
}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- the shipped contract ----------------------------------------------------------------


class TestPlainClientLeases(LeaseContract):
    def setup_method(self) -> None:
        self.store = DictStore()
        self.prefix = f"t{uuid.uuid4().hex[:8]}:"

    def make_storage(self, uid: str) -> Storage:
        return KeyValueStorage(uid, DictKeyValueClient(self.store), prefix=self.prefix)


class TestAtomicClientLeases(TestPlainClientLeases):
    def make_storage(self, uid: str) -> Storage:
        return KeyValueStorage(uid, AtomicDictClient(self.store), prefix=self.prefix)


class TestCompareValueClientLeases(TestPlainClientLeases):
    def make_storage(self, uid: str) -> Storage:
        return KeyValueStorage(uid, CompareValueClient(self.store), prefix=self.prefix)


class TestSmallItemLeases(TestPlainClientLeases):
    """Items of 600 bytes: a commit's hints are split over several slots."""

    def setup_method(self) -> None:
        self.store = DictStore(max_value_size=600)
        self.prefix = f"t{uuid.uuid4().hex[:8]}:"


# -- helpers -------------------------------------------------------------------------------


class CountingClient(DictKeyValueClient):
    """Counts the keys it reads (``get_many`` keys and ``gets``) and the calls it gets."""

    def __init__(self, store: DictStore) -> None:
        super().__init__(store)
        self.read = 0
        self.calls: list[str] = []

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        self.read += len(keys)
        self.calls.append("get_many")
        return super().get_many(keys)

    def gets(self, key: str) -> tuple[bytes, CasToken] | None:
        self.read += 1
        self.calls.append("gets")
        return super().gets(key)


@pytest.fixture
def store() -> DictStore:
    return DictStore()


@pytest.fixture
def uid() -> str:
    return f"leases-{uuid.uuid4().hex}"


def commit(storage: KeyValueStorage, step: Any) -> Transition:
    snapshot = storage.load_full()
    transition: Transition = step(snapshot.state)
    storage.compare_and_swap(snapshot.version, transition.state, transition.changes)
    return transition


def running(storage: KeyValueStorage, owner: str = "run-1", expires: float = 30) -> None:
    """``t_a#0`` running under a lease of ``owner`` expiring at ``at(expires)``."""
    commit(storage, lambda s: engine.update_configuration(s, CONFIG))
    commit(storage, lambda s: engine.fire(s, "go", now=at(0)))
    lease = Lease(owner, at(expires), expires, {"host": "test"})
    commit(storage, lambda s: engine.mark_running(s, "t_a#0", now=at(0), lease=lease))


def index_lines(store: DictStore, prefix: str, kind: str) -> list[bytes]:
    """Every hint line of one kind in the store (closed slots excluded)."""
    found = []
    for key, raw in values(store).items():
        slot = key.startswith(f"{prefix}x:{kind}:") and key.count(":") == 5
        if slot and raw != INDEX_TOMBSTONE:
            found += lines_of(raw)
    return found


def assert_no_garbage(storage: KeyValueStorage, store: DictStore) -> None:
    stored = values(store)
    assert session_keys(storage, stored) == reachable_keys(storage, stored)


# -- records: where they are, what a renewal writes -----------------------------------------


def test_a_run_writes_its_record_with_the_start_and_its_end_deletes_it(
    store: DictStore, uid: str
) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    running(storage)
    record = storage.keys.lease("t_a#0", "run-1")
    assert record in values(store)
    assert_no_garbage(storage, store)
    commit(storage, lambda s: engine.finish(s, "t_a#0", {}, now=at(1), owner="run-1"))
    assert record not in values(store)
    assert_no_garbage(storage, store)


def test_a_renewal_reads_and_writes_the_lease_record_only(store: DictStore, uid: str) -> None:
    client = ScriptedClient(store)
    storage = KeyValueStorage(uid, client)
    running(storage)
    before = {k: v for k, v in values(store).items() if k != storage.keys.lease("t_a#0", "run-1")}
    client.calls.clear()
    client.written.clear()
    assert storage.renew_lease("t_a#0", "run-1", at(100))
    assert client.calls == ["gets", "cas"]
    assert client.written == [storage.keys.lease("t_a#0", "run-1")]
    after = {k: v for k, v in values(store).items() if k != storage.keys.lease("t_a#0", "run-1")}
    assert after == before  # no session document, no index key


def test_a_losing_start_leaves_no_record(store: DictStore, uid: str) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    commit(storage, lambda s: engine.update_configuration(s, CONFIG))
    commit(storage, lambda s: engine.fire(s, "go", now=at(0)))
    snapshot = storage.load_full()
    lease = Lease("loser", at(30), 30, {})
    lost = engine.mark_running(snapshot.state, "t_a#0", now=at(0), lease=lease)
    commit(storage, lambda s: engine.fire(s, "go", now=at(1)))  # moves the version on
    with pytest.raises(Exception, match="version"):
        storage.compare_and_swap(snapshot.version, lost.state, lost.changes)
    assert storage.keys.lease("t_a#0", "loser") not in values(store)
    # Its hint was filed before the swap: only a stale one, which a sweep drops.
    assert storage.due_entries(DueKind.LEASE, at(10**6), limit=10) == []
    assert index_lines(store, "triggers:", "l") == []


def test_an_evicted_record_falls_back_to_the_instance_document(store: DictStore, uid: str) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    running(storage)
    record = storage.keys.lease("t_a#0", "run-1")
    store.items.pop(record)  # evicted
    lease = storage.get_lease("t_a#0")
    assert lease is not None
    assert (lease.at, lease.owner, lease.claimed) == (at(30), "run-1", False)
    assert [r.at for r in storage.due_entries(DueKind.LEASE, at(100), limit=10)] == [at(30)]
    # A claim against the document's lease re-creates the record (with add): one winner.
    assert not storage.claim_lease("t_a#0", "run-1", at(29), at(500))
    assert storage.claim_lease("t_a#0", "run-1", at(30), at(500))
    assert record in values(store)
    assert not storage.renew_lease("t_a#0", "run-1", at(600))
    # A renewal does the same when the record is gone and nobody claimed.
    store.items.pop(record)
    assert storage.renew_lease("t_a#0", "run-1", at(700))
    found = storage.get_lease("t_a#0")
    assert found is not None
    assert (found.at, found.claimed) == (at(700), False)


def test_a_record_that_outlived_its_run_is_deleted_by_the_sweep(store: DictStore, uid: str) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    running(storage)
    record = storage.keys.lease("t_a#0", "run-1")
    kept = values(store)[record]
    commit(storage, lambda s: engine.finish(s, "t_a#0", {}, now=at(1), owner="run-1"))
    store.items[record] = (kept, 0)  # as if the best-effort delete had failed
    # The instance is finished: its page holds nothing unresolved, the hint goes...
    assert storage.due_entries(DueKind.LEASE, at(100), limit=10) == []
    # ...and a record met while its instance runs under another owner goes too.
    other = f"{uid}-2"
    second = storage.session(other)
    running(second, owner="run-2")
    stale = second.keys.lease("t_a#0", "run-old")
    forged = kept.replace(uid.encode(), other.encode()).replace(b"run-1", b"run-old")
    store.items[stale] = (forged, 0)
    hint = Hint(other, "t_a#0", DueKind.LEASE, at(30), "run-old")
    for filing in second._index.plan(shard_of(second.keys.session), [hint], 10**6):
        second._index.file(filing)
    assert [r.owner for r in storage.due_entries(DueKind.LEASE, at(100), limit=10)] == ["run-2"]
    assert stale not in values(store)


# -- hints: moved lazily, dropped when stale --------------------------------------------


def test_a_renewed_lease_is_filed_again_by_the_sweep_not_by_the_renewal(
    store: DictStore, uid: str
) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    running(storage)
    for n in range(1, 6):
        assert storage.renew_lease("t_a#0", "run-1", at(30 + 600 * n))
    assert len(index_lines(store, "triggers:", "l")) == 1  # renewals filed nothing
    assert storage.due_entries(DueKind.LEASE, at(100), limit=10) == []  # renewed: not due
    lines = index_lines(store, "triggers:", "l")
    assert len(lines) == 1  # moved, not copied
    hint = parse_line(lines[0], DueKind.LEASE)
    assert hint is not None
    assert hint.at == at(3030)
    [ref] = storage.due_entries(DueKind.LEASE, at(4000), limit=10)
    assert (ref.instance, ref.at, ref.owner) == ("t_a#0", at(3030), "run-1")


def test_stale_hints_are_dropped_and_empty_past_slots_deleted(store: DictStore, uid: str) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    manager = TriggerManager(
        storage, runners={"rec": RecordingRunner()}, default_runner="rec", clock=lambda: at(0)
    )
    manager.update_configuration({"t_every": {"after": ["tick"], "andEvery": "tick", "run": "x"}})
    for n in range(120):
        manager.fire("tick", {"n": n})
        manager.update_instance_status(f"t_every#{n}", Status.FINISHED)
    slots = [k for k in values(store) if k.startswith("triggers:x:d:") and k.count(":") == 5]
    assert len(slots) > 1  # 120 hints do not fit one slot
    assert storage.due_entries(DueKind.DISPATCH, at(10**6), limit=1000) == []
    left = {k: v for k, v in values(store).items() if k.startswith("triggers:x:")}
    # Every slot closed and deleted; the directories list nothing.
    assert set(left.values()) <= {b","}, left


def test_due_entries_checks_each_hint_against_its_session(store: DictStore, uid: str) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    running(storage)
    # Hints that point nowhere: another session that does not exist, a task and an
    # instance number that do not, and lines that are not hints at all.
    fake = [
        Hint(f"{uid}-none", "t_a#0", DueKind.LEASE, at(5), "run-1"),
        Hint(uid, "t_zz#0", DueKind.LEASE, at(5), "run-1"),
        Hint(uid, "t_a#7", DueKind.LEASE, at(5), "run-1"),
        Hint(uid, "t_a#0", DueKind.LEASE, at(5), "run-9"),
    ]
    index = storage._index
    for filing in index.plan(shard_of(storage.keys.session), fake, 10**6):
        index.file(filing)
    slot = index.slot_key(DueKind.LEASE, shard_of(storage.keys.session), bucket_of(at(5)), 0)
    raw, token = store.items[slot]
    hostile = raw + b'["x"]\n{"a":1}\n\xff\xfe\n[1,2,3,4]\n["u","t_a#0",1e400,"o"]\n'
    store.items[slot] = (hostile, token)
    [ref] = storage.due_entries(DueKind.LEASE, at(100), limit=10)
    assert (ref.session, ref.instance, ref.owner, ref.at) == (uid, "t_a#0", "run-1", at(30))
    lines = index_lines(store, "triggers:", "l")
    assert [parse_line(line, DueKind.LEASE) for line in lines] == [
        Hint(uid, "t_a#0", DueKind.LEASE, at(30), "run-1")
    ]


# -- what a commit and a sweep cost -------------------------------------------------------


def test_what_a_fire_adds_on_a_plain_client(store: DictStore, uid: str) -> None:
    """Filing the hints of a fire: a gets and a cas of one slot (on Redis: none)."""
    client = ScriptedClient(store)
    storage = KeyValueStorage(uid, client)
    manager = TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")
    manager.update_configuration({"t_every": {"after": ["tick"], "andEvery": "tick", "run": "x"}})
    manager.fire("tick", {"n": 0})  # creates the slot (and registers it)
    client.calls.clear()
    manager.fire("tick", {"n": 1})
    assert client.calls == ["gets", "gets", "cas", "set_many", "cas", "delete_many"]


def test_an_atomic_client_files_the_hints_in_its_commit(store: DictStore, uid: str) -> None:
    client = AtomicDictClient(store)
    storage = KeyValueStorage(uid, client)
    manager = TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")
    manager.update_configuration({"t_every": {"after": ["tick"], "andEvery": "tick", "run": "x"}})
    for n in range(100):
        manager.fire("tick", {"n": n})
    lines = index_lines(store, "triggers:", "d")
    assert len(lines) == 100
    slots = [k for k in values(store) if k.startswith("triggers:x:d:") and k.count(":") == 5]
    assert len(slots) > 1
    assert all(len(values(store)[k]) <= SLOT_BYTES for k in slots)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert len(storage.due_entries(DueKind.DISPATCH, later, limit=1000)) == 100


def _seed(storage: KeyValueStorage, tasks: Any, expires: datetime, owner: str) -> None:
    """One session with one instance running under a lease expiring at ``expires``."""
    started = at(0).isoformat()
    instance = TaskInstance(
        name="t_a#0",
        task_name="t_a",
        status=Status.RUNNING,
        kwargs={"go": {}},
        metadata={
            "created": started,
            "timestamps": {"running": started},
            "owner": owner,
            "leaseExpires": expires.isoformat(),
            "leaseSeconds": 30,
        },
    )
    state = SessionState(tasks=tasks, instances={"t_a#0": instance}, counters={"t_a": 1})
    names = frozenset({"t_a#0"})
    due = {"t_a#0": Due(DueKind.LEASE, expires, owner)}
    changes = Changes(instances=names, created=names, config=True, due=due)
    storage.compare_and_swap(None, state, changes)


def _keys_read_by_a_sweep(sessions: int) -> tuple[int, int]:
    """(keys read, entries found) by one ``due_entries`` over ``sessions`` sessions, of
    which 10 hold a lost run and the others a run whose lease is still good."""
    store = DictStore()
    client = CountingClient(store)
    tasks = engine.update_configuration(SessionState(), CONFIG).state.tasks
    base = KeyValueStorage("seed", client)
    for n in range(sessions):
        expires = at(10 + n) if n < 10 else at(3600)
        _seed(base.session(f"s-{n}"), tasks, expires, f"run-{n}")
    sweeper = KeyValueStorage("sweeper", client)  # a cold cache, as a worker's sweeper
    client.read = 0
    found = sweeper.due_entries(DueKind.LEASE, at(60), limit=500)
    return client.read, len(found)


@pytest.mark.slow
def test_a_sweep_reads_the_same_keys_for_100_or_10000_sessions() -> None:
    small, found_small = _keys_read_by_a_sweep(100)
    large, found_large = _keys_read_by_a_sweep(10_000)
    assert found_small == found_large == 10
    # The 16 directories, the slots of the due bucket (one per shard the ten sessions
    # fall in), then per due hint its session's active document, its lease record, its
    # index page and its instance; nothing for the sessions whose runs are not due.
    assert large == small, (small, large)
    assert small <= SHARDS + 10 + 10 * 4, small


def test_a_sweep_stops_after_the_bucket_that_fills_its_limit(store: DictStore) -> None:
    client = CountingClient(store)
    base = KeyValueStorage("seed", client)
    tasks = engine.update_configuration(SessionState(), CONFIG).state.tasks
    for n in range(5):  # one lost run per one-minute bucket
        _seed(base.session(f"s-{n}"), tasks, at(100 * n), f"run-{n}")
    client.read = 0
    [first] = base.due_entries(DueKind.LEASE, at(10_000), limit=1)
    one = client.read
    client.read = 0
    assert len(base.due_entries(DueKind.LEASE, at(10_000), limit=10)) == 5
    assert first.session == "s-0"
    assert one < client.read


def test_a_sweep_moves_renewed_leases_in_a_few_filings(store: DictStore) -> None:
    client = ScriptedClient(store)
    base = KeyValueStorage("seed", client)
    tasks = engine.update_configuration(SessionState(), CONFIG).state.tasks
    for n in range(200):
        peer = base.session(f"s-{n}")
        _seed(peer, tasks, at(10), f"run-{n}")
        assert peer.renew_lease("t_a#0", f"run-{n}", at(900))
    client.calls.clear()
    assert base.due_entries(DueKind.LEASE, at(100), limit=500) == []
    # 200 hints moved: per shard, a new slot (registered) and the old one closed and
    # unlisted; nothing per session.
    assert client.calls.count("cas") + client.calls.count("add") <= 4 * SHARDS
    assert len(index_lines(store, "triggers:", "l")) == 200
    assert len(base.due_entries(DueKind.LEASE, at(1000), limit=500)) == 200


# -- lost hints, and the rebuild ------------------------------------------------------------


def test_a_lost_index_is_rebuilt_from_the_sessions(store: DictStore, uid: str) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    running(storage)
    other = storage.session(f"{uid}-b")
    commit(other, lambda s: engine.update_configuration(s, CONFIG))
    commit(other, lambda s: engine.fire(s, "go", now=at(3)))
    for key in [k for k in values(store) if k.startswith("triggers:x:")]:
        store.items.pop(key)  # memcached evicted the index (or restarted, sessions kept)
    assert storage.due_entries(DueKind.LEASE, at(100), limit=10) == []
    assert storage.rebuild_due_index([uid, f"{uid}-b"]) == 2
    [lease] = storage.due_entries(DueKind.LEASE, at(100), limit=10)
    [dispatch] = storage.due_entries(DueKind.DISPATCH, at(100), limit=10)
    assert (lease.session, lease.instance, lease.at) == (uid, "t_a#0", at(30))
    assert (dispatch.session, dispatch.instance, dispatch.at) == (f"{uid}-b", "t_a#0", at(3))
    runner = RecordingRunner()
    report = sweep_store(
        storage,
        lambda s: TriggerManager(s, runners={"rec": runner}, default_runner="rec"),
        limit=100,
    )
    assert {(a.session, a.action) for a in report.acted} == {
        (uid, "taken over"),
        (f"{uid}-b", "dispatched again"),
    }


def test_a_renewal_of_a_lost_lease_record_keeps_the_run_findable(
    store: DictStore, uid: str
) -> None:
    """Hints and record evicted while the run renews: the record comes back (add), and a
    rebuild finds the run at the instance document's lease, then at the record's."""
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    running(storage)
    for key in [k for k in values(store) if k.startswith("triggers:x:") or ":l:" in k]:
        store.items.pop(key)
    assert storage.renew_lease("t_a#0", "run-1", at(900))
    storage.rebuild_due_index([uid])
    assert storage.due_entries(DueKind.LEASE, at(100), limit=10) == []  # renewed: moved
    [ref] = storage.due_entries(DueKind.LEASE, at(1000), limit=10)
    assert ref.at == at(900)


# -- slot chains: registration, pruning, closed slots --------------------------------------


def test_a_writer_puts_back_an_entry_a_sweep_pruned_under_its_feet(
    store: DictStore, uid: str
) -> None:
    client = ScriptedClient(store)
    storage = KeyValueStorage(uid, client)
    index = storage._index
    hint = Hint(uid, "t_a#0", DueKind.DISPATCH, at(1), None)
    [filing] = index.plan(shard_of(storage.keys.session), [hint], 10**6)
    slot = filing.append.slots[0]
    directory = filing.append.directory

    def sweep_first(key: str, *_: Any) -> None:
        if key == slot:  # registered, not yet added: a sweep sees it listed but missing
            client.hooks.clear()
            storage.due_entries(DueKind.DISPATCH, at(10**6), limit=10)
            assert f",{bucket_of(at(1))}.0,".encode() not in values(store)[directory]

    client.hooks["add"] = sweep_first
    index.file(filing)
    assert f",{bucket_of(at(1))}.0,".encode() in values(store)[directory]


def test_writers_skip_a_closed_slot(store: DictStore, uid: str) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    index = storage._index
    shard = shard_of(storage.keys.session)
    closed = index.slot_key(DueKind.DISPATCH, shard, bucket_of(at(1)), 0)
    store.items[closed] = (INDEX_TOMBSTONE, 0)
    hint = Hint(uid, "t_a#0", DueKind.DISPATCH, at(1), None)
    for filing in index.plan(shard, [hint], 10**6):
        index.file(filing)
    assert values(store)[closed] == INDEX_TOMBSTONE
    assert values(store)[index.slot_key(DueKind.DISPATCH, shard, bucket_of(at(1)), 1)] == (
        hint.line()
    )
    # A sweep finds the closed slot listed (a sweeper died before deleting it): gone now.
    index.register(index.directory(DueKind.DISPATCH, shard), f"{bucket_of(at(1))}.0")
    storage.due_entries(DueKind.DISPATCH, at(10**6), limit=10)
    assert closed not in values(store)


def test_an_atomic_commit_with_no_room_files_its_hints_itself(store: DictStore, uid: str) -> None:
    storage = KeyValueStorage(uid, AtomicDictClient(store))
    commit(storage, lambda s: engine.update_configuration(s, CONFIG))
    shard = shard_of(storage.keys.session)
    index = storage._index
    for number in range(4):  # every candidate of the next commit is closed
        store.items[index.slot_key(DueKind.DISPATCH, shard, bucket_of(at(0)), number)] = (
            INDEX_TOMBSTONE,
            0,
        )
    commit(storage, lambda s: engine.fire(s, "go", now=at(0)))
    [ref] = storage.due_entries(DueKind.DISPATCH, at(100), limit=10)
    assert ref.instance == "t_a#0"


# -- delete ------------------------------------------------------------------------------


def test_delete_leaves_no_key_of_the_session(store: DictStore, uid: str) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    running(storage)
    assert storage.keys.lease("t_a#0", "run-1") in values(store)
    storage.delete()
    assert session_keys(storage, values(store)) == set()
    # Its hint is in a shared slot: the next sweep finds the session gone and drops it.
    assert storage.due_entries(DueKind.LEASE, at(100), limit=10) == []
    assert index_lines(store, "triggers:", "l") == []


def test_store_identity_and_session(store: DictStore, uid: str) -> None:
    client = DictKeyValueClient(store)
    storage = KeyValueStorage(uid, client, prefix="p:")
    other = storage.session(f"{uid}-2")
    assert other.uid == f"{uid}-2"
    assert other.prefix == "p:"
    assert other.client is client
    assert other.commit_lock is not storage.commit_lock
    assert other.store_identity() == storage.store_identity()
    assert KeyValueStorage(uid, client, prefix="q:").store_identity() != storage.store_identity()


def test_due_entries_refuses_a_naive_time(store: DictStore, uid: str) -> None:
    storage = KeyValueStorage(uid, DictKeyValueClient(store))
    with pytest.raises(ValueError, match="naive"):
        storage.due_entries(DueKind.LEASE, datetime(2024, 1, 1), limit=1)


def test_index_keys_stay_within_memcached_limits() -> None:
    index = DueIndex(DictKeyValueClient(DictStore()), "p" * 100)
    longest = index.slot_key(DueKind.LEASE, SHARDS - 1, -(10**12), 10**6)
    assert len(longest) <= 250


def test_a_directory_is_parsed_again_only_when_it_changed() -> None:
    """Issue 24: a directory lists every pending slot; a sweep reuses the last parse of an
    unchanged one and takes only the buckets it covers (bisection), never a stale list."""
    positions = SlotPositions()
    raw = b",100.0,99.1,101.0,99.0,bogus,"
    first = positions.parsed("p:x:t:0", raw)
    assert first.entries == ((99, 0), (99, 1), (100, 0), (101, 0))
    assert first.bad == {"bogus"}
    assert first.up_to(99) == ((99, 0), (99, 1))
    assert first.up_to(100) == ((99, 0), (99, 1), (100, 0))
    assert first.up_to(98) == ()
    assert positions.parsed("p:x:t:0", bytes(raw)) is first  # equal bytes: the same parse
    changed = positions.parsed("p:x:t:0", raw + b"100.1,")
    assert changed.up_to(100) == ((99, 0), (99, 1), (100, 0), (100, 1))
    assert positions.parsed("p:x:t:1", raw) is not first  # another directory: its own


def test_two_tickers_race_on_a_thousand_due_timers() -> None:
    """Issue 24: 1,000 due timers in the sharded key-value index, two tickers at once:
    each fires exactly once."""
    from triggers_core.testing.timer_contract import TimerContract

    store, prefix = DictStore(), f"t{uuid.uuid4().hex[:8]}:"

    class Race(TimerContract):
        timer_race_sessions = 1000

        def make_storage(self, uid: str) -> Storage:
            return KeyValueStorage(uid, AtomicDictClient(store), prefix=prefix)

    Race().test_two_tickers_racing_apply_each_timer_once(f"timer-{uuid.uuid4().hex}")


def test_two_tickers_race_on_a_thousand_due_retry_cooldowns() -> None:
    """Issue 24: 1,000 retries waiting for their cooldown in the sharded key-value index,
    two tickers at once: each clone is scheduled exactly once."""
    from triggers_core.testing.timer_contract import TimerContract

    store, prefix = DictStore(), f"t{uuid.uuid4().hex[:8]}:"

    class Race(TimerContract):
        retry_race_sessions = 1000

        def make_storage(self, uid: str) -> Storage:
            return KeyValueStorage(uid, AtomicDictClient(store), prefix=prefix)

    Race().test_two_tickers_racing_schedule_each_retry_once(f"retry-{uuid.uuid4().hex}")
