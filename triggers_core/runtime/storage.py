"""The storage port: load a session with a version token, compare-and-swap it.

Concrete storages implement three methods (:meth:`Storage.load`,
:meth:`Storage.load_full`, :meth:`Storage.compare_and_swap`); the read-only
inspection API of SPEC section 6 is built on top, so a storage object alone is
enough for dashboards and scripts.

Contract (proved for every backend by :mod:`triggers_core.testing.storage_contract`):

* ``load`` of a session that was never stored returns an empty state and version ``None``.
* ``load(scope)`` returns the header (tasks, latest kwargs, counters,
  unsettled, settled) and at least the instances the :class:`~triggers_core.engine.scopes.Scope`
  asks for, all from one snapshot. ``scope`` may be a *selector*: a function
  the storage calls with the header it just read (inside the same snapshot)
  to decide the scope, so an operation loads what it needs in one call.
  ``load_full`` returns every instance.
* ``compare_and_swap(expected, state, changes)`` writes the header, the
  configuration if ``changes.config``, and the instances named in
  ``changes.instances``, only if the stored version is still ``expected``
  (``None``: create; fails if the session exists), and returns the new
  version. Otherwise it raises :class:`~triggers_core.errors.ConflictError`
  and the stored session is unchanged. An instance in ``changes.created``
  that is already stored is corruption (a counter lowered by hand would
  otherwise overwrite history and run a task twice): it raises
  :class:`~triggers_core.errors.SerializationError` naming the session and
  the instance, and writes nothing.
* Fire records (idempotency keys, :mod:`triggers_core.engine.idempotency`), for
  storages whose :meth:`Storage.check_fire_keys` accepts them: ``load`` also
  returns, in ``state.fire_records``, the records of the keys in
  ``scope.fire_keys`` that exist (in the same snapshot, and only those);
  ``compare_and_swap`` creates the records in ``changes.fire_records`` in the
  same atomic write as everything else. A record in ``changes.fire_records``
  that is already stored raises :class:`~triggers_core.errors.ConflictError`
  and nothing is written (the manager reloads and finds the fire applied). A
  stored record never changes and is kept for the life of the session;
  nothing but a load that names it reads it, so a session may hold any
  number of them without slowing anything else down.
* Leases and the due index (:mod:`triggers_core.engine.leases`), for storages
  whose :meth:`Storage.check_leases` accepts them: ``compare_and_swap`` applies
  ``changes.due`` with everything else (an entry per instance: set it, or
  delete it for None; names absent keep theirs); :meth:`Storage.renew_lease`
  and :meth:`Storage.claim_lease` change one instance's lease record without
  touching the session, each only if the record is as the caller expects, so
  of a renewal and a claim racing on one lease exactly one succeeds; and
  :meth:`Storage.due` lists a store's entries due before a time, oldest first,
  at a cost that grows with what it returns, not with the number of sessions.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

import attrs

from triggers_core.engine.config import TaskConfig
from triggers_core.engine.leases import Due, DueKind, lease_owner, parse_time
from triggers_core.engine.names import name_problem
from triggers_core.engine.scopes import HEADER_ONLY, Changes, Scope, Selector
from triggers_core.engine.serialization import instance_to_json
from triggers_core.engine.sizes import DEFAULT_MAX_VALUE_BYTES
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.errors import UnknownInstanceError, UnsupportedOperationError
from triggers_core.runtime.sessions import SessionFilter, SessionPage, is_stale

__all__ = [
    "Changes",
    "DueRef",
    "Scope",
    "Selector",
    "Snapshot",
    "Storage",
    "Version",
    "check_uid",
]

#: Every unresolved instance: what the inspection API reads.
UNRESOLVED = Scope(unresolved=True)

#: An opaque version token (an int for most backends). ``None``: no session yet.
Version = int | str | bytes


@attrs.frozen
class Snapshot:
    """A state as loaded, with the version to compare against when saving it."""

    state: SessionState
    version: Version | None


@attrs.frozen
class DueRef:
    """One entry of a store's due index, as :meth:`Storage.due` lists it."""

    #: The session UID and the instance name.
    session: str
    instance: str
    kind: DueKind
    #: DISPATCH: when it was scheduled (plus an old retry's cooldown); LEASE: when its lease
    #: expires now (renewals included), or until when a sweeper claimed it.
    at: datetime
    #: LEASE: the owner token of the run the lease belongs to.
    owner: str | None = None
    #: LEASE: a sweeper claimed it (its run can no longer renew it).
    claimed: bool = False

    @property
    def due(self) -> Due:
        """The entry as the engine describes it."""
        return Due(self.kind, self.at, self.owner)


