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
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Collection, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar

import attrs

from triggers_core.engine.config import TaskConfig
from triggers_core.engine.names import name_problem
from triggers_core.engine.scopes import HEADER_ONLY, Changes, Scope, Selector
from triggers_core.engine.serialization import instance_to_json
from triggers_core.engine.sizes import DEFAULT_MAX_VALUE_BYTES
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.errors import UnknownInstanceError, UnsupportedOperationError
from triggers_core.runtime.sessions import SessionFilter, SessionPage, is_stale

__all__ = ["Changes", "Scope", "Selector", "Snapshot", "Storage", "Version", "check_uid"]

#: Every unresolved instance: what the inspection API reads.
UNRESOLVED = Scope(unresolved=True)

#: An opaque version token (an int for most backends). ``None``: no session yet.
Version = int | str | bytes


@attrs.frozen
class Snapshot:
    """A state as loaded, with the version to compare against when saving it."""

    state: SessionState
    version: Version | None


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

        A worker killed mid-task leaves its instance ``running``; operators
        find such instances here and fail or replay them.
        """
        return [
            instance
            for instance in self.get_unresolved_instances()
            if is_stale(instance, older_than, now=now, statuses=statuses)
        ]

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
