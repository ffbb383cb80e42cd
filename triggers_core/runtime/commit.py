"""The commit loop every manager operation runs: load, compute, compare-and-swap, retry.

:func:`commit` loads what the operation's scope names, computes the pure
transition, and compare-and-swaps the result; when another process wrote the
session first (:class:`~triggers_core.errors.ConflictError`) it backs off
(full jitter, growing) and starts over from a fresh load, up to
``policy.max_attempts`` times, then raises
:class:`~triggers_core.errors.ConcurrencyError`. Threads of one process that
share a storage object take turns (:attr:`Storage.commit_lock`) instead of
racing each other into conflicts; the wait for a turn is bounded by
:data:`COMMIT_TURN_TIMEOUT`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import attrs

from triggers_core.engine.scopes import HEADER_ONLY, Scope, Selector
from triggers_core.engine.state import SessionState
from triggers_core.engine.transition import Transition
from triggers_core.errors import ConcurrencyError, ConflictError, UnknownInstanceError
from triggers_core.runtime.observe import Observer, current
from triggers_core.runtime.storage import Storage

__all__ = ["COMMIT_TURN_TIMEOUT", "CommitPolicy", "commit"]

#: Seconds a commit waits for its turn among threads of this process writing one session.
COMMIT_TURN_TIMEOUT = 60.0


@attrs.frozen
class CommitPolicy:
    """How often to retry a conflicting commit, and how long to back off between tries."""

    #: Compare-and-swap attempts before :class:`ConcurrencyError`.
    max_attempts: int = 100
    #: Backoff between attempts: full jitter up to ``min(cap, base * 2**attempt)`` seconds.
    backoff_base: float = 0.001
    backoff_cap: float = 0.1


def commit(
    storage: Storage,
    compute: Callable[[SessionState], Transition],
    scope: Scope | Selector = HEADER_ONLY,
    policy: CommitPolicy = CommitPolicy(),
) -> Transition:
    """Load what ``scope`` names, compute, compare-and-swap; on conflict start over.

    A transition with ``commit`` False (a duplicate fire) is returned without a
    write. An :class:`UnknownInstanceError` from ``compute`` is raised again
    naming the session. An :mod:`observer <triggers_core.runtime.observe>` (if
    any) sees each load and compare-and-swap, each conflict, and the committed
    transition with the state it was computed from.
    """
    observer = current()
    if observer is not None:
        return _observed(observer, storage, compute, scope, policy)
    turn = storage.commit_lock
    for attempt in range(policy.max_attempts):
        if not turn.acquire(timeout=COMMIT_TURN_TIMEOUT):
            raise ConcurrencyError(
                f"waited {COMMIT_TURN_TIMEOUT:g}s for other threads committing to this session",
                backend=storage.backend_name,
                session=storage.uid,
            )
        try:
            snapshot = storage.load(scope)
            try:
                transition = compute(snapshot.state)
            except UnknownInstanceError as exc:
                raise UnknownInstanceError(exc.instance, storage.uid) from None
            if transition.commit:  # else nothing changed (a duplicate fire)
                storage.compare_and_swap(snapshot.version, transition.state, transition.changes)
        except ConflictError:
            pass  # another process wrote first: back off (without our turn), then retry
        else:
            return transition
        finally:
            turn.release()
        time.sleep(random.uniform(0, min(policy.backoff_cap, policy.backoff_base * 2**attempt)))
    raise _gave_up(storage, policy)


def _gave_up(storage: Storage, policy: CommitPolicy) -> ConcurrencyError:
    return ConcurrencyError(
        f"gave up after {policy.max_attempts} conflicting attempts",
        backend=storage.backend_name,
        session=storage.uid,
    )


def _observed(
    observer: Observer,
    storage: Storage,
    compute: Callable[[SessionState], Transition],
    scope: Scope | Selector,
    policy: CommitPolicy,
) -> Transition:
    """:func:`commit`, telling ``observer`` about each step (the same loop otherwise)."""
    spans = observer.watches_storage
    turn = storage.commit_lock
    for attempt in range(policy.max_attempts):
        if not turn.acquire(timeout=COMMIT_TURN_TIMEOUT):
            raise ConcurrencyError(
                f"waited {COMMIT_TURN_TIMEOUT:g}s for other threads committing to this session",
                backend=storage.backend_name,
                session=storage.uid,
            )
        try:
            token = observer.load_begin(storage, attempt) if spans else None
            try:
                snapshot = storage.load(scope)
            except BaseException as exc:
                if spans:
                    observer.load_end(token, exc)
                raise
            if spans:
                observer.load_end(token, None)
            try:
                transition = compute(snapshot.state)
            except UnknownInstanceError as exc:
                raise UnknownInstanceError(exc.instance, storage.uid) from None
            if transition.commit:
                token = observer.store_begin(storage, attempt) if spans else None
                try:
                    storage.compare_and_swap(snapshot.version, transition.state, transition.changes)
                except BaseException as exc:
                    if spans:
                        observer.store_end(token, exc)
                    raise
                if spans:
                    observer.store_end(token, None)
                observer.committed(storage, snapshot.state, transition)
        except ConflictError:
            observer.conflict(storage, attempt)
        else:
            return transition
        finally:
            turn.release()
        time.sleep(random.uniform(0, min(policy.backoff_cap, policy.backoff_base * 2**attempt)))
    raise _gave_up(storage, policy)
