"""The blocking driver of the shell core, and the commit loop every manager operation runs.

:func:`drive` runs a generator of the shell core
(:mod:`triggers_core.runtime.shell`) with blocking calls: the storage's
methods, ``time.sleep``, the hooks, the runners. :func:`commit` loads what
the operation's scope names, computes the pure transition, and
compare-and-swaps the result; when another process wrote the session
first (:class:`~triggers_core.errors.ConflictError`) it backs off (full
jitter, growing) and starts over from a fresh load, up to
``policy.max_attempts`` times, then raises
:class:`~triggers_core.errors.ConcurrencyError`. Threads of one process that
share a storage object take turns (:attr:`Storage.commit_lock`) instead of
racing each other into conflicts; the wait for a turn is bounded by
:data:`COMMIT_TURN_TIMEOUT`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from triggers_core.engine.effects import ScheduleInstance
from triggers_core.engine.scopes import HEADER_ONLY, Scope, Selector
from triggers_core.engine.state import SessionState
from triggers_core.engine.transition import Transition
from triggers_core.errors import ConcurrencyError
from triggers_core.runtime.leases import KEEPER
from triggers_core.runtime.observe import current
from triggers_core.runtime.shell import (
    Backoff,
    CallHook,
    CommitPolicy,
    Dispatch,
    Load,
    Steps,
    StorageCall,
    Swap,
    Turn,
    commit_steps,
)
from triggers_core.runtime.shell_run import HoldLease, ReleaseLease, RunBody
from triggers_core.runtime.storage import Storage

__all__ = ["COMMIT_TURN_TIMEOUT", "CommitPolicy", "SyncHost", "commit", "drive"]

T = TypeVar("T")

#: Seconds a commit waits for its turn among threads of this process writing one session.
COMMIT_TURN_TIMEOUT = 60.0


_DEFAULT_POLICY = CommitPolicy()


class SyncHost(Protocol):
    """What :func:`drive` asks of the synchronous manager beyond the storage."""

    _sweeper_pending: bool

    def _start_sweeper(self) -> None: ...

    def get_runner(self, name: str | None = None) -> Any: ...

    def now(self) -> Any: ...


def commit(
    storage: Storage,
    compute: Callable[[SessionState], Transition],
    scope: Scope | Selector = HEADER_ONLY,
    policy: CommitPolicy = _DEFAULT_POLICY,
) -> Transition:
    """Load what ``scope`` names, compute, compare-and-swap; on conflict start over.

    A transition with ``commit`` False (a duplicate fire) is returned without a
    write. An :class:`UnknownInstanceError` from ``compute`` is raised again
    naming the session. An :mod:`observer <triggers_core.runtime.observe>` (if
    any) sees each load and compare-and-swap, each conflict, and the committed
    transition with the state it was computed from. (The loop is
    :func:`triggers_core.runtime.shell.commit_steps`, run by :func:`drive`.)
    """
    return drive(storage, commit_steps(storage, compute, scope, policy, current()))


def drive(storage: Storage, steps: Steps[T], host: SyncHost | None = None) -> T:
    """Run a shell generator to its end with blocking I/O; return what it returns.

    Each request is done here and its result sent back (its error thrown in).
    Threads sharing ``storage`` take turns (:attr:`Storage.commit_lock`, waiting
    at most :data:`COMMIT_TURN_TIMEOUT`), given back as the shell core says
    (:mod:`triggers_core.runtime.shell`). ``host`` (the manager) runs the hooks'
    dispatches and starts its sweeper before its first commit.
    """
    turn = storage.commit_lock
    held = False
    value: Any = None
    error: BaseException | None = None
    send = steps.send
    try:
        while True:
            try:
                if error is None:
                    request = send(value)
                else:
                    request, error = steps.throw(error), None
            except StopIteration as stop:
                result: T = stop.value
                return result
            value = None
            kind = type(request)
            if held and kind is not Swap and kind is not Load and kind is not Turn:
                held = False  # the turn covers a load and its compare-and-swap, no more
                turn.release()
            try:
                if kind is Load:
                    if request[1] and not held:
                        if (host is not None and host._sweeper_pending) or not turn.acquire(
                            blocking=False
                        ):
                            _take(storage, turn, host)
                        held = True
                    value = storage.load(request[0])
                elif kind is Turn:
                    if not held:
                        _take(storage, turn, host)
                        held = True
                elif kind is Swap:
                    value = storage.compare_and_swap(*request)
                elif kind is CallHook:
                    request[0](*request[1])
                elif kind is Dispatch:
                    effect: ScheduleInstance = request[0]
                    assert host is not None, "dispatching needs the manager"
                    host.get_runner(effect.using).dispatch(host, effect)
                elif kind is Backoff:
                    time.sleep(request.seconds)
                elif kind is StorageCall:
                    value = getattr(storage, request.method)(*request.args)
                elif kind is RunBody:
                    value = request.outcomes.run_task(*request.args)
                elif kind is HoldLease:
                    assert host is not None, "holding a lease needs the manager"
                    name, owner, seconds = request.args
                    value = KEEPER.hold(storage, name, owner, seconds, host.now)
                elif kind is ReleaseLease:
                    KEEPER.release(request.held)
                else:
                    raise TypeError(f"the shell asked for something unknown: {request!r}")
            except BaseException as exc:
                error = exc
    finally:
        if held:
            turn.release()


def _take(storage: Storage, turn: Any, host: SyncHost | None) -> None:
    """Take the commit turn (starting the host's sweeper first, if it is pending).

    (The free turn of the hot path is taken in :func:`drive` itself.)
    """
    if host is not None and host._sweeper_pending:
        host._start_sweeper()
    if not turn.acquire(timeout=COMMIT_TURN_TIMEOUT):
        raise ConcurrencyError(
            f"waited {COMMIT_TURN_TIMEOUT:g}s for other threads committing to this session",
            backend=storage.backend_name,
            session=storage.uid,
        )
