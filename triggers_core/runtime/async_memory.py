"""In-process storage behind the asynchronous port: the memory store, reached with coroutines.

:class:`AsyncMemoryStorage` wraps a
:class:`~triggers_core.runtime.memory.MemoryStorage` (kept as :attr:`sync`)
and shares its store: ``memory://name`` opened by the asynchronous manager and
by the synchronous one in one process are the same sessions. Nothing here
waits on I/O (a call holds the store's lock for the time of a dict update), so
the coroutines call the synchronous storage directly, never through a thread.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from triggers_core.engine.leases import DueKind
from triggers_core.engine.scopes import HEADER_ONLY, Changes, Scope, Selector
from triggers_core.engine.state import SessionState
from triggers_core.runtime.async_storage import AsyncStorage
from triggers_core.runtime.memory import MemoryStorage, MemoryStore
from triggers_core.runtime.storage import DueRef, Snapshot, Storage, Version

T = TypeVar("T")

__all__ = ["AsyncMemoryStorage"]


class AsyncMemoryStorage(AsyncStorage):
    """One session in a :class:`MemoryStore`, as coroutines (see the module)."""

    backend_name = "memory"

    def __init__(
        self,
        uid: str,
        store: MemoryStore | None = None,
        *,
        store_name: str = "",
        sync: MemoryStorage | None = None,
    ) -> None:
        super().__init__(uid)
        #: The synchronous storage of the same session in the same store.
        self.sync = sync if sync is not None else MemoryStorage(uid, store, store_name=store_name)
        self.max_value_bytes = self.sync.max_value_bytes
        self.max_timer_seconds = self.sync.max_timer_seconds

    @property
    def store(self) -> MemoryStore:
        """The store holding the session (shared with :attr:`sync`)."""
        return self.sync.store

    @classmethod
    def from_url(cls, url: str, uid: str) -> AsyncMemoryStorage:
        """``memory://`` or ``memory://name``: the same stores as ``MemoryStorage.from_url``."""
        return cls(uid, sync=MemoryStorage.from_url(url, uid))

    async def load(self, scope: Scope | Selector = HEADER_ONLY) -> Snapshot:
        return self.sync.load(scope)

    async def load_full(self) -> Snapshot:
        return self.sync.load_full()

    async def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        return self.sync.compare_and_swap(expected, state, changes)

    def reference(self) -> str | None:
        return self.sync.reference()

    def sync_twin(self) -> Storage:
        """The synchronous storage of this session: :attr:`sync` (the same store)."""
        return self.sync

    async def check_fire_keys(self) -> None:
        self.sync.check_fire_keys()

    async def check_leases(self) -> None:
        self.sync.check_leases()

    async def renew_lease(self, name: str, owner: str, expires: datetime) -> bool:
        return self.sync.renew_lease(name, owner, expires)

    async def claim_lease(self, name: str, owner: str, seen: datetime, until: datetime) -> bool:
        return self.sync.claim_lease(name, owner, seen, until)

    async def forget_due(self, name: str, kind: DueKind, seen: datetime) -> bool:
        return self.sync.forget_due(name, kind, seen)

    async def get_lease(self, name: str) -> DueRef | None:
        return self.sync.get_lease(name)

    async def due_entries(self, kind: DueKind, before: datetime, *, limit: int) -> list[DueRef]:
        return self.sync.due_entries(kind, before, limit=limit)

    async def run_with_sync(self, doing: str, fn: Callable[[Storage], T]) -> T:
        """``fn`` with the synchronous memory storage (nothing in it waits)."""
        return fn(self.sync)

    def session(self, uid: str) -> AsyncMemoryStorage:
        return AsyncMemoryStorage(uid, sync=self.sync.session(uid))

    def store_identity(self) -> object | None:
        return self.sync.store_identity()
