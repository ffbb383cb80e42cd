"""Lifecycle log records: one per event, with the session and instance as ``extra`` fields.

Everything that happens to a session is logged through the ``triggers.lifecycle``
logger, one record per event, after the state change is stored:

=========================  =======  =====================================================
event                      level    ``extra`` fields (besides ``session``)
=========================  =======  =====================================================
a trigger fired            INFO     ``trigger``, ``scheduled`` (instance names, in order)
a duplicate fire (a key    INFO     ``trigger``, ``scheduled`` (what the first fire
already used; nothing               scheduled), ``duplicate`` (True)
changed)
a cascade not repeated     INFO     ``instance``, ``trigger``, ``scheduled`` (what the
(the instance cascaded              first cascade scheduled), ``duplicate`` (True)
once already)
an instance was scheduled  DEBUG    ``instance``, ``status``, ``runner``
an instance started        INFO     ``instance``, ``status``
it finished                INFO     ``instance``, ``status``
it skipped itself / was    INFO     ``instance``, ``status``
skipped by an operator
it was replayed (by an     INFO     ``instance``, ``status``, ``clone``
operator or ``retry``)
it was abandoned           INFO     ``instance``, ``status``
it failed                  ERROR    ``instance``, ``status`` (with the traceback, once)
a runner refused it        ERROR    ``instance``, ``status`` (with the traceback)
=========================  =======  =====================================================

``session`` is the session UID. Duplicate fires are logged without their
kwargs or their idempotency key. A failure's traceback is logged once: by the
task's own logger when the exception left a ``context.get_logger_context()``
block (which logs it with the task's context), otherwise by the ``failed``
record here.
"""

from __future__ import annotations

import logging
from typing import Any

from triggers_core.engine import MAX_RETRIES_EXCEEDED_TYPE, Transition
from triggers_core.engine.effects import (
    DuplicateFire,
    InstanceReplayed,
    InstanceSkipped,
    ScheduleInstance,
    TriggerFired,
)
from triggers_core.engine.state import Status, TaskInstance
from triggers_core.runtime.tasks import mark_traceback_logged, traceback_was_logged

__all__ = [
    "LIFECYCLE_LOGGER",
    "log_action",
    "log_failure",
    "log_outcome",
    "log_started",
    "log_transition",
]

#: The logger every lifecycle record goes through.
LIFECYCLE_LOGGER = "triggers.lifecycle"


def _extra(session: str, instance: str | None = None, **fields: Any) -> dict[str, Any]:
    extra: dict[str, Any] = {"session": session}
    if instance is not None:
        extra["instance"] = instance
    extra.update(fields)
    return extra


def log_action(
    logger: logging.Logger,
    session: str,
    action: str,
    *,
    instance: str,
    actor: str | None,
    status: str,
) -> None:
    """An operator's action on an instance (replay, skip, fail, forced status), with who did it.

    INFO, with the ``extra`` fields ``session``, ``instance``, ``status``,
    ``action`` and ``actor`` (None when the caller did not say).
    """
    logger.info(
        "session %r: %s %s by %s",
        session,
        instance,
        action,
        actor or "an unnamed operator",
        extra=_extra(session, instance, status=status, action=action, actor=actor),
    )


