"""The sweep: finding the instances a dead worker or a lost message left behind; moving them on.

Two kinds of instance need a sweeper (see :mod:`triggers_core.engine.leases`):

* ``running`` under a lease that expired: the run is *lost*. The sweeper
  claims the lease (so the run can no longer renew it), then takes the
  instance over: ``failed`` with ``WorkerLost``, and replayed as a clone per
  its task's ``on_lost`` policy.
* ``scheduled`` for longer than the *dispatch lease*: its message was lost. The
  sweeper dispatches it again, once per dispatch lease while it stays scheduled
  (its ``dispatches`` metadata counts the attempts).

:func:`sweep_store` also applies the store's due timers (``within`` windows that
closed, ``delay`` that ended: :func:`~triggers_core.runtime.clock.tick_store`),
which :class:`StoreSweeper` does more often, every ``tick_interval`` seconds.

Every action is a compare-and-swap that re-checks the instance, so however
many sweepers run (every Celery worker runs one), each instance is acted on
once, and a stale index entry costs one read.

:func:`sweep_store` covers a whole store through its due index: its cost
grows with the number of due entries, not with the number of sessions.
:func:`recover_session` covers one session by reading its unresolved
instances (what ``manager.recover()`` does). :class:`StoreSweeper` runs
:func:`sweep_store` every ``interval`` seconds in a daemon thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from triggers_core.engine.leases import DEFAULT_DISPATCH_LEASE, DueKind, due_of, lease_owner
from triggers_core.engine.state import Status
from triggers_core.errors import InvalidTransitionError, UnknownInstanceError
from triggers_core.runtime import operator_steps
from triggers_core.runtime.clock import DEFAULT_TICK_INTERVAL, TICK_BATCH, tick_store
from triggers_core.runtime.commit import drive
from triggers_core.runtime.observe import current as observer
from triggers_core.runtime.observe import task_of
from triggers_core.runtime.ports import SessionManager
from triggers_core.runtime.redaction import redact
from triggers_core.runtime.shell import Load, ShellHost, Steps, StorageCall, get_instance_steps
from triggers_core.runtime.storage import UNRESOLVED, DueRef, Storage, _sort_key
from triggers_core.runtime.sweep_report import Recovered, RecoveryReport

if TYPE_CHECKING:
    from triggers_core.runtime.async_storage import AsyncStorage

__all__ = [
    "CLAIM_SECONDS",
    "DEFAULT_SWEEP_INTERVAL",
    "ManagerFactory",
    "Recovered",
    "RecoveryReport",
    "StoreSweeper",
    "SweepRounds",
    "recover_session",
    "recover_session_steps",
    "sweep_store",
]

log = logging.getLogger("triggers_core.recovery")

#: Seconds between two sweeps of a store.
DEFAULT_SWEEP_INTERVAL = 10.0
#: Seconds a claimed lease stays with its sweeper before another may claim it again.
CLAIM_SECONDS = 30.0
#: Due entries a sweep reads at once, per kind.
SWEEP_BATCH = 500

#: Builds the manager that acts on one session (``manager_class(storage)``).
ManagerFactory = Callable[[Storage], SessionManager]


def _after(clock_now: datetime | None) -> datetime:
    now = clock_now if clock_now is not None else datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError(f"now must be a timezone-aware datetime, got naive {now!r}")
    return now


def _outcome(host: ShellHost, name: str) -> Steps[str]:
    instance = yield from get_instance_steps(host.uid, name)
    if instance.status is Status.REPLAYED:
        return f"failed (WorkerLost), replayed as {instance.metadata.get('replayedAs')}"
    return f"{instance.status.value} (WorkerLost)"


def _take_over_steps(
    host: ShellHost, ref: DueRef, now: datetime, dry_run: bool
) -> Steps[Recovered]:
    name, session = ref.instance, ref.session
    if ref.owner is None:
        return Recovered(session, name, "left", "its lease record names no run")
    if dry_run:
        return Recovered(session, name, "taken over", f"lease expired at {ref.at.isoformat()}")
    claimed = yield StorageCall(
        "claim_lease", name, ref.owner, ref.at, now + timedelta(seconds=CLAIM_SECONDS)
    )
    if not claimed:
        return Recovered(session, name, "left", "its lease was renewed or claimed meanwhile")
    try:
        yield from operator_steps.take_over_instance(host, name, ref.owner)
    except (InvalidTransitionError, UnknownInstanceError) as exc:
        # Claimed, yet not running under that run: the entry is stale.
        yield StorageCall("forget_due", name, DueKind.LEASE, now + timedelta(seconds=CLAIM_SECONDS))
        return Recovered(session, name, "left", str(exc))
    return Recovered(session, name, "taken over", (yield from _outcome(host, name)))


def _redispatch_steps(host: ShellHost, ref: DueRef, dry_run: bool) -> Steps[Recovered]:
    name, session = ref.instance, ref.session
    if dry_run:
        return Recovered(session, name, "dispatched again", f"scheduled at {ref.at.isoformat()}")
    try:
        yield from operator_steps.redispatch_instance(host, name, ref.at)
    except (InvalidTransitionError, UnknownInstanceError) as exc:
        # not scheduled since ref.at any more: the entry is stale
        yield StorageCall("forget_due", name, DueKind.DISPATCH, ref.at)
        return Recovered(session, name, "left", str(exc))
    return Recovered(session, name, "dispatched again", "scheduled")


def _take_over(manager: SessionManager, ref: DueRef, now: datetime, *, dry_run: bool) -> Recovered:
    host: Any = manager  # a TriggerManager: the shell's host and drive's
    return drive(manager.storage, _take_over_steps(host, ref, now, dry_run), host)


def _redispatch(manager: SessionManager, ref: DueRef, *, dry_run: bool) -> Recovered:
    host: Any = manager
    return drive(manager.storage, _redispatch_steps(host, ref, dry_run), host)


def sweep_store(
    storage: Storage,
    factory: ManagerFactory,
    *,
    now: datetime | None = None,
    dispatch_lease: float = DEFAULT_DISPATCH_LEASE,
    limit: int = SWEEP_BATCH,
    dry_run: bool = False,
) -> RecoveryReport:
    """Take over the lost instances, re-send the lost messages and apply the due timers of
    every session of a store.

    ``storage`` is any session's storage of the store (its
    :meth:`~triggers_core.runtime.storage.Storage.due_entries` covers them
    all); ``factory`` builds the manager that acts on each session.

    Reads at most ``limit`` due entries of each kind (the oldest; timers: see
    :func:`~triggers_core.runtime.clock.tick_store`), so one
    sweep's cost is bounded by what is due, never by the number of sessions;
    call it again (the next interval) for more. ``dry_run`` reports what it
    would do and changes nothing. Raises
    :class:`~triggers_core.errors.UnsupportedOperationError` for a store
    without a due index.
    """
    now = _after(now)
    actions: list[Recovered] = []
    leases = storage.due_entries(DueKind.LEASE, now, limit=limit)
    dispatches = storage.due_entries(
        DueKind.DISPATCH, now - timedelta(seconds=dispatch_lease), limit=limit
    )
    managers: dict[str, SessionManager] = {}

    def manager_for(session: str) -> SessionManager:
        found = managers.get(session)
        if found is None:
            found = managers[session] = factory(storage.session(session))
        return found

    for ref in leases:
        actions.append(_take_over(manager_for(ref.session), ref, now, dry_run=dry_run))
    for ref in dispatches:
        actions.append(_redispatch(manager_for(ref.session), ref, dry_run=dry_run))
    timers = tick_store(storage, factory, now=now, limit=limit, dry_run=dry_run)
    actions.extend(timers.actions)
    examined = len(leases) + len(dispatches) + timers.examined
    report = RecoveryReport(tuple(actions), examined, dry_run)
    _observe(report, lost=len(leases), overdue=timers.examined)
    for action in report.acted:
        if action.action == "timer fired":
            continue  # logged by the tick (it is no recovery)
        log.warning(
            "%s %s of session %r: %s",
            "would have" if dry_run else "recovered:",
            action.instance,
            action.session,
            f"{action.action}, {action.detail}",
            extra={"session": action.session, "instance": action.instance},
        )
    return report


def recover_session(
    manager: SessionManager,
    *,
    now: datetime | None = None,
    dispatch_lease: float = DEFAULT_DISPATCH_LEASE,
    dry_run: bool = False,
) -> RecoveryReport:
    """The sweep of one session, from its unresolved instances (no due index needed).

    Instances running without a lease (started before leases existed, or on a
    storage that keeps none) are not touched: ``get_stale_instances`` finds
    them by age.
    """
    host: Any = manager
    steps = recover_session_steps(host, now=now, dispatch_lease=dispatch_lease, dry_run=dry_run)
    return drive(manager.storage, steps, host)


def recover_session_steps(
    host: ShellHost,
    *,
    now: datetime | None,
    dispatch_lease: float,
    dry_run: bool,
) -> Steps[RecoveryReport]:
    """:func:`recover_session` as a generator of the shell core (for either manager)."""
    now = _after(now)
    snapshot = yield Load((UNRESOLVED, False))
    unresolved = sorted(
        (i for i in snapshot.state.instances.values() if not i.is_resolved), key=_sort_key
    )
    actions: list[Recovered] = []
    examined = 0
    for instance in unresolved:
        due = due_of(instance)
        if due is None:
            continue
        examined += 1
        if due.kind is DueKind.LEASE:
            lease = yield StorageCall("get_lease", instance.name)
            owner = lease_owner(instance)
            if lease is None or owner is None or lease.owner != owner or lease.at > now:
                continue
            actions.append((yield from _take_over_steps(host, lease, now, dry_run)))
        elif due.at + timedelta(seconds=dispatch_lease) <= now:
            ref = DueRef(host.uid, instance.name, DueKind.DISPATCH, due.at)
            actions.append((yield from _redispatch_steps(host, ref, dry_run)))
    report = RecoveryReport(tuple(actions), examined, dry_run)
    _observe(report, lost=None)
    return report


def _observe(report: RecoveryReport, lost: int | None, overdue: int = 0) -> None:
    """Tell the observer what a sweep moved on and (for a store) how many runs it found
    lost and how many timers it found due."""
    watcher = observer()
    if watcher is None or report.dry_run:
        return
    for action in report.acted:
        if action.action != "timer fired":  # a timer firing is no recovery
            watcher.recovered(task_of(action.instance), action.action)
    if lost is not None:
        watcher.swept(lost, overdue)


S = TypeVar("S", bound="Storage | AsyncStorage")
F = TypeVar("F")


class SweepRounds(Generic[S, F]):
    """The rounds of a background sweeper (:class:`StoreSweeper`, a thread, and
    :class:`~triggers_core.runtime.async_sweeper.AsyncStoreSweeper`, a task): a sweep
    every ``interval`` seconds (the first at once), a tick of the clock every
    ``tick_interval`` seconds in between; a round that failed is logged, never raised.

    A round is :meth:`begin` (True: sweep, False: tick), the work, then :meth:`end`,
    which says how long to wait before the next.
    """

    def __init__(
        self,
        storage: S,
        factory: F,
        interval: float,
        tick_interval: float = DEFAULT_TICK_INTERVAL,
    ) -> None:
        self.storage = storage
        self.factory = factory
        self.interval = interval
        self.tick_interval = min(tick_interval, interval)
        self.sweeps = 0
        self.ticks = 0
        self._next_sweep = 0.0
        self._started = 0.0
        self._sweeping = False

    def begin(self) -> bool:
        """Start a round: True if it is a sweep (its interval has passed), else a tick."""
        self._started = time.monotonic()
        self._sweeping = self._started >= self._next_sweep
        if self._sweeping:
            self._next_sweep = self._started + self.interval
        return self._sweeping

    def failed(self, exc: Exception) -> None:
        """Log a round that failed (the store is down): the next round tries again."""
        log.warning(
            "%s a %s store failed (%s); trying again in %gs",
            "sweeping" if self._sweeping else "ticking the clock of",
            self.storage.backend_name,
            redact(str(exc)),
            self.tick_interval,
        )

    def end(self, full: bool) -> float:
        """End a round; the seconds to wait before the next one. Rounds start every
        ``tick_interval`` (the time one took is not added to the lateness of the next
        timers); a tick that read a full batch (``full``) leaves more due: at once."""
        if self._sweeping:
            self.sweeps += 1
        self.ticks += 1
        return 0.0 if full else tick_wait(self._started, self.tick_interval)


class StoreSweeper(SweepRounds[Storage, ManagerFactory]):
    """Runs :func:`sweep_store` on one store every ``interval`` seconds, in a daemon thread,
    and the store's clock (:func:`~triggers_core.runtime.clock.tick_store`) every
    ``tick_interval`` seconds in between.

    One per store and process (see :meth:`for_store`). A sweep that fails (the
    store is down) is logged and tried again at the next interval.
    """

    _running: ClassVar[dict[object, StoreSweeper]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        storage: Storage,
        factory: ManagerFactory,
        interval: float,
        tick_interval: float = DEFAULT_TICK_INTERVAL,
    ) -> None:
        super().__init__(storage, factory, interval, tick_interval)
        self._key: object = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, name=f"triggers-sweeper {storage.backend_name}", daemon=True
        )

    @classmethod
    def for_store(
        cls, storage: Storage, factory: ManagerFactory, interval: float = DEFAULT_SWEEP_INTERVAL
    ) -> StoreSweeper | None:
        """The sweeper of ``storage``'s store in this process, started on first call.

        None for a store that cannot be named (:meth:`Storage.store_identity`).
        """
        key = storage.store_identity()
        if key is None:
            return None
        with cls._lock:
            sweeper = cls._running.get(key)
            if sweeper is None or not sweeper._thread.is_alive():
                sweeper = cls._running[key] = cls(storage, factory, interval)
                sweeper._key = key
                sweeper._thread.start()
            return sweeper

    def stop(self) -> None:
        """Stop sweeping (the thread ends after the current sweep)."""
        self._stop.set()
        with self._lock:
            if self._running.get(self._key) is self:
                del self._running[self._key]

    def _serve(self) -> None:
        while not self._stop.is_set():
            full = False
            try:
                if self.begin():
                    sweep_store(self.storage, self.factory)
                else:
                    full = tick_store(self.storage, self.factory).examined >= TICK_BATCH
            except Exception as exc:
                self.failed(exc)
            self._stop.wait(self.end(full))


def tick_wait(started: float, interval: float) -> float:
    """Seconds to wait so that the next tick starts ``interval`` after the one started at
    ``started`` (monotonic), at once if that one took longer."""
    return max(0.0, started + interval - time.monotonic())