def check_uid(uid: object) -> str:
    """Session UIDs are non-empty strings of valid Unicode without NUL characters.

    Every backend must store what one accepts, and some keep the UID raw in a
    key or column (PostgreSQL text cannot hold NUL; lone surrogates are not
    valid UTF-8).
    """
    if not isinstance(uid, str) or not uid:
        raise ValueError(f"session uid must be a non-empty string, got {uid!r}")
    problem = name_problem(uid)
    if problem is not None:
        raise ValueError(f"session uid {uid!r} {problem}")
    return uid


class Storage(abc.ABC):
    """One session's state in some store. Subclasses implement the three primitives."""

    #: Short backend name used in error messages and the registry.
    backend_name: ClassVar[str] = "storage"
    #: For backends that can create their tables when opened from a URL: the URL
    #: query option that turns it on or off (a Celery worker sets it to ``false``:
    #: a message never causes schema creation). None: nothing to create.
    schema_url_option: ClassVar[str | None] = None
    #: Why :meth:`list_sessions` is not supported, for backends that do not override it.
    listing_unsupported_reason: ClassVar[str] = "it keeps no index of the sessions it stores"
    #: The largest encoded size (bytes of compact JSON) of one value the manager stores
    #: through this storage: trigger kwargs, a task's ``withParams``, a result, a metadata
    #: mapping (:mod:`triggers_core.engine.sizes`). Set it on an instance, or with the
    #: backend's URL option (``triggers_max_value_bytes`` for SQL, ``max_value_bytes``
    #: for memcached and Django caches).
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    #: The longest ``within`` or ``delay`` (seconds) this storage keeps a timer for, or
    #: None (no limit beyond the directives' own). A store whose documents expire (a
    #: Django cache with a finite ``timeout``) sets it, so that ``update_configuration``
    #: refuses a timer that would outlive the session it belongs to.
    max_timer_seconds: float | None = None

    def __init__(self, uid: str) -> None:
        self.uid = check_uid(uid)

    # -- primitives -------------------------------------------------------------------

    @abc.abstractmethod
    def load(self, scope: Scope | Selector = HEADER_ONLY) -> Snapshot:
        """The header plus (at least) the instances ``scope`` asks for, in one snapshot.

        A selector is called with the header-only state just read and returns the scope.
        """

    @abc.abstractmethod
    def load_full(self) -> Snapshot:
        """Everything, history included."""

    @abc.abstractmethod
    def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        """Store ``state`` if the stored version is ``expected``; return the new version.

        Writes the header, the configuration if ``changes.config``, and the
        instances in ``changes.instances``; an instance in ``changes.created``
        that already exists raises :class:`~triggers_core.errors.SerializationError`.
        """

    #: Threads with which :func:`~triggers_core.runtime.clock.tick_store` commits
    #: the due sessions of a tick at once (one session per thread). 1 for stores
    #: whose commits are computation in this process (a network round trip
    #: releases the interpreter to other threads; in-process work does not).
    tick_workers: ClassVar[int] = 1
    #: Due sessions :func:`~triggers_core.runtime.clock.tick_store` reads with one
    #: :meth:`load_sessions` call before it commits them (0: each commit loads its own
    #: session). For stores whose batch load saves round trips.
    tick_load_batch: ClassVar[int] = 0

    def load_sessions(self, wanted: Sequence[tuple[Storage, Scope | Selector]]) -> list[Snapshot]:
        """``storage.load(scope)`` of each pair, in order: several sessions of this store.

        Each storage is one of this store's sessions (from :meth:`session`), and
        each snapshot is of its own session alone (not one snapshot of them all),
        as its own :meth:`load` returns it, errors included. A storage that can
        read many sessions in fewer round trips overrides it; the default loads
        them one by one.
        """
        return [storage.load(scope) for storage, scope in wanted]

    @property
    def commit_lock(self) -> threading.Lock:
        """The lock the manager holds around one load-compute-compare-and-swap.

        Threads that share this storage object (a threading runner's tasks and
        the code that fires) then take turns instead of making each other's
        compare-and-swap fail and back off; other processes and other storage
        objects are kept out by the version check as always.
        """
        lock: threading.Lock | None = self.__dict__.get("_commit_lock")
        if lock is None:  # setdefault is atomic: concurrent first calls get one lock
            lock = self.__dict__.setdefault("_commit_lock", threading.Lock())
        return lock

    @classmethod
    def from_url(cls, url: str, uid: str) -> Storage:
        """Build from a storage URL (for :func:`~triggers_core.runtime.registry.open_storage`)."""
        raise NotImplementedError(f"{cls.__name__} cannot be opened from a URL")

    @classmethod
    def list_sessions(
        cls,
        url: str,
        filter: SessionFilter,
        *,
        page_size: int,
        cursor: str | None,
    ) -> SessionPage:
        """One page of the session UIDs stored at ``url`` (see :mod:`triggers_core.tools.listing`).

        Backends that can list their sessions override this; the default says
        the backend cannot, with
        :class:`~triggers_core.errors.UnsupportedOperationError`.
        """
        raise UnsupportedOperationError(
            "listing sessions", cls.backend_name, cls.listing_unsupported_reason
        )

    def list_store_sessions(
        self,
        filter: SessionFilter,
        *,
        page_size: int,
        cursor: str | None,
    ) -> SessionPage:
        """One page of the session UIDs of the store this storage is in (its own session or not).

        :meth:`list_sessions` for a storage already open (on the async face, the
        synchronous storage its greenlet runs): the same pages and cursors.
        ``filter.lost`` is not looked at here (:mod:`triggers_core.tools.listing`
        finds lost runs through the due index). The default raises
        :class:`~triggers_core.errors.UnsupportedOperationError`.
        """
        raise UnsupportedOperationError(
            "listing sessions", self.backend_name, self.listing_unsupported_reason
        )

    def reference(self) -> str | None:
        """A credential-free string naming this storage, if any (None: cannot be named).

        Senders put it into task messages when they know no configured name for
        the storage; a worker only uses it to look up a storage in its own
        configuration with the same reference. It must never hold a secret: pass
        it through :func:`triggers_core.runtime.redaction.redact`.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, most storages have nothing to close
        """Release connections (optional)."""

    def check_fire_keys(self) -> None:
        """Raise unless this storage keeps fire records (idempotency keys).

        The manager calls it before a keyed fire and before it runs an
        instance with ``guard_cascade`` (whose finish records its cascade; see
        :mod:`triggers_core.engine.idempotency`). The default raises
        :class:`~triggers_core.errors.UnsupportedOperationError` naming the
        storage: a storage that does not override it ignores
        ``scope.fire_keys`` and ``changes.fire_records``, so keyed fires are
        refused on it, and instances run on it as before (their cascade
        unguarded). Storages that keep records override it with a cheap check
        (e.g. that their table exists), raising
        :class:`~triggers_core.errors.SchemaMissingError` if it does not.
        """
        raise UnsupportedOperationError(
            "idempotent fires (fire(..., idempotency_key=...))",
            f"{self.backend_name}: {type(self).__qualname__}",
            "it does not keep fire records; its check_fire_keys() says so (see "
            "triggers_core.runtime.storage for what a storage that keeps them does)",
        )

    # -- leases and the due index ------------------------------------------------------

    def check_leases(self) -> None:
        """Raise unless this storage keeps leases and a due index.

        The default raises :class:`~triggers_core.errors.UnsupportedOperationError`:
        instances then run without a lease (as before leases existed), and
        nothing finds them if their worker dies but an operator
        (``get_stale_instances``). A storage that keeps them overrides this and
        the four methods below, and applies ``changes.due`` in
        :meth:`compare_and_swap`.
        """
        raise UnsupportedOperationError(
            "leases (recovering the instances of dead workers)",
            f"{self.backend_name}: {type(self).__qualname__}",
            "it keeps no lease records and no due index; its check_leases() says so",
        )

    def renew_lease(self, name: str, owner: str, expires: datetime) -> bool:
        """Move the lease of ``name`` to ``expires`` if run ``owner`` still holds it.

        False (and nothing changes) when the record is gone (the instance was
        resolved), belongs to another run, or was claimed by a sweeper. Writes
        only the lease record (and its place in the due index).
        """
        self.check_leases()
        return False

    def claim_lease(self, name: str, owner: str, seen: datetime, until: datetime) -> bool:
        """Take the expired lease of run ``owner`` from it, before taking its instance over.

        Succeeds only if the record is still the one the caller saw (``owner``,
        expiring at ``seen``): a renewal since then wins, and so does another
        sweeper. Then the record is *claimed* (no renewal succeeds any more)
        and due again at ``until``, so that if this sweeper dies before it
        commits the takeover, another one claims it again then.
        """
        self.check_leases()
        return False

    def forget_due(self, name: str, kind: DueKind, seen: datetime) -> bool:
        """Drop the due entry of ``name`` if it is still the one a sweeper saw (``kind``, ``seen``).

        For an entry the sweep found stale (its instance moved on without the
        entry being removed, e.g. written while the index was unavailable): a
        conditional delete, so an entry a commit has replaced since stays.
        Returns whether it dropped it. The default does nothing.
        """
        return False

    def get_lease(self, name: str) -> DueRef | None:
        """The lease record of ``name`` as it is now (renewals included), if it has one."""
        self.check_leases()
        return None

    def due_entries(self, kind: DueKind, before: datetime, *, limit: int) -> list[DueRef]:
        """Up to ``limit`` due-index entries of ``kind`` at or before ``before``, oldest first.

        Covers every session of the *store* this storage is in (not only its
        own session); costs what it returns (an index by time), however many
        sessions the store holds. The default raises
        :class:`~triggers_core.errors.UnsupportedOperationError`.
        """
        self.check_leases()
        return []

    def session(self, uid: str) -> Storage:
        """A storage for session ``uid`` in the same store (sharing its connections)."""
        raise UnsupportedOperationError(
            "opening another session of its store", self.backend_name, "it does not say how"
        )

    def store_identity(self) -> object | None:
        """A hashable value naming the store (equal for every session of it), or None.

        The in-process runner keeps one background sweeper per store and
        process, found by this value. It is a key, never shown: it may hold
        what a URL holds.
        """
        return None

    # -- inspection -------------------------------------------------------------------

    @property
    def tasks(self) -> Mapping[str, TaskConfig]:
        """Task name -> configuration."""
        return self.load().state.tasks

    @property
    def instances(self) -> Mapping[str, TaskInstance]:
        """Every instance, by name, in creation order per task."""
        state = self.load_full().state
        return dict(sorted(state.instances.items(), key=lambda kv: _sort_key(kv[1])))

    @property
    def latest_kwargs(self) -> Mapping[str, Mapping[str, Any]]:
        """Trigger name -> the kwargs it last fired with."""
        return self.load().state.latest_kwargs

    def get_instance(self, name: str) -> TaskInstance:
        """One instance; :class:`UnknownInstanceError` (a ``KeyError``) if missing."""
        found = self.load(Scope(names=frozenset((name,)))).state.instances.get(name)
        if found is None:
            raise UnknownInstanceError(name, self.uid)
        return found

    def __getitem__(self, name: str) -> TaskInstance:
        return self.get_instance(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name in self.load(Scope(names=frozenset((name,)))).state.instances

    def __iter__(self) -> Iterator[TaskInstance]:
        return iter(self.instances.values())

    def __len__(self) -> int:
        return len(self.load_full().state.instances)

    def instances_of_task(self, task: str | TaskConfig) -> list[TaskInstance]:
        """Every instance of one task, oldest first."""
        name = task.name if isinstance(task, TaskConfig) else task
        return [i for i in self.instances.values() if i.task_name == name]

    def get_unresolved_tasks(self) -> list[TaskConfig]:
        """Tasks with no instance yet, or with any unresolved instance."""
        state = self.load(UNRESOLVED).state
        open_tasks = {i.task_name for i in state.instances.values() if not i.is_resolved}
        return [
            task
            for name, task in sorted(state.tasks.items())
            if state.counters.get(name, 0) == 0 or name in open_tasks
        ]

    def get_unresolved_instances(self) -> list[TaskInstance]:
        """Instances that are not finished, skipped, replayed or abandoned."""
        state = self.load(UNRESOLVED).state
        found = [i for i in state.instances.values() if not i.is_resolved]
        return sorted(found, key=_sort_key)

    def get_instances_with_unresolved_logs(self) -> list[TaskInstance]:
        """Instances that logged at ERROR or above and were not marked resolved."""
        return [i for i in self.instances.values() if not i.logs_resolved]

    def get_stale_instances(
        self,
        older_than: timedelta,
        *,
        now: datetime,
        statuses: Collection[Status] = (Status.SCHEDULED, Status.RUNNING),
    ) -> list[TaskInstance]:
        """Instances stuck in ``statuses`` (scheduled/running) for longer than ``older_than``.

        A ``running`` instance that holds a lease is stuck when its lease
        expired (its worker died: it is *lost*; a sweeper takes such instances
        over), however long it has run; one started without a lease (before
        leases existed, or on a storage that keeps none) when it has been
        running for longer than ``older_than``, as is a ``scheduled`` one.
        """
        leases = self._keeps_leases()
        found = []
        for instance in self.get_unresolved_instances():
            if instance.status not in statuses:
                continue
            owner = lease_owner(instance) if leases else None
            if instance.status is Status.RUNNING and owner is not None:
                if self._lease_is_gone(instance, owner, now):
                    found.append(instance)
            elif is_stale(instance, older_than, now=now, statuses=statuses):
                found.append(instance)
        return found

    def get_lost_instances(self, *, now: datetime) -> list[TaskInstance]:
        """Instances ``running`` under a lease that expired at ``now`` (their worker died).

        A sweeper takes them over; until one does, they are *lost*. Empty on a
        storage that keeps no leases. Cost: the session's unresolved instances,
        and one lease read per ``running`` one.
        """
        if not self._keeps_leases():
            return []
        found = []
        for instance in self.get_unresolved_instances():
            owner = lease_owner(instance)
            running = instance.status is Status.RUNNING and owner is not None
            if running and owner is not None and self._lease_is_gone(instance, owner, now):
                found.append(instance)
        return found

    def _keeps_leases(self) -> bool:
        try:
            self.check_leases()
        except UnsupportedOperationError:
            return False
        return True

    def _lease_is_gone(self, instance: TaskInstance, owner: str, now: datetime) -> bool:
        """The run of ``instance`` (by ``owner``) no longer holds a live lease at ``now``."""
        lease = self.get_lease(instance.name)
        if lease is None:  # no record (yet): the lease as the run was started
            expires = parse_time(instance.metadata.get("leaseExpires"))
            return expires is None or expires <= now
        return lease.owner != owner or lease.claimed or lease.at <= now

    def debug_repr(self) -> dict[str, Any]:
        """A JSON-compatible dump of the whole session, for debugging and bug reports."""
        state = self.load_full().state
        return {
            "uid": self.uid,
            "backend": self.backend_name,
            "tasks": {name: task.to_json() for name, task in sorted(state.tasks.items())},
            "instances": {
                name: instance_to_json(inst) for name, inst in sorted(state.instances.items())
            },
            "latestKwargs": dict(state.latest_kwargs),
            "counters": dict(state.counters),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} uid={self.uid!r}>"


def _sort_key(instance: TaskInstance) -> tuple[str, int]:
    return (instance.task_name, instance.number)
