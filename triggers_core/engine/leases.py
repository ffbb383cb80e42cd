"""Leases and the due index, as pure values: which instances a sweeper must look at, when.

A runner that starts an instance takes a *lease* on it: ``mark_running``
records, in the instance's metadata, an ``owner`` token (random, one per run),
the ``worker`` that runs it and the lease's first expiry (``leaseExpires``).
While the body runs, the runtime renews the expiry in a small lease record
the storage keeps beside the session (never in the session itself). An
instance ``running`` whose lease expired is *lost*: its worker died or was
cut off. The engine's :func:`~triggers_core.engine.running.take_over` fails it
(``WorkerLost``) and, per its task's policy, replays it as a clone.

The *due index* is what a sweeper reads to find such instances without
visiting every session: one entry per instance that may need it, the
:class:`Due` that :func:`due_of` derives from the instance alone:

* ``scheduled`` -> ``DISPATCH`` at the time it was scheduled: if it is still
  ``scheduled`` a *dispatch lease* later, its message was lost (a broker
  restart, a publish that failed after the commit) and it is dispatched again;
* ``running`` with a lease -> ``LEASE`` at its expiry (renewals move the entry
  in the storage, not in the session);
* ``unstarted`` with a timer (see :mod:`triggers_core.engine.timers`) -> ``TIMER``
  at its due time: ``delayedUntil`` of a delayed ready instance or of a retry's
  clone waiting for its cooldown, else the ``deadline`` of its open ``within``
  window;
* anything else -> no entry.

Every transition reports, in :attr:`~triggers_core.engine.transition.Transition.due`,
the entries its changed instances gained, moved or lost, and storages write
those with the compare-and-swap (``Changes.due``). Entries are only ever
*hints*: the sweeper re-checks the instance in a compare-and-swap before it acts,
so a stale entry costs a read, never a wrong transition.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from triggers_core.engine.state import Status, TaskInstance

__all__ = [
    "DEFAULT_DISPATCH_LEASE",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_MAX_LOST_RETRIES",
    "MAX_LEASE_SECONDS",
    "RETRY_COOLDOWN",
    "WORKER_LOST_TYPE",
    "Due",
    "DueKind",
    "Lease",
    "LostPolicy",
    "check_lease_seconds",
    "due_of",
    "lease_owner",
    "parse_time",
    "run_key",
    "timer_of",
]

#: ``exceptionType`` of an instance whose worker was lost (its lease expired).
WORKER_LOST_TYPE = "triggers_core.errors.WorkerLost"
#: Seconds a lease lasts unless a task says otherwise (renewed every third of it).
DEFAULT_LEASE_SECONDS = 30.0
#: The longest lease a task may ask for (one day).
MAX_LEASE_SECONDS = 86_400.0
#: Seconds an instance may stay ``scheduled`` before its message counts as lost.
DEFAULT_DISPATCH_LEASE = 60.0
#: How many times a lost instance is replayed before it stays ``failed``.
DEFAULT_MAX_LOST_RETRIES = 3


#: Metadata of a retry's clone that waits for its cooldown (the seconds asked for); its
#: timer is ``delayedUntil``, as for a ``delay``.
RETRY_COOLDOWN = "retryCooldown"


class DueKind(enum.Enum):
    """Why an instance is in the due index."""

    #: scheduled at ``at`` (plus the ``cooldown`` of a retry stored before cooldowns were
    #: timers): lost if still scheduled a dispatch lease later
    DISPATCH = "dispatch"
    LEASE = "lease"  #: running under a lease that expires at ``at``
    #: unstarted with a timer due at ``at``: a ``within`` window closes, a ``delay`` or a
    #: retry's cooldown ends
    TIMER = "timer"


@attrs.frozen
class Due:
    """An instance's entry in the due index."""

    kind: DueKind
    #: DISPATCH: when it was scheduled (plus an old retry's cooldown); LEASE: when its lease
    #: expires (as first taken).
    at: datetime
    #: LEASE: the owner token of the run that holds the lease.
    owner: str | None = None


@attrs.frozen
class Lease:
    """What a runner passes to ``mark_running``: who runs the instance, until when."""

    #: A token unique to this run (the runtime draws it; the engine never does).
    owner: str
    expires: datetime
    seconds: float
    #: Who runs it: ``host``, ``pid``, and the Celery task id when there is one.
    worker: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class LostPolicy:
    """What ``take_over`` does with a lost instance (a task's ``on_lost`` policy)."""

    #: Replay it as a clone (``"retry"``) or leave it ``failed`` (``"fail"``).
    retry: bool = True
    #: Replays of lost runs along one chain of clones before it stays ``failed``.
    max_lost_retries: int = DEFAULT_MAX_LOST_RETRIES


def check_lease_seconds(seconds: object) -> float:
    """``seconds`` as a float, or :class:`ValueError` naming it if out of range."""
    if (
        not isinstance(seconds, int | float)
        or isinstance(seconds, bool)
        or not 0 < seconds <= MAX_LEASE_SECONDS  # False for NaN too
    ):
        raise ValueError(
            f"lease_seconds must be a number of seconds > 0 and <= {MAX_LEASE_SECONDS:g}, "
            f"got {seconds!r}"
        )
    return float(seconds)


def parse_time(value: object) -> datetime | None:
    """A stored ISO 8601 timestamp as an aware datetime, or None if absent or malformed."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def lease_owner(instance: TaskInstance) -> str | None:
    """The owner token of the run that holds ``instance``'s lease, if it has one."""
    owner = instance.metadata.get("owner")
    return owner if isinstance(owner, str) and owner else None


def timer_of(instance: TaskInstance) -> datetime | None:
    """When an unstarted instance's timer is due: ``delayedUntil``, else ``deadline``.

    None for an instance with neither (or not unstarted). A delayed instance met its
    ``after`` condition, so its window no longer matters.
    """
    if instance.status is not Status.UNSTARTED:
        return None
    metadata = instance.metadata
    if "delayedUntil" in metadata:
        return parse_time(metadata["delayedUntil"])
    if "deadline" in metadata:
        return parse_time(metadata["deadline"])
    return None


def due_of(instance: TaskInstance) -> Due | None:
    """The instance's entry in the due index, or None if a sweeper need never look at it."""
    status = instance.status
    if status is Status.UNSTARTED:
        at = timer_of(instance)
        return None if at is None else Due(DueKind.TIMER, at)
    if status is Status.SCHEDULED:
        since = parse_time(instance.metadata.get("timestamps", {}).get(Status.SCHEDULED.value))
        if since is None:
            return None
        # A retry stored before cooldowns were timers was dispatched with a countdown.
        cooldown = instance.metadata.get("cooldown")
        if isinstance(cooldown, int | float) and not isinstance(cooldown, bool) and cooldown > 0:
            since += timedelta(seconds=min(float(cooldown), MAX_LEASE_SECONDS))
        return Due(DueKind.DISPATCH, since)
    if status is Status.RUNNING:
        owner = lease_owner(instance)
        expires = parse_time(instance.metadata.get("leaseExpires"))
        if owner is None or expires is None:
            return None  # started without a lease (a storage without leases, or older data)
        return Due(DueKind.LEASE, expires, owner)
    return None


def run_key(instance: TaskInstance) -> str:
    """The name of the first instance of a chain of replays (the same for every clone).

    A task makes its side effects idempotent with it: a run replayed after its
    worker died sees the key of the run it replaces.
    """
    key = instance.metadata.get("runKey")
    return key if isinstance(key, str) and key else instance.name
