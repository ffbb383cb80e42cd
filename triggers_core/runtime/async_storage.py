"""The asynchronous storage port: :class:`~triggers_core.runtime.storage.Storage` as coroutines.

An :class:`AsyncStorage` keeps a session exactly as its synchronous
counterpart does (same contract, same stored format, same errors: see
:mod:`triggers_core.runtime.storage`); only the calls that reach a server are
coroutines, so an event loop is never blocked by them. The
:class:`~triggers_core.runtime.async_manager.AsyncTriggerManager` drives it
with the same shell core as the synchronous manager drives a
:class:`~triggers_core.runtime.storage.Storage`, so no decision is written
twice.

Async storages are opened from URLs through their own registry (entry point
group ``triggers.async_storages``, keyed by URL scheme): a scheme with no async
adapter is refused with an error naming why, never silently run on a thread.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import ClassVar, TypeVar

from triggers_core.engine.leases import DueKind
from triggers_core.engine.scopes import HEADER_ONLY, Changes, Scope, Selector
from triggers_core.engine.sizes import DEFAULT_MAX_VALUE_BYTES
from triggers_core.engine.state import SessionState
from triggers_core.errors import UnsupportedOperationError
from triggers_core.runtime.storage import DueRef, Snapshot, Storage, Version, check_uid

T = TypeVar("T")

__all__ = ["AsyncStorage", "NamedStorage"]


class AsyncStorage(abc.ABC):
    """One session's state in some store, reached with coroutines.

    Mirrors :class:`~triggers_core.runtime.storage.Storage` one to one: the same
    method names, arguments, results and errors, with every call that does I/O
    a coroutine. Subclasses implement :meth:`load`, :meth:`load_full` and
    :meth:`compare_and_swap`; the optional capabilities (fire records, leases
    and the due index) default to "not kept", as on the synchronous port.
    """

    #: Short backend name used in error messages and the registry.
    backend_name: ClassVar[str] = "storage"
    #: As ``Storage.max_value_bytes``.
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    #: As ``Storage.max_timer_seconds``.
    max_timer_seconds: float | None = None

    def __init__(self, uid: str) -> None:
        self.uid = check_uid(uid)

    # -- primitives -------------------------------------------------------------------

    @abc.abstractmethod
    async def load(self, scope: Scope | Selector = HEADER_ONLY) -> Snapshot:
        """The header plus (at least) the instances ``scope`` asks for, in one snapshot."""

    @abc.abstractmethod
    async def load_full(self) -> Snapshot:
        """Everything, history included."""

    @abc.abstractmethod
    async def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        """Store ``state`` if the stored version is ``expected``; return the new version."""

    @property
    def commit_lock(self) -> asyncio.Lock:
        """The lock the async manager holds around one load-compute-compare-and-swap.

        Coroutines sharing this storage object take turns instead of making each
        other's compare-and-swap fail; other processes and other storage objects are
        kept out by the version check as always. (An :class:`asyncio.Lock` binds to
        the loop that first waits on it: use a storage object in one event loop.)
        """
        lock: asyncio.Lock | None = self.__dict__.get("_commit_lock")
        if lock is None:
            lock = self.__dict__.setdefault("_commit_lock", asyncio.Lock())
        return lock

    @classmethod
    def from_url(cls, url: str, uid: str) -> AsyncStorage:
        """Build from a storage URL (for the async storage registry)."""
        raise NotImplementedError(f"{cls.__name__} cannot be opened from a URL")

    def reference(self) -> str | None:
        """A credential-free string naming this storage (see ``Storage.reference``)."""
        return None

    def sync_twin(self) -> Storage:
        """The synchronous storage of this session in the same store.

        What a synchronous runner is handed with the synchronous manager (the
        Celery runner publishes a message naming it; a worker rebuilds the
        manager on the storage its configuration has under that reference). The
        default is a :class:`NamedStorage`: it carries this storage's
        :meth:`reference` (and so names the store in a message) but refuses
        I/O, which is all a Celery runner that publishes needs. A storage with
        a real twin (memory) returns it. Without a reference, refused.
        """
        reference = self.reference()
        if reference is None:
            raise UnsupportedOperationError(
                "handing instances to a synchronous runner (Celery, threading)",
                f"{self.backend_name}: {type(self).__qualname__}",
                "it has no reference() naming its store for a worker; run its instances "
                "with the in-process 'asyncio' runner",
            )
        return NamedStorage(self.uid, self.backend_name, reference)

    async def run_with_sync(self, doing: str, fn: Callable[[Storage], T]) -> T:
        """``fn(storage)`` with this session's synchronous storage, without blocking the loop.

        For the store-wide tools that have one implementation over the
        synchronous storage API (listing sessions: ``alist_sessions`` in
        :mod:`triggers_core.tools.listing`). Memory calls ``fn`` at once (nothing
        in it waits); SQL runs it in a greenlet over this storage's async engine,
        so each query it makes is awaited on the loop, within the URL's bounds.
        ``doing`` names the work in errors. The default raises
        :class:`~triggers_core.errors.UnsupportedOperationError`.
        """
        raise UnsupportedOperationError(
            doing,
            f"{self.backend_name}: {type(self).__qualname__}",
            "it has no synchronous storage to run it with",
        )

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections (optional)."""

    async def check_fire_keys(self) -> None:
        """Raise unless this storage keeps fire records (see ``Storage.check_fire_keys``)."""
        raise UnsupportedOperationError(
            "idempotent fires (fire(..., idempotency_key=...))",
            f"{self.backend_name}: {type(self).__qualname__}",
            "it does not keep fire records; its check_fire_keys() says so",
        )

    # -- leases and the due index ------------------------------------------------------

    async def check_leases(self) -> None:
        """Raise unless this storage keeps leases and a due index (see ``Storage.check_leases``)."""
        raise UnsupportedOperationError(
            "leases (recovering the instances of dead workers)",
            f"{self.backend_name}: {type(self).__qualname__}",
            "it keeps no lease records and no due index; its check_leases() says so",
        )

    async def renew_lease(self, name: str, owner: str, expires: datetime) -> bool:
        """See ``Storage.renew_lease``."""
        await self.check_leases()
        return False

    async def claim_lease(self, name: str, owner: str, seen: datetime, until: datetime) -> bool:
        """See ``Storage.claim_lease``."""
        await self.check_leases()
        return False

    async def forget_due(self, name: str, kind: DueKind, seen: datetime) -> bool:
        """See ``Storage.forget_due``."""
        return False

    async def get_lease(self, name: str) -> DueRef | None:
        """See ``Storage.get_lease``."""
        await self.check_leases()
        return None

    async def due_entries(self, kind: DueKind, before: datetime, *, limit: int) -> list[DueRef]:
        """See ``Storage.due_entries``."""
        await self.check_leases()
        return []

    def session(self, uid: str) -> AsyncStorage:
        """A storage for session ``uid`` in the same store (sharing its connections)."""
        raise UnsupportedOperationError(
            "opening another session of its store", self.backend_name, "it does not say how"
        )

    def store_identity(self) -> object | None:
        """A hashable value naming the store (see ``Storage.store_identity``)."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.uid!r}>"


class NamedStorage(Storage):
    """A synchronous storage that only names a store (for a task message); no I/O.

    :meth:`AsyncStorage.sync_twin`'s default: a Celery runner reads its
    ``backend_name``, ``uid`` and :meth:`reference`; anything that would read or
    write the session raises :class:`UnsupportedOperationError` saying so
    (an eager Celery app or the threading runner need a real synchronous storage).
    """

    def __init__(self, uid: str, backend_name: str, reference: str) -> None:
        super().__init__(uid)
        self.backend_name = backend_name  # type: ignore[misc]
        self._reference = reference

    def reference(self) -> str | None:
        return self._reference

    def _refuse(self) -> UnsupportedOperationError:
        return UnsupportedOperationError(
            "reading or writing a session synchronously",
            f"{self.backend_name}: the name of an async storage's store",
            "an async manager hands it to synchronous runners only to name the store in a "
            "message; run the instance on a worker (or with the 'asyncio' runner)",
        )

    def load(self, scope: Scope | Selector = HEADER_ONLY) -> Snapshot:
        raise self._refuse()

    def load_full(self) -> Snapshot:
        raise self._refuse()

    def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        raise self._refuse()
