"""Making a *lost* run on purpose: a session whose instance runs under a lease that expired.

For tests of what finds and recovers lost runs (listing, the sweep, the
console)::

    from triggers_core.testing.lost_runs import start_run

    start_run(storage, "t_a#0", expires_in=-5)  # its worker "died" five seconds ago

The run is started by the pure engine with a lease whose worker is
``{"host": "gone", "pid": 7}`` and written with one compare-and-swap, as a
worker's mark-running would; no body runs and nothing renews the lease.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from triggers_core import engine
from triggers_core.engine.leases import Lease
from triggers_core.runtime.storage import Storage

__all__ = ["start_run"]


def start_run(
    storage: Storage, name: str, *, expires_in: float, now: datetime | None = None
) -> Lease:
    """Mark ``name`` (``scheduled``) running under a lease expiring ``expires_in`` s from now.

    A negative ``expires_in`` makes a lost run; a positive one a live run
    that nothing renews. Returns the lease. Raises what the engine raises
    for an instance that cannot start, and the storage's errors.
    """
    at = now or datetime.now(UTC)
    lease = Lease(
        f"test-run-{name}",
        at + timedelta(seconds=expires_in),
        30.0,
        {"host": "gone", "pid": 7},
    )
    snapshot = storage.load_full()
    started = engine.mark_running(snapshot.state, name, now=at, lease=lease)
    storage.compare_and_swap(snapshot.version, started.state, started.changes)
    return lease
