"""In-process storage: thread-safe, with the same compare-and-swap semantics as a database.

Sessions are kept as objects, not JSON text, so a fire costs no parsing: the
header, the instances (with a per-task index of the unstarted ones and the set
of unresolved ones) and the task table, which is immutable and shared. Isolation
without a JSON round trip: what a caller passes in is copied on write (only the
instances and latest kwargs that changed; mapping keys sorted, as the JSON
backends return them) and what a load returns is copied on read, with a small
copier for JSON values (:func:`triggers_core.engine.values.copy_json`), so callers never
share a mutable value with the store or with each other.

Leases and the due index: the store keeps one record per indexed instance
(kind, time, owner, claimed) in a dict, and a heap of (time, instance) entries
over them; an entry is live while its record still carries the entry's
sequence number, so moving a record (a renewal, a claim) pushes a new entry
and leaves the old one to be dropped. Listing what is due walks only the part
of the heap at or before the time asked (a heap's children are never earlier
than their parent), so it costs what it finds plus the stale entries met on the
way; the heap is rebuilt from the records when stale entries outnumber them.

Fire records (idempotency keys) are kept per session in a dict beside the
instances, outside the header: a load reads the ones its scope names (a dict
lookup each), a compare-and-swap adds new ones under the same lock as the
version check, so a fire costs the same whatever number of keys the session
holds. They live as long as the session (as long as the process, for a
process-local store).
"""

from __future__ import annotations

import bisect
import functools
import heapq
import itertools
import threading
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

import attrs

from triggers_core.engine.idempotency import FireKey
from triggers_core.engine.latest import LatestKwargs
from triggers_core.engine.leases import Due, DueKind
from triggers_core.engine.scopes import HEADER_ONLY, Changes, Scope, Selector
from triggers_core.engine.serialization import check_joined
from triggers_core.engine.state import SessionState, Status, TaskInstance, copy_instance
from triggers_core.engine.task_table import TaskTable
from triggers_core.engine.values import copy_json, copy_json_sorted
from triggers_core.errors import ConflictError, SerializationError
from triggers_core.runtime.redaction import redact
from triggers_core.runtime.sessions import (
    SessionFilter,
    SessionPage,
    check_page_size,
    prefix_upper_bound,
)
from triggers_core.runtime.storage import DueRef, Snapshot, Storage, Version

__all__ = ["MemoryStorage", "MemoryStore"]

_NO_RECORDS: Mapping[FireKey, tuple[str, ...]] = MappingProxyType({})


@attrs.define
class _Session:
    """One stored session. Header dicts are replaced on write, never changed in place."""

    version: int
    tasks: TaskTable
    latest: dict[str, Mapping[str, Any]]
    counters: dict[str, int]
    unsettled: dict[str, frozenset[str]]
    settled: dict[str, frozenset[str]]
    #: Private copies; a stored instance object is replaced on write, never mutated.
    instances: dict[str, TaskInstance] = attrs.field(factory=dict)
    #: task -> its unstarted instances by name (the same objects as in ``instances``)
    unstarted: dict[str, dict[str, TaskInstance]] = attrs.field(factory=dict)
    unresolved: set[str] = attrs.field(factory=set)
    #: Fire records (idempotency keys): key digest -> names of what its fire scheduled.
    fire_records: dict[str, tuple[str, ...]] = attrs.field(factory=dict)

    def pick(self, scope: Scope) -> list[TaskInstance]:
        instances = self.instances
        found = {name: instances[name] for name in scope.names if name in instances}
        unstarted = self.unstarted
        for task in scope.unstarted_of:
            waiting = unstarted.get(task)
            if waiting:
                found.update(waiting)
        if scope.unresolved:
            for name in self.unresolved:
                found[name] = instances[name]
        return list(found.values())

    def put(self, instance: TaskInstance) -> None:
        name, task = instance.name, instance.task_name
        self.instances[name] = instance
        if instance.status is Status.UNSTARTED:
            self.unstarted.setdefault(task, {})[name] = instance
        else:
            waiting = self.unstarted.get(task)
            if waiting is not None:
                waiting.pop(name, None)
        if instance.is_resolved:
            self.unresolved.discard(name)
        else:
            self.unresolved.add(name)


@attrs.frozen
class _DueRecord:
    kind: DueKind
    at: datetime
    owner: str | None
    claimed: bool
    #: The sequence number of the record's live heap entry.
    seq: int


