"""Fires that commit with the caller's transaction, and fires deferred to Django's commit.

``manager.fire(trigger, kwargs, session=s)`` (see docs/transactions.md) writes
the session's state *inside* the caller's open transaction ``s``, through the
storage's :meth:`bind_transaction` (the SQL storage has one:
:mod:`triggers_backends.sqlalchemy._transactional`). That method returns a
:class:`CallerTransaction`: a storage that reads and writes through the
caller's connection, each compare-and-swap attempt in a savepoint (so a
conflict is retried without aborting the caller's transaction), and a hook
that runs an action once the caller's transaction has committed, never if it
rolls back. The fire is the shell core's (:func:`written_steps`: the checks
and the commit loop of :func:`~triggers_core.runtime.shell.fire_steps`,
driven on that storage, nothing decided here); the hooks and the dispatch of
what it scheduled (:func:`settle_steps`, the shell's ``perform``) are that
action. Observers see the fire's span and its storage round trips as they
happen; what metrics count (the fire's commit, its duration) is held back
until the caller's transaction commits, and the dispatch spans after the
commit are in the fire's trace. The async manager drives the same steps
(:mod:`triggers_core.runtime.async_transactional`). If the process dies
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
from typing import Any, Protocol, cast, runtime_checkable

import attrs

from triggers_core.engine.state import SessionState
from triggers_core.engine.transition import Transition
from triggers_core.errors import UnsupportedOperationError
from triggers_core.runtime import shell
from triggers_core.runtime.commit import drive
from triggers_core.runtime.firing import FireResult
from triggers_core.runtime.lifecycle import LIFECYCLE_LOGGER
from triggers_core.runtime.observe import Observer, current
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
        raise refused(storage.backend_name)
    caller = storage.bind_transaction(session)
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
        result, written = drive(caller.storage, steps)
    finally:
        caller.end_attempt()
    caller.after_commit(lambda: _settle(manager, written))
    return result


def refused(backend_name: str) -> UnsupportedOperationError:
    """The error of ``session=`` on a storage that cannot write in a caller's transaction."""
    return UnsupportedOperationError(
        "a fire inside the caller's transaction (session=)",
        backend_name,
        "it is no SQL database the caller's transaction could write to; use a SQL "
        "storage (triggers_backends.sqlalchemy) on the application's database",
    )


class _InTransaction:
    """The manager as the shell sees it inside the caller's transaction: its storage is
    the bound one, its attempts the transaction's (1 where a conflict cannot be retried)."""

    def __init__(self, manager: Any, storage: Any, max_attempts: int) -> None:
        self.storage = storage
        self.uid = manager.uid
        self.now = manager.now
        self.max_attempts = max_attempts
        self.backoff_base = manager.backoff_base
        self.backoff_cap = manager.backoff_cap


class _Held(Observer):
    """The observer of a fire written into a caller's transaction: its storage round
    trips and conflicts are seen as they happen, its commit (what metrics count) is held
    back until the caller's transaction commits."""

    def __init__(self, inner: Observer) -> None:
        self.inner = inner
        self.watches_storage = inner.watches_storage
        self.calls: list[tuple[Any, SessionState, Transition]] = []

    def load_begin(self, storage: Any, attempt: int) -> Any:
        return self.inner.load_begin(storage, attempt)

    def load_end(self, token: Any, error: BaseException | None) -> None:
        self.inner.load_end(token, error)

    def store_begin(self, storage: Any, attempt: int) -> Any:
        return self.inner.store_begin(storage, attempt)

    def store_end(self, token: Any, error: BaseException | None) -> None:
        self.inner.store_end(token, error)

    def conflict(self, storage: Any, attempt: int) -> None:
        self.inner.conflict(storage, attempt)

    def committed(self, storage: Any, before: SessionState, transition: Transition) -> None:
        self.calls.append((storage, before, transition))


@attrs.frozen
class Written:
    """A fire written into the caller's transaction, waiting for its commit."""

    transition: Transition
    #: The observer of the fire (None: nothing watches), its held commits, its
    #: :meth:`~Observer.fire_written` value and the trace context of its span.
    observer: Observer | None
    held: _Held | None
    pending: Any
    carrier: dict[str, str]


def written_steps(
    manager: Any,
    storage: Any,
    trigger_name: str,
    trigger_kwargs: Mapping[str, Any] | None,
    *,
    idempotency_key: str | None,
    strict: bool,
    max_attempts: int,
) -> shell.Steps[tuple[FireResult, Written]]:
    """The shell's fire on ``storage`` (bound to the caller's transaction), up to its
    write: the checks and the commit loop of :func:`~triggers_core.runtime.shell.fire_steps`,
    its ``triggers.fire`` span, no hook and no dispatch (:func:`settle_steps` runs them
    once the caller's transaction has committed)."""
    watcher = current()
    held = None if watcher is None else _Held(watcher)
    token = None if watcher is None else watcher.fire_begin(storage, trigger_name)
    carrier: dict[str, str] = {}
    try:
        host: Any = _InTransaction(manager, storage, max_attempts)
        transition = yield from shell.fire_commit_steps(
            host, trigger_name, trigger_kwargs, idempotency_key, strict, observer=held
        )
        result = yield from shell.fire_result_steps(transition)
        if watcher is not None:
            watcher.inject(carrier)  # the dispatch spans after the commit are the fire's
    except GeneratorExit:
        raise
    except BaseException as exc:
        if watcher is not None:
            watcher.fire_end(token, 0, False, exc)
        raise
    pending = None
    if watcher is not None:
        pending = watcher.fire_written(token, len(result.scheduled), result.duplicate, None)
    return result, Written(transition, watcher, held, pending, carrier)


def settle_steps(manager: Any, written: Written) -> shell.Steps[None]:
    """After the caller's commit: the observer counts the fire, then the shell performs
    it (log, hooks, dispatch) in its trace context."""
    watcher = written.observer
    attached = None
    if watcher is not None:
        if written.held is not None:
            for call in written.held.calls:
                watcher.committed(*call)
        watcher.fire_settled(written.pending)
        attached = watcher.attach(written.carrier)
    try:
        yield from shell.perform(manager, written.transition)
    finally:
        if watcher is not None:
            watcher.detach(attached)


def log_settle_error(uid: str, exc: BaseException) -> None:
    """Log what failed after the caller's commit (it committed: nothing is raised)."""
    log.error(
        "session %r: after the caller's transaction committed, its hooks or dispatch "
        "failed (the fire is stored; instances not dispatched are failed, or left to "
        "the recovery sweep): %s",
        uid,
        exc,
        exc_info=exc,
        extra={"session": uid},
    )


def _settle(manager: _Manager, written: Written) -> None:
    """After the caller's commit: count, log, run the hooks, dispatch (errors logged)."""
    try:
        if manager._sweeper_pending:
            manager._start_sweeper()  # the safety net for this process's own dispatches
        drive(manager.storage, settle_steps(manager, written), cast(Any, manager))
    except Exception as exc:
        log_settle_error(manager.uid, exc)


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
