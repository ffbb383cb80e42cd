"""The shell core of running one instance: start it, run its body, commit its outcome, cascade.

The decisions of ``run_instance`` (see
:meth:`TriggerManager.run_instance <triggers_core.runtime.manager.TriggerManager.run_instance>`)
as a generator of requests (:mod:`triggers_core.runtime.shell`), so the
synchronous and the asynchronous manager run instances the same way: the
start under a lease where the storage keeps leases, the cascade guard, the
second try of an outcome the storage did not take, the failure that records
why an outcome could not be recorded, the refusal of an outcome whose lease
was taken over. Only the body call (:class:`RunBody`) and the lease renewal
(:class:`HoldLease`, :class:`ReleaseLease`) differ between the faces.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, cast

from triggers_core import engine
from triggers_core.engine.idempotency import FireKey, cascade_key
from triggers_core.engine.leases import DEFAULT_LEASE_SECONDS, Lease, lease_owner, run_key
from triggers_core.engine.scopes import Scope, Selector, instance_scope, task_of
from triggers_core.engine.state import SessionState, TaskInstance
from triggers_core.engine.transition import Transition
from triggers_core.errors import (
    ConcurrencyError,
    ConflictError,
    InvalidTransitionError,
    SerializationError,
    StorageError,
    UnsupportedOperationError,
)
from triggers_core.runtime.cascade_guard import guards_cascades_steps
from triggers_core.runtime.lifecycle import LIFECYCLE_LOGGER, log_outcome, log_started
from triggers_core.runtime.observe import current
from triggers_core.runtime.outcomes import NOT_THE_OUTCOME, Outcomes
from triggers_core.runtime.ports import SessionManager
from triggers_core.runtime.shell import CallHook, ShellHost, Steps, StorageCall, commit, perform
from triggers_core.runtime.storage import Snapshot
from triggers_core.runtime.tasks import TaskContext, task_policy

__all__ = [
    "HoldLease",
    "ReleaseLease",
    "RunBody",
    "keeps_leases_steps",
    "run_instance_steps",
]

lifecycle = logging.getLogger(LIFECYCLE_LOGGER)

#: This host's name, as leases record it.
_HOST = socket.gethostname()


class RunBody:
    """Run the task body; sent back the :data:`~triggers_core.runtime.outcomes.Compute`.

    ``args`` are those of :meth:`Outcomes.run_task` (name, run, context, guard).
    """

    __slots__ = ("args", "outcomes")

    def __init__(self, outcomes: Outcomes, *args: Any) -> None:
        self.outcomes, self.args = outcomes, args


class HoldLease:
    """Keep renewing the lease ``(name, owner, seconds)`` while the body runs.

    Sent back a handle for :class:`ReleaseLease`.
    """

    __slots__ = ("args",)

    def __init__(self, name: str, owner: str, seconds: float) -> None:
        self.args = (name, owner, seconds)


class ReleaseLease:
    """Stop renewing the lease held as ``held``."""

    __slots__ = ("held",)

    def __init__(self, held: Any) -> None:
        self.held = held


def keeps_leases_steps(host: Any) -> Steps[bool]:
    """True if the storage keeps leases (checked once per manager)."""
    keeps = host.__dict__.get("_leases")
    if keeps is None:
        try:
            yield StorageCall("check_leases")
        except UnsupportedOperationError:
            keeps = False
        else:
            keeps = True
        host.__dict__["_leases"] = keeps
    return bool(keeps)


def new_lease(host: ShellHost, seconds: float | None, worker: Mapping[str, Any] | None) -> Lease:
    """A lease for a run starting now: a fresh owner token, this process as the worker."""
    length = DEFAULT_LEASE_SECONDS if seconds is None else seconds
    return Lease(
        # 128 random bits from the process's generator (seeded from the OS, and again
        # in every forked child): unique per run, without a system call per instance.
        owner=f"{random.getrandbits(128):032x}",
        expires=host.now() + timedelta(seconds=length),
        seconds=length,
        worker={"host": _HOST, "pid": os.getpid(), **(worker or {})},
    )


def run_instance_steps(
    host: ShellHost,
    name: str,
    on_started: Callable[[TaskInstance], None] | None,
    guard_cascade: bool,
    worker: Mapping[str, Any] | None,
) -> Steps[TaskInstance | None]:
    """``run_instance``, observed (``run_begin``/``run_end``) when an observer watches."""
    watcher = current()
    if watcher is None:
        return (yield from _run(host, name, on_started, guard_cascade, worker))
    token = watcher.run_begin(host.uid, name)
    try:
        outcome = yield from _run(host, name, on_started, guard_cascade, worker)
    except BaseException as exc:
        watcher.run_end(token, None, exc)
        raise
    watcher.run_end(token, outcome, None)
    return outcome


def _run(
    host: ShellHost,
    name: str,
    on_started: Callable[[TaskInstance], None] | None,
    guard_cascade: bool,
    worker: Mapping[str, Any] | None,
) -> Steps[TaskInstance | None]:
    guard = guard_cascade and (yield from guards_cascades_steps(host.storage, host.uid))
    leased = yield from keeps_leases_steps(host)

    def start(state: SessionState) -> Transition:
        lease = None
        if leased:
            found = state.instances.get(name)
            task = state.tasks.get(found.task_name) if found is not None else None
            seconds = task_policy(task.run).lease_seconds if task is not None else None
            lease = new_lease(host, seconds, worker)
        return engine.mark_running(state, name, now=host.now(), lease=lease)

    # The start loads what the outcome's commit needs too (the cascade's instances, the
    # guard record): the snapshot it leaves is that commit's first attempt, so an outcome
    # committed while nothing else wrote the session costs no load of its own.
    key = cascade_key(task_of(name), name) if guard else None
    scope = instance_scope(name, cascade=True, guard=key)
    kept: list[Snapshot] = []
    try:
        started = yield from commit(host, start, scope, kept=kept)
    except InvalidTransitionError as exc:
        lifecycle.warning(
            "not running %s in session %r: %s",
            name,
            host.uid,
            exc,
            extra={"session": host.uid, "instance": name, "status": exc.status},
        )
        return None
    instance = started.state.instances[name]
    owner = lease_owner(instance) if leased else None
    held = None
    if owner is not None:
        seconds = instance.metadata.get("leaseSeconds", DEFAULT_LEASE_SECONDS)
        held = yield HoldLease(name, owner, float(seconds))
    try:
        outcome = yield from _run_started(
            host,
            instance,
            started=kept[0] if kept else None,
            state=started.state,
            on_started=on_started,
            key=key,
            owner=owner,
        )
    except GeneratorExit:
        raise
    except BaseException:
        if held is not None:
            yield ReleaseLease(held)
        raise
    if held is not None:
        yield ReleaseLease(held)
    return outcome


def _run_started(
    host: ShellHost,
    instance: TaskInstance,
    *,
    started: Snapshot | None,
    state: SessionState,
    on_started: Callable[[TaskInstance], None] | None,
    key: FireKey | None,
    owner: str | None,
) -> Steps[TaskInstance | None]:
    """Run the body of ``instance`` (committed ``running`` in ``state``) and commit its
    outcome; ``started``: the snapshot the start left (its first attempt computes on it)."""
    name, uid = instance.name, host.uid
    log_started(lifecycle, uid, instance)
    if on_started is not None:  # a request: never called holding the commit turn
        yield CallHook((on_started, (instance,)))
    config = state.tasks[instance.task_name]
    context = TaskContext(
        cast(SessionManager, host),
        trigger_kwargs=instance.metadata.get("actualKwargs", {}),
        instance_name=name,
        retries=instance.retries,
        logger=logging.getLogger(f"triggers.tasks.{config.run}"),
        run_key=f"{uid}#{run_key(instance)}",
    )
    if key is not None and key != cascade_key(instance.task_name, name):
        # A stored instance named apart from its task (never written by the engine): the
        # guard is keyed by its task, as always, and the start loaded another record.
        key, started = cascade_key(instance.task_name, name), None
    outcomes = Outcomes(
        uid,
        host.now,
        host.max_cascade_depth,
        owner,
        max_value_bytes=host.storage.max_value_bytes,
        max_timer_seconds=host.storage.max_timer_seconds,
    )
    scope = instance_scope(name, cascade=True, guard=key)
    try:
        try:
            compute = yield RunBody(outcomes, name, config.run, context, key is not None)
            # Stale if anything wrote the session meanwhile: then its compare-and-swap
            # fails like any other and the next attempt loads.
            transition = yield from commit(host, compute, scope, loaded=started, read=False)
        except (StorageError, SerializationError) as exc:
            if isinstance(exc, ConflictError | ConcurrencyError):
                raise
            transition = yield from _unwritable(
                host,
                config.run,
                exc=exc,
                outcomes=outcomes,
                context=context,
                outcome=(compute, scope),
            )
        except NOT_THE_OUTCOME:
            raise  # the storage or the instance, not the task's outcome: nothing to record
        except Exception as exc:
            # Second line of defence: run_task validates what it can before the
            # commit, but whatever the engine still refuses must not leave the
            # instance running.
            detail = f"{config.run}: its outcome could not be recorded: {exc}"
            compute = outcomes.failure(name, exc, detail, context)
            transition = yield from commit(host, compute, instance_scope(name, cascade=False))
    except InvalidTransitionError as exc:
        if owner is None:
            raise
        lifecycle.warning(
            "the outcome of %s in session %r was not recorded: %s",
            name,
            uid,
            exc,
            extra={"session": uid, "instance": name, "status": exc.status},
        )
        return None
    log_outcome(lifecycle, uid, transition.state.instances[name])
    watcher = current()
    if watcher is None or not transition.effects:
        yield from perform(host, transition)
        return transition.state.instances[name]
    token = watcher.cascade_begin(uid, transition)
    try:
        yield from perform(host, transition)
    except BaseException as exc:
        watcher.cascade_end(token, exc)
        raise
    watcher.cascade_end(token, None)
    return transition.state.instances[name]


def _unwritable(
    host: ShellHost,
    run: str,
    *,
    exc: StorageError | SerializationError,
    outcomes: Outcomes,
    context: TaskContext,
    outcome: tuple[Callable[[SessionState], Transition], Scope | Selector],
) -> Steps[Transition]:
    """The storage did not store an instance's outcome (``compute``): try once more
    (a passing fault, such as a dropped connection), then, if it is refused again (a
    row over the database's packet limit, a value it cannot hold), end the instance
    ``failed`` with that reason, so that it is never left ``running``. If the storage
    refuses that too (it is down), the error is raised as before (the lease, if any,
    then ends the run). Costs one more write of the outcome."""
    try:
        return (yield from commit(host, *outcome))
    except (StorageError, SerializationError) as again:
        if isinstance(again, ConflictError | ConcurrencyError):
            raise
        exc = again
    name = context.instance_name
    detail = f"{run}: its outcome could not be written to the storage: {exc}"
    failure = outcomes.failure(name, exc, detail, context)
    try:
        return (yield from commit(host, failure, instance_scope(name, cascade=False)))
    except Exception as second:
        raise exc from second