def log_transition(logger: logging.Logger, session: str, transition: Transition) -> None:
    """Log the events of a committed transition: fires, replays, skips, abandons, schedules.

    Records come in the order of the engine's effects, except that the DEBUG
    ``scheduled`` records follow the operation that scheduled the instances.
    Every record here is INFO or DEBUG: with INFO off (the default of an
    unconfigured ``logging``) nothing is built at all.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    instances = transition.state.instances
    for effect in transition.effects:
        if isinstance(effect, TriggerFired):
            logger.info(
                "session %r: %s fired, scheduled %s",
                session,
                effect.trigger_name,
                ", ".join(effect.scheduled) or "nothing",
                extra=_extra(
                    session, trigger=effect.trigger_name, scheduled=list(effect.scheduled)
                ),
            )
        elif isinstance(effect, InstanceReplayed):
            logger.info(
                "session %r: %s replayed as %s",
                session,
                effect.instance_name,
                effect.clone_name,
                extra=_extra(
                    session,
                    effect.instance_name,
                    status=Status.REPLAYED.value,
                    clone=effect.clone_name,
                ),
            )
        elif isinstance(effect, DuplicateFire):
            _log_duplicate(logger, session, effect)
        elif isinstance(effect, InstanceSkipped):
            logger.info(
                "session %r: %s skipped by an operator%s",
                session,
                effect.instance_name,
                " (cascaded)" if effect.cascade else "",
                extra=_extra(session, effect.instance_name, status=Status.SKIPPED.value),
            )
    for name in sorted(transition.changed):
        instance = instances.get(name)
        if instance is not None and instance.status is Status.ABANDONED:
            logger.info(
                "session %r: %s abandoned (its unless triggers fired)",
                session,
                name,
                extra=_extra(session, name, status=Status.ABANDONED.value),
            )
    for effect in transition.effects:
        if isinstance(effect, ScheduleInstance):
            logger.debug(
                "session %r: %s scheduled (runner %s)",
                session,
                effect.instance_name,
                effect.using or "default",
                extra=_extra(
                    session,
                    effect.instance_name,
                    status=Status.SCHEDULED.value,
                    runner=effect.using,
                ),
            )


def _log_duplicate(logger: logging.Logger, session: str, effect: DuplicateFire) -> None:
    first = ", ".join(effect.scheduled) or "nothing"
    fields: dict[str, Any] = {"trigger": effect.trigger_name, "scheduled": list(effect.scheduled)}
    if effect.instance_name is None:
        logger.info(
            "session %r: %s fired again with an idempotency key it already used: a "
            "duplicate, nothing changed (the first fire scheduled %s)",
            session,
            effect.trigger_name,
            first,
            extra=_extra(session, duplicate=True, **fields),
        )
    else:
        logger.info(
            "session %r: %s finished again; its cascade (%s) happened at its first "
            "finish and is not repeated (it scheduled %s)",
            session,
            effect.instance_name,
            effect.trigger_name,
            first,
            extra=_extra(session, effect.instance_name, duplicate=True, **fields),
        )


def log_started(logger: logging.Logger, session: str, instance: TaskInstance) -> None:
    """Log that ``instance`` is committed as running."""
    logger.info(
        "session %r: %s started",
        session,
        instance.name,
        extra=_extra(session, instance.name, status=instance.status.value),
    )


def log_failure(
    logger: logging.Logger, session: str, name: str, exc: BaseException, detail: str | None = None
) -> None:
    """Log that ``name`` failed with ``exc``; with its traceback unless that was logged already."""
    logged = traceback_was_logged(exc)
    logger.error(
        "session %r: %s failed: %s%s",
        session,
        name,
        detail or f"{type(exc).__name__}: {exc}",
        " (traceback logged by the task's logger)" if logged else "",
        exc_info=None if logged else exc,
        extra=_extra(session, name, status=Status.FAILED.value),
    )
    mark_traceback_logged(exc)


def log_outcome(logger: logging.Logger, session: str, instance: TaskInstance) -> None:
    """Log how a run ended, for outcomes :func:`log_failure` and replays do not cover."""
    extra = _extra(session, instance.name, status=instance.status.value)
    if instance.status is Status.FINISHED:
        logger.info("session %r: %s finished", session, instance.name, extra=extra)
    elif instance.status is Status.SKIPPED:
        logger.info("session %r: %s skipped itself", session, instance.name, extra=extra)
    elif (
        instance.status is Status.FAILED
        and instance.metadata.get("exceptionType") == MAX_RETRIES_EXCEEDED_TYPE
    ):
        logger.error(
            "session %r: %s failed: it asked to retry after %d retries (max_retries reached)",
            session,
            instance.name,
            instance.retries,
            extra=extra,
        )
