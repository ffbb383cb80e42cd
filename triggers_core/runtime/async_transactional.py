"""``await manager.fire(..., session=s)`` on the async manager: the transactional fire for asyncio.

The async face of :mod:`triggers_core.runtime.transactional`, with the same
shell steps (:func:`~triggers_core.runtime.transactional.written_steps`, then
:func:`~triggers_core.runtime.transactional.settle_steps` once the caller's
transaction commits), awaited instead of blocking. The storage's
``bind_transaction`` coroutine (the async SQL storage has one:
:mod:`triggers_backends.sqlalchemy._async_transactional`) takes the caller's
transaction (an ``AsyncSession``, or what ``async with transaction(conn)``
yields) and returns an :class:`AsyncCallerTransaction`. See docs/transactions.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from triggers_core.runtime.firing import FireResult
from triggers_core.runtime.transactional import (
    Written,
    log_settle_error,
    refused,
    settle_steps,
    written_steps,
)

__all__ = ["AsyncCallerTransaction", "AsyncTransactionBinder", "fire_transactional_async"]


@runtime_checkable
class AsyncCallerTransaction(Protocol):
    """A caller's open transaction, as an async storage's ``bind_transaction`` returns it."""

    @property
    def storage(self) -> Any:
        """The session's storage (coroutines), inside the caller's transaction."""

    @property
    def max_attempts(self) -> int | None:
        """Compare-and-swap attempts the transaction allows (None: the manager's)."""

    async def end_attempt(self) -> None:
        """End an attempt the commit loop left open; put the caller's settings back."""

    def after_commit(self, action: Callable[[], Awaitable[None]]) -> None:
        """Await ``action()`` once the caller's transaction commits; drop it on a rollback."""


@runtime_checkable
class AsyncTransactionBinder(Protocol):
    """An async storage that can write inside a caller's transaction."""

    async def bind_transaction(self, session: object) -> AsyncCallerTransaction:
        """``session`` bound to this storage's session (ValueError: another database)."""


async def fire_transactional_async(
    manager: Any,
    trigger_name: str,
    trigger_kwargs: Mapping[str, Any] | None,
    *,
    idempotency_key: str | None,
    strict: bool,
    session: object,
) -> FireResult:
    """``await async_manager.fire_result(..., session=...)`` (see the module)."""
    storage = manager.storage
    if not isinstance(storage, AsyncTransactionBinder):
        raise refused(storage.backend_name)
    caller = await storage.bind_transaction(session)
    try:
        steps = written_steps(
            manager,
            caller.storage,
            trigger_name,
            trigger_kwargs,
            idempotency_key=idempotency_key,
            strict=strict,
            max_attempts=caller.max_attempts or manager.max_attempts,
        )
        result, written = await manager._drive(steps, caller.storage)
    finally:
        await caller.end_attempt()

    async def settle() -> None:
        await _settle(manager, written)

    caller.after_commit(settle)
    found: FireResult = result
    return found


async def _settle(manager: Any, written: Written) -> None:
    """After the caller's commit: count, log, run the hooks, dispatch (errors logged)."""
    try:
        await manager._drive(settle_steps(manager, written))
    except Exception as exc:
        log_settle_error(manager.uid, exc)