class MemoryStore:
    """A process-local "database" of sessions; storages on one store share sessions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        #: The due index: (uid, instance) -> its record, and a heap of entries over them.
        self._due: dict[tuple[str, str], _DueRecord] = {}
        self._heap: list[tuple[datetime, int, str, str]] = []
        self._seq = itertools.count()

    def clear(self) -> None:
        """Forget every session."""
        with self._lock:
            self._sessions.clear()
            self._due.clear()
            self._heap.clear()

    # The due index (called with the lock held) --------------------------------------

    def _set_due(self, uid: str, name: str, due: Due | None, *, claimed: bool = False) -> None:
        key = (uid, name)
        if due is None:
            self._due.pop(key, None)
        else:
            seq = next(self._seq)
            self._due[key] = _DueRecord(due.kind, due.at, due.owner, claimed, seq)
            heapq.heappush(self._heap, (due.at, seq, uid, name))
        if len(self._heap) > 2 * len(self._due) + 64:  # mostly stale: rebuild it
            self._heap = [(r.at, r.seq, u, n) for (u, n), r in self._due.items()]
            heapq.heapify(self._heap)

    def _due_before(self, kind: DueKind, before: datetime, limit: int) -> list[DueRef]:
        heap, records = self._heap, self._due
        found: list[DueRef] = []
        pending = [0] if heap else []
        while pending:  # the part of the heap at or before ``before``, and no more
            index = pending.pop()
            at, seq, uid, name = heap[index]
            if at > before:
                continue
            record = records.get((uid, name))
            if record is not None and record.seq == seq and record.kind is kind:
                found.append(DueRef(uid, name, kind, at, record.owner, record.claimed))
            pending.extend(i for i in (2 * index + 1, 2 * index + 2) if i < len(heap))
        found.sort(key=lambda ref: (ref.at, ref.session, ref.instance))
        return found[:limit]

    def due(self, kind: DueKind, before: datetime, *, limit: int = 1000) -> list[DueRef]:
        """Entries of ``kind`` due at or before ``before``, oldest first (see the module)."""
        with self._lock:
            return self._due_before(kind, before, limit)

    def list_sessions(
        self,
        filter: SessionFilter | None = None,
        *,
        page_size: int = 100,
        cursor: str | None = None,
    ) -> SessionPage:
        """One page of the UIDs stored here that ``filter`` wants, in UID order.

        The cursor is the last UID of the previous page. Each session keeps the
        set of its unresolved instances, which is all a filter looks at (but
        ``expired``, which looks at every instance of each session it examines). A
        ``uid_prefix`` is a range of the sorted UIDs (found by bisection), so
        only the sessions in it are looked at; sorting the UIDs costs
        O(n log n) per page for n sessions in the store.
        """
        filter = filter or SessionFilter()
        page_size = check_page_size(page_size)
        if cursor is not None and not isinstance(cursor, str):
            raise ValueError(f"cursor must be a string from a previous page, got {cursor!r}")
        found: list[str] = []
        prefix = filter.uid_prefix
        bound = prefix_upper_bound(prefix)
        with self._lock:
            uids = sorted(self._sessions)
            start = bisect.bisect_left(uids, prefix)
            if cursor is not None:
                start = max(start, bisect.bisect_right(uids, cursor))
            stop = len(uids) if bound is None else bisect.bisect_left(uids, bound)
            for uid in itertools.islice(uids, start, stop):
                session = self._sessions[uid]
                if filter.expired:  # a resolved status: every instance of the session is looked at
                    looked_at = list(session.instances.values())
                else:
                    looked_at = [session.instances[n] for n in session.unresolved]
                if filter.matches(looked_at):
                    found.append(uid)
                    if len(found) > page_size:
                        break
        if len(found) > page_size:
            return SessionPage(tuple(found[:page_size]), found[page_size - 1])
        return SessionPage(tuple(found), None)


_NAMED_STORES: dict[str, MemoryStore] = {}
_NAMED_LOCK = threading.Lock()


def named_store(name: str) -> MemoryStore:
    """The process-wide store behind ``memory://name`` (``memory://`` is ``""``)."""
    with _NAMED_LOCK:
        return _NAMED_STORES.setdefault(name, MemoryStore())


