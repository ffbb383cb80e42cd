"""Time conditions (SPEC section 10): ``advance(state, now)`` applies the timers that are due.

An unstarted instance can hold one timer (its entry in the due index is
``TIMER``, see :mod:`triggers_core.engine.leases`):

* ``delayedUntil``: it is ready, and its task has ``delay``. When the time
  comes it is scheduled (or abandoned, should its ``unless`` hold; or failed,
  if it is deeper in cascades than allowed). Until then it records ``unless``
  fires like any waiting instance, and an ``unless`` that holds abandons it.
* ``delayedUntil`` with ``retryCooldown``: it is the clone of a run that asked
  to retry after a cooldown (:func:`~triggers_core.engine.recovery.cooling`).
  When the time comes it is scheduled (or abandoned, should its ``unless``
  hold), without the checks a first run passes (its ``delay`` was served and
  its cascade depth allowed already).
* ``deadline``: its ``within`` window is open. When the deadline passes
  before its ``after`` condition is met it *expires*
  (:func:`~triggers_core.engine.fire.expire`): ``expired``, its task's
  ``onMiss`` trigger fires in the same transition, and a new empty instance
  waits for the next window.

A deadline and a delay are fixed when set (the instance's metadata holds the
time, never the duration), so ``update_configuration`` never moves them.
``advance`` is idempotent: a timer applied is gone from the instance's due
entry (it is no longer unstarted, or has no due time any more), so applying the
same time again changes nothing, and of several processes that race to apply
one timer the compare-and-swap lets exactly one win.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from triggers_core.engine.fire import delayed, expire, missing_of, too_deep
from triggers_core.engine.leases import RETRY_COOLDOWN, timer_of
from triggers_core.engine.scopes import Scope, Selector, fire_needs, task_of
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.engine.transition import (
    DEFAULT_MAX_CASCADE_DEPTH,
    Builder,
    Transition,
    cascade_depth_of,
    schedule,
    set_status,
)

__all__ = ["advance", "due_timers", "missing_of", "next_timer", "timer_scope"]


def due_timers(
    state: SessionState, now: datetime, only: Collection[str] | None = None
) -> list[tuple[datetime, str]]:
    """``(due time, name)`` of the loaded instances whose timer is due at ``now``, in order."""
    found = []
    for name, instance in state.instances.items():
        if only is not None and name not in only:
            continue
        at = timer_of(instance)
        if at is not None and at <= now:
            found.append((at, name))
    found.sort()
    return found


def next_timer(state: SessionState) -> datetime | None:
    """The earliest timer of the loaded instances (due or not), or None."""
    times = [at for i in state.instances.values() if (at := timer_of(i)) is not None]
    return min(times, default=None)


def _apply(b: Builder, instance: TaskInstance) -> None:
    task = b.tasks.get(instance.task_name)
    if task is None:
        return  # not configured: nothing to apply it with (left as it is)
    if "delayedUntil" in instance.metadata or task.is_ready(instance.kwargs):
        if task.unless and task.is_abandoned_by(instance.unless_fired):
            b.put(set_status(instance, Status.ABANDONED, b.ts))
        elif RETRY_COOLDOWN in instance.metadata:
            schedule(b, task, instance)  # a retry's cooldown ended
        elif cascade_depth_of(instance) > b.max_cascade_depth:
            b.put(too_deep(b, instance))
        elif "delayedUntil" not in instance.metadata and task.delay is not None:
            b.put(delayed(b, task, instance))
        else:
            schedule(b, task, instance)
        return
    expire(b, task, instance)


def advance(
    state: SessionState,
    now: datetime,
    *,
    only: Collection[str] | None = None,
    max_cascade_depth: int = DEFAULT_MAX_CASCADE_DEPTH,
) -> Transition:
    """Apply every timer of the loaded instances due at ``now``, oldest first.

    With ``only``, just the timers of those instances (a sweeper that found
    them in the due index). Windows that closed expire (and fire their
    ``onMiss``), delays and retry cooldowns that ended schedule their instances. A state with
    nothing due gives a transition that changes nothing (``commit`` False).

    Cost: one pass over the loaded instances, plus the fires of the ``onMiss``
    triggers of the windows that closed.
    """
    b = Builder(state, now, max_cascade_depth)
    for at, name in due_timers(state, now, only):
        instance = b.instances[name]  # as earlier steps left it
        if instance.status is Status.UNSTARTED and timer_of(instance) == at:
            _apply(b, instance)
    if not b.changed:
        return Transition(state, commit=False)
    return b.build()


def timer_scope(name: str) -> Selector:
    """What ``advance(..., only={name})`` needs: the instance, the unstarted instances of
    its task, and what a fire of the task's ``onMiss`` trigger needs."""
    task_name = task_of(name)
    own = Scope(names=frozenset((name,)), unstarted_of=frozenset((task_name,)))

    def select(header: SessionState) -> Scope:
        task = header.tasks.get(task_name)
        if task is None or task.on_miss is None:
            return own
        return own | fire_needs(header, task.on_miss)

    return select
