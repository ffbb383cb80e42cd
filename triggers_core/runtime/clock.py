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
from collections.abc import Callable
from datetime import UTC, datetime

from triggers_core.engine.leases import RETRY_COOLDOWN, DueKind
from triggers_core.engine.state import Status
from triggers_core.errors import InvalidTransitionError, UnknownInstanceError
from triggers_core.runtime.ports import SessionManager
from triggers_core.runtime.storage import DueRef, Storage
from triggers_core.runtime.sweep_report import Recovered, RecoveryReport

__all__ = ["DEFAULT_TICK_INTERVAL", "TICK_BATCH", "fire_timer", "tick_store"]

log = logging.getLogger("triggers_core.clock")

#: Seconds between two ticks of a store's clock (a timer fires within about this much).
DEFAULT_TICK_INTERVAL = 1.0
#: Due timers one tick reads at most (the next tick goes on).
TICK_BATCH = 1000

#: Builds the manager that acts on one session (``manager_class(storage)``).
ManagerFactory = Callable[[Storage], SessionManager]


def _describe(manager: SessionManager, name: str, changed: frozenset[str]) -> str:
    instance = manager.storage.get_instance(name)
    status = instance.status
    if status is Status.EXPIRED:
        fired = instance.metadata.get("onMiss")
        extra = f"; fired {fired!r}" if isinstance(fired, str) else ""
        return f"expired (window closed at {instance.metadata.get('deadline')}){extra}"
    if status is Status.SCHEDULED:
        if RETRY_COOLDOWN in instance.metadata:
            return "scheduled (its retry cooldown ended)"
        return "scheduled (its delay ended)"
    others = len(changed - {name})
    return f"{status.value}" + (f" ({others} other instances changed)" if others else "")


def fire_timer(
    manager: SessionManager, ref: DueRef, now: datetime, *, dry_run: bool = False
) -> Recovered:
    """Apply the timer of ``ref`` (a due-index entry) if it is still due.

    The action is ``"timer fired"``, or ``"left"`` (with why) when there was
    nothing to do; a stale entry (the instance moved on) is dropped from the index.
    """
    name, session = ref.instance, ref.session
    if dry_run:
        return Recovered(session, name, "timer fired", f"due at {ref.at.isoformat()}")
    try:
        transition = manager.advance_instance(name, now)
    except (InvalidTransitionError, UnknownInstanceError) as exc:
        transition, why = None, str(exc)
    else:
        why = "not due any more (applied by another process, or the instance moved on)"
    if transition is None:
        manager.storage.forget_due(name, DueKind.TIMER, ref.at)
        return Recovered(session, name, "left", why)
    return Recovered(session, name, "timer fired", _describe(manager, name, transition.changed))


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
    the cost is bounded by what is due; the next tick goes on. Raises
    :class:`~triggers_core.errors.UnsupportedOperationError` for a store
    without a due index.
    """
    when = datetime.now(UTC) if now is None else now
    if when.tzinfo is None:
        raise ValueError(f"now must be a timezone-aware datetime, got naive {when!r}")
    refs = storage.due_entries(DueKind.TIMER, when, limit=limit)
    managers: dict[str, SessionManager] = {}
    actions: list[Recovered] = []
    for ref in refs:
        manager = managers.get(ref.session)
        if manager is None:
            manager = managers[ref.session] = factory(storage.session(ref.session))
        action = fire_timer(manager, ref, when, dry_run=dry_run)
        actions.append(action)
        if action.action != "left" and not dry_run:
            log.info(
                "timer of %s of session %r: %s",
                ref.instance,
                ref.session,
                action.detail,
                extra={"session": ref.session, "instance": ref.instance},
            )
    return RecoveryReport(tuple(actions), len(refs), dry_run)
