"""Fires that commit with the caller's transaction, and fires deferred to Django's commit.

``manager.fire(trigger, kwargs, session=s)`` (see docs/transactions.md) writes
the session's state *inside* the caller's open transaction ``s``, through the
storage's :meth:`bind_transaction` (the SQL storage has one:
:mod:`triggers_backends.sqlalchemy._transactional`). That method returns a
:class:`CallerTransaction`: a storage that reads and writes through the
caller's connection, each compare-and-swap attempt in a savepoint (so a
conflict is retried without aborting the caller's transaction), and a hook
that runs an action once the caller's transaction has committed, never if it
rolls back. The fire runs the usual commit loop on that storage; the hooks
and the dispatch of what it scheduled are that action. If the process dies
between the commit and the dispatch, the instances are ``scheduled`` with a
due ``dispatch`` entry written in the same transaction, so the recovery
sweep dispatches them (:mod:`triggers_core.runtime.recovery`).

``manager.fire(..., on_commit=True)`` only defers the whole fire to
``django.db.transaction.on_commit`` of the current ``atomic`` block: it is
not atomic with the data (the fire is a second commit, after the block's).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from triggers_core import engine
from triggers_core.engine.idempotency import fire_key
from triggers_core.engine.scopes import Scope, fire_scope
from triggers_core.engine.sizes import bounded_mapping
from triggers_core.engine.state import SessionState
from triggers_core.engine.transition import Transition
from triggers_core.errors import UnsupportedOperationError
from triggers_core.runtime.commit import CommitPolicy, commit
from triggers_core.runtime.firing import FireResult, check_known
from triggers_core.runtime.lifecycle import LIFECYCLE_LOGGER
from triggers_core.runtime.storage import Storage

__all__ = ["CallerTransaction", "TransactionBinder", "fire_transactional"]

log = logging.getLogger(LIFECYCLE_LOGGER)


class _Manager(Protocol):
    """What a transactional fire uses of :class:`~triggers_core.TriggerManager`."""

    storage: Storage
    max_attempts: int
    backoff_base: float
    backoff_cap: float
    _sweeper_pending: bool

    @property
    def uid(self) -> str: ...

    def now(self) -> datetime: ...

    def fire_result(
        self,
        trigger_name: str,
        trigger_kwargs: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        strict: bool = False,
    ) -> FireResult: ...

    def _start_sweeper(self) -> None: ...

    def _perform(self, transition: Transition) -> None: ...


@runtime_checkable
class CallerTransaction(Protocol):
    """A caller's open transaction, as a storage's ``bind_transaction`` returns it."""

    @property
    def storage(self) -> Storage:
        """The session's storage, reading and writing inside the caller's transaction."""

    @property
    def max_attempts(self) -> int | None:
        """Compare-and-swap attempts the transaction allows (None: the manager's).

        1 when a conflict cannot be retried inside it (its isolation level
        keeps one snapshot for the whole transaction).
        """

    def end_attempt(self) -> None:
        """End an attempt the commit loop left open (it computed, wrote nothing)."""

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the caller's transaction commits; drop it if it rolls back."""


@runtime_checkable
class TransactionBinder(Protocol):
    """A storage that can write inside a caller's transaction."""

    def bind_transaction(self, session: object) -> CallerTransaction:
        """``session`` (the caller's transaction) bound to this storage's session.

        Raises :class:`ValueError` naming the problem when ``session`` is on
        another database than this storage, or is no transaction it knows.
        """


def fire_transactional(
    manager: _Manager,
    trigger_name: str,
    trigger_kwargs: Mapping[str, Any] | None,
    *,
    idempotency_key: str | None,
    strict: bool,
    session: object,
    on_commit: bool | str,
) -> FireResult:
    """``manager.fire_result(..., session=...)`` or ``(..., on_commit=...)`` (see the module)."""
    if session is not None and on_commit:
        raise ValueError(
            "pass session= (the fire commits with that transaction) or on_commit= (the fire "
            "runs after the Django atomic block commits), not both"
        )
    if on_commit:
        return _on_django_commit(
            manager,
            trigger_name,
            trigger_kwargs,
            idempotency_key=idempotency_key,
            strict=strict,
            on_commit=on_commit,
        )
    storage = manager.storage
    if not isinstance(storage, TransactionBinder):
        raise UnsupportedOperationError(
            "a fire inside the caller's transaction (session=)",
            storage.backend_name,
            "it is no SQL database the caller's transaction could write to; use a SQL "
            "storage (triggers_backends.sqlalchemy) on the application's database",
        )
    # Checked once, before any I/O (as a plain fire does).
    name = engine.check_trigger_name(trigger_name)
    kwargs = bounded_mapping(trigger_kwargs, "trigger_kwargs", storage.max_value_bytes)
    key = None if idempotency_key is None else fire_key(name, idempotency_key)
    if key is not None:
        storage.check_fire_keys()
    caller = storage.bind_transaction(session)

    def compute(state: SessionState) -> Transition:
        if strict:
            check_known(state.tasks, name, manager.uid, strict=True)
        return engine.fire_checked(state, name, kwargs, now=manager.now(), key=key)

    policy = CommitPolicy(
        caller.max_attempts or manager.max_attempts, manager.backoff_base, manager.backoff_cap
    )
    try:
        transition = commit(caller.storage, compute, fire_scope(name, key), policy)
        if not strict:
            check_known(transition.state.tasks, name, manager.uid, strict=False)
        duplicate = None if transition.commit else transition.duplicate
        if duplicate is not None:
            names = duplicate.scheduled
            found = (
                caller.storage.load(Scope(names=frozenset(names))).state.instances if names else {}
            )
            return FireResult([found[n] for n in names if n in found], duplicate=True)
    finally:
        caller.end_attempt()
    caller.after_commit(lambda: _perform(manager, transition))
    return FireResult([transition.state.instances[n] for n in transition.scheduled])


def _perform(manager: _Manager, transition: Transition) -> None:
    """After the caller's commit: log, run the hooks, dispatch (errors logged: it committed)."""
    try:
        if manager._sweeper_pending:
            manager._start_sweeper()  # the safety net for this process's own dispatches
        manager._perform(transition)
    except Exception as exc:
        log.error(
            "session %r: after the caller's transaction committed, its hooks or dispatch "
            "failed (the fire is stored; instances not dispatched are failed, or left to "
            "the recovery sweep): %s",
            manager.uid,
            exc,
            exc_info=exc,
            extra={"session": manager.uid},
        )


def _on_django_commit(
    manager: _Manager,
    trigger_name: str,
    trigger_kwargs: Mapping[str, Any] | None,
    *,
    idempotency_key: str | None,
    strict: bool,
    on_commit: bool | str,
) -> FireResult:
    """Fire once Django's current atomic block commits (at once outside one)."""
    try:
        transaction: Any = importlib.import_module("django.db.transaction")
    except ModuleNotFoundError as exc:
        raise ValueError(
            "on_commit= defers the fire to Django's transaction.on_commit, but Django is not "
            "installed"
        ) from exc
    using = on_commit if isinstance(on_commit, str) else None
    if not transaction.get_connection(using).in_atomic_block:
        # Autocommit: Django would run it now anyway; errors reach the caller.
        return manager.fire_result(
            trigger_name, trigger_kwargs, idempotency_key=idempotency_key, strict=strict
        )
    kwargs = dict(trigger_kwargs or {})  # the caller may change its mapping before the commit

    def fire() -> None:
        manager.fire_result(trigger_name, kwargs, idempotency_key=idempotency_key, strict=strict)

    # robust: an error of the fire is logged by Django and does not stop the other callbacks.
    transaction.on_commit(fire, using=using, robust=True)
    return FireResult([])  # nothing is scheduled before the block commits
