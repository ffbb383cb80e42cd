"""The lease keeper: renews the leases of the instances running in this process.

``run_instance`` takes a lease on the instance it starts (see
:mod:`triggers_core.engine.leases`) and hands it to :data:`KEEPER`, one daemon
thread per process that renews every held lease a third of its length before
it would expire, through :meth:`~triggers_core.runtime.storage.Storage.renew_lease`
(which writes only the lease record). When the body ends, the lease is
released. If this process dies, nothing renews its leases any more: they
expire, and a sweeper takes the instances over.

A renewal that the storage refuses means the lease is no longer this run's (a
sweeper claimed it after a renewal came too late, or an operator started the
instance again): the keeper stops renewing it and marks it ``lost``, and the
run's outcome will be refused by the engine's owner check. A renewal that
fails (the storage is down) is tried again soon; if the storage stays down
for the whole lease, the instance is taken over like a dead worker's.

The thread starts on first use and after a fork (a Celery prefork pool
process gets its own), so a process that never runs an instance has none.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from triggers_core.runtime.storage import Storage

__all__ = ["KEEPER", "HeldLease", "LeaseKeeper"]

log = logging.getLogger("triggers_core.leases")

#: Seconds between two attempts at a renewal that failed (the storage was unreachable).
RENEWAL_RETRY = 1.0


class HeldLease:
    """One lease the keeper renews: the instance ``name`` of ``storage``'s session."""

    __slots__ = ("clock", "lost", "name", "next_renewal", "owner", "renewals", "seconds", "storage")

    def __init__(
        self,
        storage: Storage,
        name: str,
        owner: str,
        seconds: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.storage = storage
        self.name = name
        self.owner = owner
        self.seconds = seconds
        self.clock = clock
        #: Monotonic time of the next renewal.
        self.next_renewal = time.monotonic() + seconds / 3
        #: True once the storage refused a renewal: the run no longer holds the lease.
        self.lost = False
        #: Renewals the storage accepted.
        self.renewals = 0


class LeaseKeeper:
    """Renews held leases from one daemon thread (started on first use)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._held: dict[int, HeldLease] = {}
        self._thread: threading.Thread | None = None
        #: Monotonic time the waiting thread wakes at; -inf while it is awake (it looks
        #: at every held lease before it waits again, so a new one needs no signal then).
        self._wake_at = -math.inf

    def hold(
        self,
        storage: Storage,
        name: str,
        owner: str,
        seconds: float,
        clock: Callable[[], datetime],
    ) -> HeldLease:
        """Start renewing the lease of run ``owner`` on ``name`` every ``seconds / 3``.

        The thread is woken only if this lease is due before it would wake anyway:
        leases of one length never are (the thread waits for the earliest renewal of
        those held before), so a worker running instance after instance does not
        switch to the keeper thread once per instance.
        """
        held = HeldLease(storage, name, owner, seconds, clock)
        with self._cond:
            self._ensure_thread()
            self._held[id(held)] = held
            if held.next_renewal < self._wake_at:
                self._cond.notify()
        return held

    def release(self, held: HeldLease) -> None:
        """Stop renewing ``held`` (its run ended; the outcome's commit removed the record)."""
        with self._cond:
            self._held.pop(id(held), None)

    def held(self) -> list[HeldLease]:
        """The leases renewed now."""
        with self._cond:
            return list(self._held.values())

    def _after_fork(self) -> None:
        """In a forked child: the parent's thread and leases are not this process's."""
        self._cond = threading.Condition(threading.Lock())
        self._held = {}
        self._thread = None
        self._wake_at = -math.inf

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._serve, name="triggers-lease-keeper", daemon=True
            )
            self._thread.start()

    def _serve(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [h for h in self._held.values() if h.next_renewal <= now]
                if not due:
                    wait = min((h.next_renewal for h in self._held.values()), default=now + 60)
                    self._wake_at = wait
                    self._cond.wait(timeout=max(0.0, wait - now))
                    self._wake_at = -math.inf
                    continue
            for held in due:
                self._renew(held)

    def _renew(self, held: HeldLease) -> None:
        try:
            renewed = held.storage.renew_lease(
                held.name, held.owner, held.clock() + timedelta(seconds=held.seconds)
            )
        except Exception as exc:  # the storage is unreachable: try again soon
            log.warning(
                "could not renew the lease of %s in session %r (%s); trying again",
                held.name,
                held.storage.uid,
                exc,
                extra={"session": held.storage.uid, "instance": held.name},
            )
            held.next_renewal = time.monotonic() + min(RENEWAL_RETRY, held.seconds / 6)
            return
        if renewed:
            held.renewals += 1
            held.next_renewal = time.monotonic() + held.seconds / 3
            return
        held.lost = True
        self.release(held)
        log.warning(
            "the lease of %s in session %r is no longer this run's (it was taken over, or "
            "the instance was started again): its outcome will not be recorded",
            held.name,
            held.storage.uid,
            extra={"session": held.storage.uid, "instance": held.name},
        )


#: The keeper of this process.
KEEPER = LeaseKeeper()
os.register_at_fork(after_in_child=KEEPER._after_fork)
