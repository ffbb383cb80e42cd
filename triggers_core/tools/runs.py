"""Who runs an instance, until when, and whether the run was lost: what ``inspect`` and
``explain`` say about ``running`` instances.

A ``running`` instance started under a lease records its worker and its
owner token; the storage's lease record says until when the lease holds now
(renewals included). :func:`run_status` puts them together: the worker, the
lease's expiry and, once it passed, that the run is *lost* and what a sweeper
will do with it (fail it with ``WorkerLost``, then replay it as a clone or
not, per its task's ``on_lost`` policy where the task is registered here).

Cost: one lease read per ``running`` instance asked about (:func:`run_statuses`
reads one per running instance of the state: O(running)).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import attrs

from triggers_core.engine.leases import lease_owner, parse_time
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.errors import UnsupportedOperationError
from triggers_core.runtime.storage import Storage
from triggers_core.runtime.tasks import task_policy

__all__ = ["RunStatus", "run_status", "run_statuses"]


@attrs.frozen
class RunStatus:
    """What is known of the run of one ``running`` instance."""

    instance: str
    #: The worker as recorded (``host``, ``pid``, ``taskId``, ``node``...); empty if unknown.
    worker: Mapping[str, object]
    #: When the lease expires now (renewals included); None: started without a lease.
    lease_expires: datetime | None
    #: The lease expired: the run is lost (or its worker cannot reach the storage).
    lost: bool
    #: A sweeper claimed the lease and is taking the instance over.
    claimed: bool
    #: What a sweeper does with it once lost, in words.
    next_step: str

    def describe(self) -> str:
        """One line for a terminal or a page (callers escape it for their medium)."""
        worker = ", ".join(f"{k}={v}" for k, v in self.worker.items()) or "an unknown worker"
        if self.lease_expires is None:
            return f"running on {worker} (no lease: started before leases, or on a storage without)"
        when = self.lease_expires.isoformat(timespec="seconds")
        if self.lost:
            return f"LOST: its lease expired at {when} (worker {worker}); {self.next_step}"
        return f"running on {worker}, lease until {when}"


def _next_step(state: SessionState, instance: TaskInstance) -> str:
    task = state.tasks.get(instance.task_name)
    policy = task_policy(task.run).lost if task is not None else None
    if policy is None or not policy.retry:
        return "a sweeper will fail it (WorkerLost)"
    lost = instance.metadata.get("lostRetries", 0)
    if isinstance(lost, int) and lost >= policy.max_lost_retries:
        return (
            f"a sweeper will fail it (WorkerLost; lost {lost} times, "
            f"max_lost_retries={policy.max_lost_retries})"
        )
    return "a sweeper will fail it (WorkerLost) and replay it as a clone"


def run_status(
    storage: Storage, state: SessionState, instance: TaskInstance, *, now: datetime
) -> RunStatus | None:
    """The run of ``instance`` if it is ``running``, else None."""
    if instance.status is not Status.RUNNING:
        return None
    worker = instance.metadata.get("worker")
    worker = dict(worker) if isinstance(worker, Mapping) else {}
    expires, claimed = None, False
    if lease_owner(instance) is not None:
        expires = parse_time(instance.metadata.get("leaseExpires"))
        try:
            record = storage.get_lease(instance.name)
        except UnsupportedOperationError:
            record = None
        if record is not None and record.owner == lease_owner(instance):
            expires, claimed = record.at, record.claimed
    lost = expires is not None and (claimed or expires <= now)
    return RunStatus(instance.name, worker, expires, lost, claimed, _next_step(state, instance))


def run_statuses(storage: Storage, state: SessionState, *, now: datetime) -> dict[str, RunStatus]:
    """The run of every ``running`` instance of ``state``, by name."""
    found: dict[str, RunStatus] = {}
    for instance in state.instances.values():
        status = run_status(storage, state, instance, now=now)
        if status is not None:
            found[instance.name] = status
    return found
