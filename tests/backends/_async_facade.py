"""An async storage seen through the sync ``Storage`` port, so the sync contract suites
(storage, fire records, leases, timers) run unchanged against it.

Every coroutine runs on one event loop in a thread of its own (:class:`LoopThread`);
threads that call a :class:`SyncFacade` at once make coroutines that run at once on
that loop, so the suites' thread races become races of coroutines.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from datetime import datetime
from typing import Any, TypeVar

from triggers_core.engine.leases import DueKind
from triggers_core.engine.scopes import HEADER_ONLY, Changes, Scope, Selector
from triggers_core.engine.state import SessionState
from triggers_core.runtime.async_storage import AsyncStorage
from triggers_core.runtime.storage import DueRef, Snapshot, Storage, Version

T = TypeVar("T")

#: Far above every bound of the storage; only keeps a hang from hanging the suite.
CALL_BOUND = 120.0


class LoopThread:
    """An event loop running in a daemon thread until :meth:`stop`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="async-facade-loop", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_BOUND)

    def stop(self) -> None:
        """Finish the loop as ``asyncio.run`` does (async generators closed), then close it."""
        self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(CALL_BOUND)
        self.loop.close()


class SyncFacade(Storage):
    """``inner`` (an :class:`AsyncStorage`) behind the sync port, on ``loop``."""

    def __init__(self, inner: AsyncStorage, loop: LoopThread) -> None:
        super().__init__(inner.uid)
        self.inner = inner
        self.loop = loop
        self.backend_name = inner.backend_name  # type: ignore[misc]

    @property  # type: ignore[override]
    def max_value_bytes(self) -> int:
        return self.inner.max_value_bytes

    @max_value_bytes.setter
    def max_value_bytes(self, value: int) -> None:
        self.inner.max_value_bytes = value

    def load(self, scope: Scope | Selector = HEADER_ONLY) -> Snapshot:
        return self.loop.run(self.inner.load(scope))

    def load_full(self) -> Snapshot:
        return self.loop.run(self.inner.load_full())

    def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        return self.loop.run(self.inner.compare_and_swap(expected, state, changes))

    def check_fire_keys(self) -> None:
        self.loop.run(self.inner.check_fire_keys())

    def check_leases(self) -> None:
        self.loop.run(self.inner.check_leases())

    def renew_lease(self, name: str, owner: str, expires: datetime) -> bool:
        return self.loop.run(self.inner.renew_lease(name, owner, expires))

    def claim_lease(self, name: str, owner: str, seen: datetime, until: datetime) -> bool:
        return self.loop.run(self.inner.claim_lease(name, owner, seen, until))

    def forget_due(self, name: str, kind: DueKind, seen: datetime) -> bool:
        return self.loop.run(self.inner.forget_due(name, kind, seen))

    def get_lease(self, name: str) -> DueRef | None:
        return self.loop.run(self.inner.get_lease(name))

    def due_entries(self, kind: DueKind, before: datetime, *, limit: int) -> list[DueRef]:
        return self.loop.run(self.inner.due_entries(kind, before, limit=limit))

    def session(self, uid: str) -> SyncFacade:
        return SyncFacade(self.inner.session(uid), self.loop)

    def store_identity(self) -> object | None:
        return self.inner.store_identity()

    def reference(self) -> str | None:
        return self.inner.reference()

    def close(self) -> None:
        self.loop.run(self.inner.aclose())