class MemoryStorage(Storage):
    """One session in a :class:`MemoryStore` (the process-wide default store if none)."""

    backend_name = "memory"

    def __init__(self, uid: str, store: MemoryStore | None = None, *, store_name: str = "") -> None:
        super().__init__(uid)
        self.store_name = store_name
        self._private = store is not None
        self.store = store if store is not None else named_store(store_name)

    @classmethod
    def from_url(cls, url: str, uid: str) -> MemoryStorage:
        """``memory://`` (the default store) or ``memory://name`` (a named store).

        The name is everything after ``memory://``, compared exactly:
        ``memory://a/b``, ``memory://ab`` and ``memory://ab/`` are three stores.
        """
        _scheme, _sep, name = url.partition("://")
        return cls(uid, store_name=name)

    @classmethod
    def list_sessions(
        cls,
        url: str,
        filter: SessionFilter,
        *,
        page_size: int,
        cursor: str | None,
    ) -> SessionPage:
        """The sessions of the named store behind ``memory://name`` (of this process)."""
        _scheme, _sep, name = url.partition("://")
        return named_store(name).list_sessions(filter, page_size=page_size, cursor=cursor)

    def list_store_sessions(
        self,
        filter: SessionFilter,
        *,
        page_size: int,
        cursor: str | None,
    ) -> SessionPage:
        """The sessions of this storage's store (see ``Storage.list_store_sessions``)."""
        return self.store.list_sessions(filter, page_size=page_size, cursor=cursor)

    def reference(self) -> str | None:
        """``memory://name`` for a named store; None for a private :class:`MemoryStore`."""
        return None if self._private else redact(f"memory://{self.store_name}")

    def check_fire_keys(self) -> None:
        """Fire records are kept (per session, beside the instances)."""

    def check_leases(self) -> None:
        """Leases and the due index are kept (see the module docstring)."""

    def renew_lease(self, name: str, owner: str, expires: datetime) -> bool:
        store = self.store
        with store._lock:
            record = store._due.get((self.uid, name))
            if (
                record is None
                or record.kind is not DueKind.LEASE
                or record.owner != owner
                or record.claimed
            ):
                return False
            store._set_due(self.uid, name, Due(DueKind.LEASE, expires, owner))
            return True

    def claim_lease(self, name: str, owner: str, seen: datetime, until: datetime) -> bool:
        store = self.store
        with store._lock:
            record = store._due.get((self.uid, name))
            if (
                record is None
                or record.kind is not DueKind.LEASE
                or record.owner != owner
                or record.at != seen
            ):
                return False
            store._set_due(self.uid, name, Due(DueKind.LEASE, until, owner), claimed=True)
            return True

    def forget_due(self, name: str, kind: DueKind, seen: datetime) -> bool:
        store = self.store
        with store._lock:
            record = store._due.get((self.uid, name))
            if record is None or record.kind is not kind or record.at != seen:
                return False
            store._set_due(self.uid, name, None)
            return True

    def get_lease(self, name: str) -> DueRef | None:
        with self.store._lock:
            record = self.store._due.get((self.uid, name))
        if record is None or record.kind is not DueKind.LEASE:
            return None
        return DueRef(self.uid, name, record.kind, record.at, record.owner, record.claimed)

    def due_entries(self, kind: DueKind, before: datetime, *, limit: int) -> list[DueRef]:
        return self.store.due(kind, before, limit=limit)

    def session(self, uid: str) -> MemoryStorage:
        other = MemoryStorage(uid, self.store, store_name=self.store_name)
        other._private = self._private
        return other

    def store_identity(self) -> object | None:
        return ("memory", id(self.store))

    def _read(self, scope: Scope | Selector | None) -> Snapshot:
        store = self.store
        with store._lock:
            session = store._sessions.get(self.uid)
            if session is None:
                return Snapshot(SessionState(), None)
            # The header dicts are replaced on write, never changed in place, so these
            # references stay a consistent snapshot after the lock is released.
            version, tasks = session.version, session.tasks
            latest, counters, unsettled = session.latest, session.counters, session.unsettled
            settled = session.settled
            records: Mapping[FireKey, tuple[str, ...]] = _NO_RECORDS
            if scope is None:
                picked = list(session.instances.values())
            else:
                if not isinstance(scope, Scope):  # a selector reads the header (read-only)
                    scope = scope(SessionState(tasks, {}, latest, counters, unsettled, settled))
                picked = session.pick(scope)
                if scope.fire_keys:  # records are immutable tuples: shared, not copied
                    stored = session.fire_records
                    records = {}
                    for key in scope.fire_keys:
                        found = stored.get(key.digest)
                        if found is not None:
                            records[key] = found
        # Stored values are never mutated either: check and copy them outside the lock.
        check_joined(tasks, counters, picked, f"memory storage, session {self.uid!r}")
        state = SessionState(
            tasks=tasks,
            instances={i.name: copy_instance(i) for i in picked},
            latest_kwargs=LatestKwargs(
                latest, functools.partial(_copy_of, latest), source=(self.store, self.uid)
            ),
            counters=dict(counters),
            unsettled=dict(unsettled),
            settled=dict(settled),
            fire_records=records,
        )
        return Snapshot(state, version)

    def load(self, scope: Scope | Selector = HEADER_ONLY) -> Snapshot:
        return self._read(scope)

    def load_full(self) -> Snapshot:
        return self._read(None)

    def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        written = [copy_instance(state.instances[n], sort_keys=True) for n in changes.instances]
        counters = dict(state.counters)
        store = self.store
        # Copy what changed in the latest kwargs outside the lock, against the stored
        # dict as it is now: if another write replaces it first, the version check fails.
        prior = store._sessions.get(self.uid)
        latest = _merged_latest(
            {} if prior is None else prior.latest, state.latest_kwargs, (store, self.uid)
        )
        unsettled = _frozen_sets(state.unsettled, None if prior is None else prior.unsettled)
        settled = _frozen_sets(state.settled, None if prior is None else prior.settled)
        records: dict[str, tuple[str, ...]] | None = None
        if changes.fire_records:  # private copies (a caller may pass lists)
            records = {}
            for key, names in changes.fire_records.items():
                records[key.digest] = names if type(names) is tuple else tuple(names)
        with store._lock:
            session = store._sessions.get(self.uid)
            current = None if session is None else session.version
            if current != expected:
                raise ConflictError(
                    f"version is {current!r}, expected {expected!r}",
                    backend=self.backend_name,
                    session=self.uid,
                )
            if session is not None:
                clash = sorted(n for n in changes.created if n in session.instances)
                if clash:
                    raise SerializationError(
                        f"{self.backend_name} storage, session {self.uid!r}: instance "
                        f"{clash[0]!r} already exists, but this operation creates it (its "
                        "task's counter is below the stored instances: edited by hand?); "
                        "nothing was written"
                    )
                if records and not session.fire_records.keys().isdisjoint(records):
                    raise ConflictError(
                        "a fire record this write creates is already stored (that fire "
                        "was applied meanwhile)",
                        backend=self.backend_name,
                        session=self.uid,
                    )
            if session is None:
                session = store._sessions[self.uid] = _Session(
                    version=0,
                    tasks=TaskTable.of(state.tasks),
                    latest=latest,
                    counters=counters,
                    unsettled=unsettled,
                    settled=settled,
                )
            elif changes.config:
                session.tasks = TaskTable.of(state.tasks)
            session.version += 1
            session.latest = latest
            session.counters = counters
            session.unsettled = unsettled
            session.settled = settled
            for instance in written:
                session.put(instance)
            if records:
                session.fire_records.update(records)
            for name, due in changes.due.items():
                store._set_due(self.uid, name, due)
            return session.version


