"""The clock of a store: finding the timers that are due and applying each exactly once.

Timers (``within`` deadlines, ``delay`` and retry cooldown ends; see
:mod:`triggers_core.engine.timers`) live in the session state and in the
store's due index (kind ``TIMER``), so :func:`tick_store` finds the due ones
with one read of the index: its cost grows with the number of timers due,
never with the number of sessions or of pending timers. Each timer is applied
by one compare-and-swap that re-checks it (``advance_instance``), so however
many processes tick the same store, each timer fires once; a losing process
finds nothing left to do. Entries are read oldest first, so timers overdue
after an outage fire once each, in due order.

Who ticks (the clock is the ticker's own ``now``; processes whose clocks
disagree by ``s`` seconds fire a timer up to ``s`` seconds early or late):

* in-process runs (the threading runner): the store's sweeper thread
  (:class:`~triggers_core.runtime.recovery.StoreSweeper`), every
  :data:`DEFAULT_TICK_INTERVAL` seconds;
* Celery workers: the worker's sweep bootstep calls :func:`tick_store` every
  :data:`DEFAULT_TICK_INTERVAL` seconds;
* cron-style deployments: ``triggers tick URL`` (:func:`triggers_core.tick`);
* tests: :class:`triggers_core.testing.FakeClock` ticks when advanced.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from triggers_core.engine.leases import RETRY_COOLDOWN, DueKind
from triggers_core.engine.state import Status
from triggers_core.engine.timers import timer_scope
from triggers_core.engine.transition import Transition
from triggers_core.errors import InvalidTransitionError, UnknownInstanceError
from triggers_core.runtime.ports import SessionManager
from triggers_core.runtime.storage import DueRef, Snapshot, Storage
from triggers_core.runtime.sweep_report import Recovered, RecoveryReport

__all__ = ["DEFAULT_TICK_INTERVAL", "TICK_BATCH", "fire_timer", "tick_store"]

log = logging.getLogger("triggers_core.clock")

#: Seconds between two ticks of a store's clock (a timer fires within about this much).
DEFAULT_TICK_INTERVAL = 1.0
#: Due timers one tick reads at most (the next tick goes on).
TICK_BATCH = 1000

#: Builds the manager that acts on one session (``manager_class(storage)``).
ManagerFactory = Callable[[Storage], SessionManager]


def _describe(transition: Transition, name: str) -> str:
    """What the timer did, from the committed state (no second read of the store)."""
    instance = transition.state.instances[name]
    status = instance.status
    if status is Status.EXPIRED:
        fired = instance.metadata.get("onMiss")
        extra = f"; fired {fired!r}" if isinstance(fired, str) else ""
        return f"expired (window closed at {instance.metadata.get('deadline')}){extra}"
    if status is Status.SCHEDULED:
        if RETRY_COOLDOWN in instance.metadata:
            return "scheduled (its retry cooldown ended)"
        return "scheduled (its delay ended)"
    others = len(transition.changed - {name})
    return f"{status.value}" + (f" ({others} other instances changed)" if others else "")


def fire_timer(
    manager: SessionManager,
    ref: DueRef,
    now: datetime,
    *,
    dry_run: bool = False,
    loaded: Snapshot | None = None,
) -> Recovered:
    """Apply the timer of ``ref`` (a due-index entry) if it is still due.

    The action is ``"timer fired"``, or ``"left"`` (with why) when there was
    nothing to do; a stale entry (the instance moved on) is dropped from the index.
    ``loaded``: the session as the caller read it with
    :func:`~triggers_core.engine.timer_scope` of the instance (the first attempt
    computes on it; a stale one loses its compare-and-swap, and the next loads).
    """
    name, session = ref.instance, ref.session
    if dry_run:
        return Recovered(session, name, "timer fired", f"due at {ref.at.isoformat()}")
    try:
        if loaded is None:
            transition = manager.advance_instance(name, now)
        else:
            transition = manager.advance_instance(name, now, loaded=loaded)
    except (InvalidTransitionError, UnknownInstanceError) as exc:
        transition, why = None, str(exc)
    else:
        why = NOT_DUE
    if transition is None:
        manager.storage.forget_due(name, DueKind.TIMER, ref.at)
        return Recovered(session, name, "left", why)
    return Recovered(session, name, "timer fired", _describe(transition, name))


#: Why a timer was left: another ticker applied it first (or the instance moved on).
NOT_DUE = "not due any more (applied by another process, or the instance moved on)"


def tick_store(
    storage: Storage,
    factory: ManagerFactory,
    *,
    now: datetime | None = None,
    limit: int = TICK_BATCH,
    dry_run: bool = False,
) -> RecoveryReport:
    """Apply every timer of the store due at ``now`` (default: the real clock), oldest first.

    ``storage`` is any session's storage of the store (its due index covers
    them all); ``factory`` builds the manager that acts on each session (its
    runners get the instances scheduled). Reads at most ``limit`` due timers:
    the cost is bounded by what is due; the next tick goes on. A storage whose
    commits wait on the network (:attr:`Storage.tick_workers` above 1) has its
    due sessions committed by that many threads at once, one session per
    thread at a time (a session's timers in due order); one whose batch load
    saves round trips (:attr:`Storage.tick_load_batch`) has them read
    :meth:`~Storage.load_sessions` that many at a time, just before their
    commits. Sessions are taken oldest first until a timer turns out applied
    by another ticker already: then the rest of the list is rotated by a
    random amount, so that tickers racing on the same due timers move apart
    instead of committing the same sessions in the same order. Each timer is
    still applied by one compare-and-swap that re-checks it, so exactly once
    whoever takes which. Raises
    :class:`~triggers_core.errors.UnsupportedOperationError` for a store
    without a due index.
    """
    when = datetime.now(UTC) if now is None else now
    if when.tzinfo is None:
        raise ValueError(f"now must be a timezone-aware datetime, got naive {when!r}")
    refs = storage.due_entries(DueKind.TIMER, when, limit=limit)
    by_session: dict[str, list[DueRef]] = {}
    for ref in refs:  # oldest first: a session's place is that of its oldest due timer
        by_session.setdefault(ref.session, []).append(ref)
    workers = 1 if dry_run else min(max(1, storage.tick_workers), len(by_session))
    batch = 0 if dry_run else max(0, storage.tick_load_batch)
    queue = _DueSessions(by_session)
    done: dict[str, list[Recovered]] = {}

    def work() -> None:
        while chunk := queue.take(max(1, batch)):
            peers = [storage.session(session) for session in chunk]
            if batch:
                scopes = [timer_scope(by_session[s][0].instance) for s in chunk]
                snapshots: list[Snapshot | None] = list(
                    storage.load_sessions(list(zip(peers, scopes, strict=True)))
                )
            else:
                snapshots = [None] * len(chunk)
            collided = False
            for session, peer, snapshot in zip(chunk, peers, snapshots, strict=True):
                manager = factory(peer)
                actions = []
                for k, ref in enumerate(by_session[session]):  # the batch's read: the first
                    action = _fire_logged(manager, ref, when, dry_run, None if k else snapshot)
                    collided = collided or action.detail == NOT_DUE
                    actions.append(action)
                done[session] = actions
            if collided:
                queue.rotate()

    if workers <= 1:
        work()
    else:  # the threads take sessions from one queue: a session's timers stay in order
        for future in [_pool(workers).submit(work) for _ in range(workers)]:
            future.result()
    per_session = {session: iter(actions) for session, actions in done.items()}
    actions = [next(per_session[ref.session]) for ref in refs]  # back in due order
    return RecoveryReport(tuple(actions), len(refs), dry_run)


class _DueSessions:
    """The due sessions of a tick, handed out oldest first, to the tick's threads."""

    def __init__(self, sessions: Iterable[str]) -> None:
        self._rest = deque(sessions)
        self._lock = threading.Lock()

    def take(self, count: int) -> list[str]:
        """The next ``count`` sessions (fewer at the end; none when all are taken)."""
        with self._lock:
            rest = self._rest
            return [rest.popleft() for _ in range(min(count, len(rest)))]

    def rotate(self) -> None:
        """Another ticker applied what this one was about to: go on from a random place
        of the rest (what is skipped comes last, when the other has probably done it)."""
        with self._lock:
            if len(self._rest) > 1:
                self._rest.rotate(-random.randrange(1, len(self._rest)))


def _fire_logged(
    manager: SessionManager,
    ref: DueRef,
    when: datetime,
    dry_run: bool,
    loaded: Snapshot | None = None,
) -> Recovered:
    action = fire_timer(manager, ref, when, dry_run=dry_run, loaded=loaded)
    if action.action != "left" and not dry_run:
        log.info(
            "timer of %s of session %r: %s",
            ref.instance,
            ref.session,
            action.detail,
            extra={"session": ref.session, "instance": ref.instance},
        )
    return action


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """This process's pool of ``workers`` ticking threads (a forked child makes its own)."""
    key = (os.getpid(), workers)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ThreadPoolExecutor(workers, thread_name_prefix="triggers-tick")
        return pool
