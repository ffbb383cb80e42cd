"""``transaction(connection)``: the Core block a transactional fire dispatches after,
for a sync connection or engine and for one of SQLAlchemy's asyncio extension
(docs/transactions.md)."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any, overload

from sqlalchemy.engine import Connection, Engine

from triggers_backends.sqlalchemy._transactional import SQLTransaction
from triggers_backends.sqlalchemy._transactional import transaction as sync_transaction

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from triggers_backends.sqlalchemy._async_transactional import AsyncSQLTransaction

__all__ = ["transaction"]


@overload
def transaction(
    connection: Connection | Engine,
) -> contextlib.AbstractContextManager[SQLTransaction]: ...


@overload
def transaction(
    connection: AsyncConnection | AsyncEngine,
) -> contextlib.AbstractAsyncContextManager[AsyncSQLTransaction]: ...


def transaction(connection: Any) -> Any:
    """Begin a transaction on ``connection``, commit it when the block ends, then dispatch.

    ``with transaction(connection_or_engine) as tx:`` for a sync one;
    ``async with transaction(async_connection_or_engine) as tx:`` for one of
    SQLAlchemy's asyncio extension (then pass ``tx`` as ``session=`` to an
    :class:`~triggers_core.AsyncTriggerManager`'s ``fire``; the dispatch is
    awaited after the commit).
    """
    extension = sys.modules.get("sqlalchemy.ext.asyncio")
    if extension is not None and isinstance(
        connection, (extension.AsyncConnection, extension.AsyncEngine)
    ):
        from triggers_backends.sqlalchemy._async_transactional import (  # noqa: PLC0415
            async_transaction,
        )

        return async_transaction(connection)
    return sync_transaction(connection)