def _frozen_sets(
    given: Mapping[str, frozenset[str]], stored: dict[str, frozenset[str]] | None
) -> dict[str, frozenset[str]]:
    """A private copy of a task -> names mapping; the stored one itself if equal.

    One entry per task: a fire that changes none of them (the usual case) costs a
    comparison, not a copy of every entry.
    """
    if stored is not None and given == stored:
        return stored  # replaced on write, never changed in place: safe to share
    return {task: frozenset(names) for task, names in given.items()}


def _copy_of(latest: Mapping[str, Mapping[str, Any]], trigger: str) -> Mapping[str, Any]:
    copied: Mapping[str, Any] = copy_json(latest[trigger])
    return copied


def _merged_latest(
    stored: Mapping[str, Mapping[str, Any]],
    given: Mapping[str, Mapping[str, Any]],
    source: object,
) -> dict[str, Mapping[str, Any]]:
    """The new latest kwargs: the stored private copy where unchanged, else a new copy.

    ``given`` as this session's load made it: only the triggers it set are copied
    (a large value nobody read costs nothing); the version check of the write then
    guarantees that the rest is what the load saw.
    """
    if isinstance(given, LatestKwargs) and given.source == source:
        written = dict(stored)
        for trigger in given.changed:
            kwargs = given[trigger]
            old = written.get(trigger)
            written[trigger] = (
                old if old is not None and old == kwargs else copy_json_sorted(kwargs)
            )
        return written
    merged: dict[str, Mapping[str, Any]] = {}
    for trigger, kwargs in given.items():
        kept = stored.get(trigger)
        merged[trigger] = kept if kept is not None and kept == kwargs else copy_json_sorted(kwargs)
    return merged
