"""In-process storage: thread-safe, with the same compare-and-swap semantics as a database.

Sessions are kept as objects, not JSON text, so a fire costs no parsing: the
header, the instances (with a per-task index of the unstarted ones and the set
of unresolved ones) and the task table, which is immutable and shared. Isolation
without a JSON round trip: what a caller passes in is copied on write (only the
instances and latest kwargs that changed; mapping keys sorted, as the JSON
backends return them) and what a load returns is copied on read, with a small
copier for JSON values (:func:`triggers_core.engine.values.copy_json`), so callers never
share a mutable value with the store or with each other.

Fire records (idempotency keys) are kept per session in a dict beside the
instances, outside the header: a load reads the ones its scope names (a dict
lookup each), a compare-and-swap adds new ones under the same lock as the
version check, so a fire costs the same whatever number of keys the session
holds. They live as long as the session (as long as the process, for a
process-local store).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from triggers_core.engine.idempotency import FireKey
from triggers_core.engine.scopes import HEADER_ONLY, Changes, Scope, Selector
from triggers_core.engine.serialization import check_joined
from triggers_core.engine.state import SessionState, Status, TaskInstance, copy_instance
from triggers_core.engine.task_table import TaskTable
from triggers_core.engine.values import copy_json, copy_json_sorted
from triggers_core.errors import ConflictError, SerializationError
from triggers_core.runtime.redaction import redact
from triggers_core.runtime.sessions import SessionFilter, SessionPage, check_page_size
from triggers_core.runtime.storage import Snapshot, Storage, Version

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


class MemoryStore:
    """A process-local "database" of sessions; storages on one store share sessions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}

    def clear(self) -> None:
        """Forget every session."""
        with self._lock:
            self._sessions.clear()

    def list_sessions(
        self,
        filter: SessionFilter | None = None,
        *,
        page_size: int = 100,
        cursor: str | None = None,
    ) -> SessionPage:
        """One page of the UIDs stored here that ``filter`` wants, in UID order.

        The cursor is the last UID of the previous page. Each session keeps the
        set of its unresolved instances, which is all a filter looks at.
        """
        filter = filter or SessionFilter()
        page_size = check_page_size(page_size)
        if cursor is not None and not isinstance(cursor, str):
            raise ValueError(f"cursor must be a string from a previous page, got {cursor!r}")
        found: list[str] = []
        with self._lock:
            for uid in sorted(self._sessions):
                if cursor is not None and uid <= cursor:
                    continue
                session = self._sessions[uid]
                if filter.matches(session.instances[n] for n in session.unresolved):
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

    def reference(self) -> str | None:
        """``memory://name`` for a named store; None for a private :class:`MemoryStore`."""
        return None if self._private else redact(f"memory://{self.store_name}")

    def check_fire_keys(self) -> None:
        """Fire records are kept (per session, beside the instances)."""

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
            latest_kwargs={k: copy_json(v) for k, v in latest.items()},
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
        latest = _merged_latest({} if prior is None else prior.latest, state.latest_kwargs)
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


def _merged_latest(
    stored: Mapping[str, Mapping[str, Any]], given: Mapping[str, Mapping[str, Any]]
) -> dict[str, Mapping[str, Any]]:
    """The new latest kwargs: the stored private copy where unchanged, else a new copy."""
    merged: dict[str, Mapping[str, Any]] = {}
    for trigger, kwargs in given.items():
        kept = stored.get(trigger)
        merged[trigger] = kept if kept is not None and kept == kwargs else copy_json_sorted(kwargs)
    return merged
