"""Writing a session inside the caller's own *async* transaction (docs/transactions.md).

The asyncio face of :mod:`triggers_backends.sqlalchemy._transactional`, with
its code: :meth:`AsyncSQLAlchemyStorage.bind_transaction
<triggers_backends.sqlalchemy.asyncio.AsyncSQLAlchemyStorage.bind_transaction>`
binds the sync storage (:func:`~triggers_backends.sqlalchemy._transactional.bind`)
to the sync face of the caller's transaction, in a greenlet:

* an :class:`~sqlalchemy.ext.asyncio.AsyncSession` (or an
  ``async_scoped_session``'s current one): its ``sync_session``.
  Its ``after_commit`` event fires inside the greenlet of ``await
  session.commit()``, which awaits the dispatch there: it is done when the
  commit returns, as with a sync session. A rollback drops it.
* what ``async with transaction(async_connection_or_engine)`` yields
  (:class:`AsyncSQLTransaction`): the dispatch is awaited after the block's
  commit, never if the block raises.

Each load and compare-and-swap of the bound storage (a SAVEPOINT per attempt,
READ COMMITTED needed for retries, the lock timeout set on the caller's
connection for the fire) runs in its own greenlet on the caller's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_scoped_session,
)
from sqlalchemy.util import greenlet_spawn

from triggers_backends.sqlalchemy._transactional import SQLTransaction, bind
from triggers_core.engine.scopes import HEADER_ONLY, Changes, Scope, Selector
from triggers_core.engine.state import SessionState
from triggers_core.runtime.storage import Snapshot, Version

__all__ = ["AsyncSQLTransaction", "async_bind", "async_transaction"]


class AsyncSQLTransaction:
    """A Core :class:`~sqlalchemy.ext.asyncio.AsyncConnection`'s transaction, opened by
    ``async with transaction(connection)``: pass it as ``session=``."""

    def __init__(self, connection: AsyncConnection) -> None:
        #: The connection whose transaction this is (run your statements on it).
        self.connection = connection
        sync = connection.sync_connection
        if sync is None:
            raise ValueError("the AsyncConnection is not connected: use it in `async with`")
        self._sync = SQLTransaction(sync)


@contextlib.asynccontextmanager
async def async_transaction(
    connection: AsyncConnection | AsyncEngine,
) -> AsyncIterator[AsyncSQLTransaction]:
    """Begin a transaction on ``connection``, commit it when the block ends, then dispatch
    (see :func:`triggers_backends.sqlalchemy.transaction`, which returns this for an
    async connection or engine)."""
    if isinstance(connection, AsyncEngine):
        async with connection.connect() as opened, async_transaction(opened) as tx:
            yield tx
        return
    if connection.in_transaction():
        raise ValueError(
            "the connection is already in a transaction: transaction(connection) begins and "
            "commits it itself (so that the fires are dispatched after its commit); use it "
            "instead of connection.begin(), before any statement on the connection"
        )
    tx = AsyncSQLTransaction(connection)
    async with connection.begin():
        yield tx
    actions, tx._sync._actions = tx._sync._actions, []
    for action in actions:
        await greenlet_spawn(action)  # each awaits its dispatch (see _Caller.after_commit)


class _Bound:
    """The bound sync storage, each call in a greenlet on the caller's connection."""

    def __init__(self, bound: Any) -> None:
        self._bound = bound
        self.uid = bound.uid
        self.backend_name = bound.backend_name
        self.max_value_bytes = bound.max_value_bytes
        self.max_timer_seconds = bound.max_timer_seconds
        self.commit_lock = asyncio.Lock()

    async def load(self, scope: Scope | Selector = HEADER_ONLY) -> Snapshot:
        found: Snapshot = await greenlet_spawn(self._bound.load, scope)
        return found

    async def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        version: Version = await greenlet_spawn(
            self._bound.compare_and_swap, expected, state, changes
        )
        return version

    async def check_fire_keys(self) -> None:
        await greenlet_spawn(self._bound.check_fire_keys)


class _Caller:
    """The :class:`~triggers_core.runtime.async_transactional.AsyncCallerTransaction`."""

    def __init__(self, caller: Any) -> None:
        self._caller = caller
        self.storage = _Bound(caller.storage)
        self.max_attempts: int | None = caller.max_attempts

    async def end_attempt(self) -> None:
        await greenlet_spawn(self._caller.end_attempt)

    def after_commit(self, action: Callable[[], Awaitable[None]]) -> None:
        # Runs in the greenlet of the commit (AsyncSession.commit, or the one
        # async_transaction spawns): await_ hands the coroutine to the loop.
        self._caller.after_commit(lambda: _await(action()))


def _await(awaitable: Awaitable[None]) -> None:
    util: Any = sys.modules["sqlalchemy.util"]
    wait = getattr(util, "await_", None) or util.await_only
    wait(awaitable)


async def async_bind(storage: Any, session: object) -> _Caller:
    """``session`` (an AsyncSession or an :class:`AsyncSQLTransaction`) bound to the sync
    storage ``storage`` (the async storage's, on its engine's sync face)."""
    target: object
    if isinstance(session, async_scoped_session):
        session = session()  # the current scope's session
    if isinstance(session, AsyncSession):
        target = session.sync_session
    elif isinstance(session, AsyncSQLTransaction):
        if not session.connection.in_transaction():
            raise ValueError("the transaction(connection) block this came from has ended")
        target = session._sync
    elif isinstance(session, AsyncConnection):
        raise ValueError(
            "an AsyncConnection has no after-commit hook to dispatch the fire's instances "
            "from: use `async with triggers_backends.sqlalchemy.transaction(connection) as "
            "tx` and pass tx as session= (docs/transactions.md)"
        )
    else:
        raise TypeError(
            "session= of an async manager takes a SQLAlchemy AsyncSession or what "
            "`async with triggers_backends.sqlalchemy.transaction(async_connection)` "
            f"yields, got {type(session).__name__}"
        )
    return _Caller(await greenlet_spawn(bind, storage, target))
