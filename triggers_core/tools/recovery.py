"""The store-wide sweep by URL: ``recover(url)``, what ``triggers recover URL`` runs; and
the store's clock by URL: ``tick(url)``, what ``triggers tick URL`` runs.

It opens the store at ``url`` (or ``TRIGGERS_STORAGE_URL``), then runs
:func:`~triggers_core.runtime.recovery.sweep_store` over it once: lost runs
(``running`` under an expired lease) are taken over and replayed per their
task's policy, lost messages (``scheduled`` for longer than the dispatch lease)
are dispatched again. Its cost grows with the number of due entries, not with
the number of sessions. Celery workers run the same sweep every few seconds;
call this from cron or by hand when no worker runs, or to see (``dry_run``)
what a sweep would do.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from triggers_core.engine.leases import DEFAULT_DISPATCH_LEASE
from triggers_core.runtime.clock import TICK_BATCH, tick_store
from triggers_core.runtime.manager import managers
from triggers_core.runtime.ports import SessionManager
from triggers_core.runtime.recovery import SWEEP_BATCH, RecoveryReport, sweep_store
from triggers_core.runtime.registry import storage_class_for
from triggers_core.runtime.storage import Storage

__all__ = ["SWEEP_UID", "recover", "tick"]

#: The session UID of the storage object a store-wide sweep opens to reach the store.
SWEEP_UID = "triggers-sweep"


def _quiet(
    manager: str | Callable[[Storage], SessionManager],
) -> Callable[[Storage], SessionManager]:
    """The manager factory, building managers that start no background sweeper of their own:
    a one-off sweep or tick must not leave a thread behind acting on the store."""
    build = managers.load(manager) if isinstance(manager, str) else manager

    def quiet(storage: Storage) -> SessionManager:
        built = build(storage)
        if hasattr(built, "sweep_interval"):
            built.sweep_interval = None
        return built

    return quiet


def recover(
    url: str | None = None,
    *,
    manager: str | Callable[[Storage], SessionManager] = "default",
    dispatch_lease: float = DEFAULT_DISPATCH_LEASE,
    limit: int = SWEEP_BATCH,
    dry_run: bool = False,
) -> RecoveryReport:
    """Sweep every session of the store at ``url`` once (see the module docstring).

    ``manager`` builds the manager that acts on each session (a manager class,
    or its key in the ``triggers.managers`` registry): its runners dispatch
    the clones and the messages sent again. ``limit`` bounds the due entries
    read per kind.
    """
    cls, url = storage_class_for(url)
    storage = cls.from_url(url, SWEEP_UID)
    try:
        return sweep_store(
            storage,
            _quiet(manager),
            dispatch_lease=dispatch_lease,
            limit=limit,
            dry_run=dry_run,
        )
    finally:
        storage.close()


def tick(
    url: str | None = None,
    *,
    now: datetime | None = None,
    manager: str | Callable[[Storage], SessionManager] = "default",
    limit: int = TICK_BATCH,
    dry_run: bool = False,
) -> RecoveryReport:
    """Apply every timer due at ``now`` in the store at ``url`` once (the store's clock).

    ``within`` windows that closed expire (and fire their ``onMiss``), delays
    that ended schedule their instances. Cost: one read of the due index plus
    one commit per due timer, never anything per session; at most ``limit``
    timers (the oldest; call again for more). Run it every second or so from
    cron or a loop when no worker or in-process runner keeps the clock (they
    tick by themselves). ``now`` defaults to this machine's clock.
    """
    cls, url = storage_class_for(url)
    storage = cls.from_url(url, SWEEP_UID)
    try:
        return tick_store(storage, _quiet(manager), now=now, limit=limit, dry_run=dry_run)
    finally:
        storage.close()
