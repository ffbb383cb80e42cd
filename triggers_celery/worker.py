"""Worker side: turn a received message into ``manager.run_instance(name)``.

The worker rebuilds the manager class from its registry key and the storage
from its *own* settings (see :mod:`triggers_celery.storages`: a message names a
configured storage, anything else is refused and logged), then runs the
instance exactly as the in-process runner does: mark it ``running``, call the
trigger task, commit finished-with-cascade / failed / skipped / retried, and
dispatch what that scheduled (through this worker's app). An instance that ends
``failed`` fails the Celery task too, so Celery's own log line says so. A
worker that cannot build the manager class or the task fails the instance with
a hint (:mod:`triggers_celery.worker_setup`).

An ``async def`` body runs to completion on the event loop of the thread that
runs it: with the prefork pool, one loop per pool process, reused by its
later async bodies (:mod:`triggers_core.runtime.body_loop`). Its lease is
renewed while it runs, and a soft time limit cancels it (it sees
``CancelledError`` at its current ``await``) and ends the instance ``failed``
with ``SoftTimeLimitExceeded``, as a synchronous body; a hard time limit kills
the pool process as for any body. Async bodies are tested with the prefork
pool (and the threading runner), not with the ``gevent`` or ``eventlet`` pools.

Delivery is at least once, so a message may arrive for an instance that is no
longer ``scheduled`` (a redelivery after a lost ack, a duplicate publish, an
operator who already replayed it). ``run_instance`` refuses such an instance
before running anything; the message is acknowledged and ignored with a log
line, except for an instance ``running`` under an *expired* lease (the pool
process that ran it died), which is taken over per its task's ``on_lost``
policy (:func:`take_over_if_lost`). Trigger tasks are ``acks_late`` with
``reject_on_worker_lost``: the message of a pool process that died goes back
to the queue, so an instance that had not started yet runs. A trigger task
retries by raising ``self.retry(...)``, which fails the instance and schedules
a new one.

Celery's retry is used for one thing only: when the storage fails transiently
(a :class:`~triggers_core.errors.StorageError`: the database restarts, the
network blips) *before* the instance is marked ``running``, nothing has run,
so the message itself is retried with jittered exponential backoff (settings
:data:`STORAGE_RETRY_MAX_SETTING`, :data:`STORAGE_RETRY_BACKOFF_SETTING`,
:data:`STORAGE_RETRY_BACKOFF_MAX_SETTING`). A storage error *after* the
instance started (its outcome could not be committed) is not retried: the task
has run, the instance stays ``running`` until its lease expires and a sweeper
takes it over (:mod:`triggers_celery.sweeper`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from triggers_celery.errors import (
    InstanceFailedError,
    MessageError,
    StorageResolutionError,
    StorageUnavailableError,
    TriggersCeleryError,
    WorkerSetupError,
)
from triggers_celery.message import TaskMessage
from triggers_celery.runner import live_storage
from triggers_celery.storages import open_configured_storage
from triggers_celery.worker_setup import build_manager, message_logger, worker_default_runner
from triggers_core.engine.leases import lease_owner
from triggers_core.engine.state import Status, TaskInstance
from triggers_core.errors import (
    DispatchError,
    InvalidTransitionError,
    RegistryError,
    SchemaMissingError,
    StorageError,
    UnknownInstanceError,
    UnsupportedOperationError,
)
from triggers_core.runtime.body_loop import interrupt_on
from triggers_core.runtime.manager import TriggerManager
from triggers_core.runtime.recovery import CLAIM_SECONDS
from triggers_core.runtime.redaction import redact
from triggers_core.runtime.storage import Storage

__all__ = [
    "DEFAULT_STORAGE_RETRY_BACKOFF",
    "DEFAULT_STORAGE_RETRY_BACKOFF_MAX",
    "DEFAULT_STORAGE_RETRY_MAX",
    "STORAGE_RETRY_BACKOFF_MAX_SETTING",
    "STORAGE_RETRY_BACKOFF_SETTING",
    "STORAGE_RETRY_MAX_SETTING",
    "TriggerCeleryTask",
    "execute_message",
    "is_transient_storage_error",
    "run_message",
    "storage_retry_countdown",
    "storage_retry_max",
    "take_over_if_lost",
    "worker_default_runner",
]

log = logging.getLogger(__name__)

# An ``async def`` body runs on its pool process's (or pool thread's) own event loop
# (triggers_core.runtime.body_loop). Celery raises a soft time limit from a signal
# handler wherever the process is: in the body, in the loop's code, or in a loop
# callback, where asyncio would only log it. Registered here, it cancels the body and
# becomes the run's outcome wherever it lands, as for a synchronous body.
interrupt_on(SoftTimeLimitExceeded)

#: Celery setting: how many times a message is retried after transient storage errors.
STORAGE_RETRY_MAX_SETTING = "triggers_storage_retry_max"
#: Celery setting: the first retry's delay in seconds (doubled at each retry, then jittered).
STORAGE_RETRY_BACKOFF_SETTING = "triggers_storage_retry_backoff"
#: Celery setting: the longest delay between two retries, in seconds.
STORAGE_RETRY_BACKOFF_MAX_SETTING = "triggers_storage_retry_backoff_max"
DEFAULT_STORAGE_RETRY_MAX = 10
DEFAULT_STORAGE_RETRY_BACKOFF = 1.0
DEFAULT_STORAGE_RETRY_BACKOFF_MAX = 60.0

#: Storage errors that retrying cannot fix (missing tables need an operator).
_PERMANENT_STORAGE_ERRORS: tuple[type[StorageError], ...] = (SchemaMissingError,)


class TriggerCeleryTask(Task):  # type: ignore[misc] # celery ships no type information
    """Base class of the Celery tasks that :func:`~triggers_celery.bind_tasks` creates.

    One subclass per trigger task, named after it (``trigger_task_name``).
    Messages are JSON; ``acks_late`` is on by default because redelivery is
    harmless (see the module docstring) and rescues a message whose worker died
    before it started the instance.
    """

    #: The trigger task (``run`` in configurations) this Celery task runs.
    trigger_task_name: str = ""
    serializer = "json"
    acks_late = True
    #: A message whose pool process died (``WorkerLostError``: killed, out of memory)
    #: goes back to the queue instead of being acknowledged: redelivered, it runs an
    #: instance still ``scheduled``, takes over one ``running`` under an expired lease,
    #: and is dropped for one ``running`` under a live lease (a sweeper takes that
    #: over when its lease expires).
    reject_on_worker_lost = True
    #: Failures the worker has already logged with their explanation (and recorded
    #: on the instance when it could): Celery reports the task as failed with one
    #: "raised expected" line instead of a second traceback.
    throws = (
        InstanceFailedError,
        WorkerSetupError,
        StorageResolutionError,
        MessageError,
        UnknownInstanceError,
    )


def is_transient_storage_error(exc: BaseException) -> bool:
    """True for a storage error that may go away by itself (server down, timeout, contention).

    :class:`~triggers_core.errors.SchemaMissingError` is not transient, and
    neither is anything that is not a :class:`~triggers_core.errors.StorageError`
    (an unknown instance, a malformed stored document, a bad storage name).
    """
    return isinstance(exc, StorageError) and not isinstance(exc, _PERMANENT_STORAGE_ERRORS)


def _number(conf: Mapping[str, Any] | None, setting: str, default: float) -> float:
    raw = conf.get(setting) if conf is not None else None
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
        raise TriggersCeleryError(
            f"the Celery setting {setting!r} must be a number >= 0, got {raw!r}"
        )
    return float(raw)


def storage_retry_max(conf: Mapping[str, Any] | None) -> int:
    """How many times a message is retried after transient storage errors (setting or 10)."""
    return int(_number(conf, STORAGE_RETRY_MAX_SETTING, DEFAULT_STORAGE_RETRY_MAX))


def storage_retry_countdown(conf: Mapping[str, Any] | None, retries: int) -> float:
    """Seconds before retry number ``retries + 1``: jittered exponential backoff.

    The ceiling ``min(backoff_max, backoff * 2**retries)`` doubles at each retry;
    the delay is drawn uniformly between half the ceiling and the ceiling, so
    workers that lost the database together do not all come back at once.
    """
    base = _number(conf, STORAGE_RETRY_BACKOFF_SETTING, DEFAULT_STORAGE_RETRY_BACKOFF)
    cap = _number(conf, STORAGE_RETRY_BACKOFF_MAX_SETTING, DEFAULT_STORAGE_RETRY_BACKOFF_MAX)
    ceiling = min(cap, base * 2.0 ** min(retries, 64))
    return random.uniform(ceiling / 2, ceiling)


def run_message(
    self: TriggerCeleryTask, *, manager: str, storage: str, session: str, instance: str
) -> dict[str, Any]:
    """The body of every bound trigger task (``self`` is the Celery task).

    A :class:`~triggers_celery.errors.StorageUnavailableError` (the storage
    failed before the instance started) retries the message with backoff, up
    to the ``triggers_storage_retry_max`` setting, except in eager mode where
    the caller gets the error at once. An instance that ends ``failed`` makes
    the Celery task fail too (:class:`~triggers_celery.errors.InstanceFailedError`),
    so the worker's log line, events and result say so; not in eager mode,
    where the caller reads the instance's status.
    """
    request = self.request
    try:
        message = TaskMessage(manager=manager, storage=storage, session=session, instance=instance)
    except MessageError as exc:
        log.error("refused a trigger task message for %s: %s", self.name, exc)
        raise
    eager = bool(request.is_eager)
    try:
        summary = execute_message(
            self.app,
            message,
            eager=eager,
            celery_task_id=request.id,
            worker=request.hostname,
        )
    except StorageUnavailableError as exc:
        if eager:
            raise
        logger = message_logger(message, request.id)
        cause = exc.__cause__ or exc
        retries = int(request.retries or 0)
        max_retries = storage_retry_max(self.app.conf)
        if retries >= max_retries:
            logger.error(
                "giving up on %s of session %r after %d retries: the storage is still "
                "unavailable (%s); the instance stays scheduled until a sweeper sends it "
                "again (after the dispatch lease)",
                instance,
                session,
                retries,
                cause,
            )
            raise
        countdown = storage_retry_countdown(self.app.conf, retries)
        logger.warning(
            "storage unavailable before %s of session %r started (%s); retrying the message "
            "in %.2fs (retry %d of %d)",
            instance,
            session,
            cause,
            countdown,
            retries + 1,
            max_retries,
        )
        raise self.retry(exc=exc, countdown=countdown, max_retries=max_retries) from exc
    if summary.get("status") == Status.FAILED.value and not eager:
        raise InstanceFailedError(
            message.instance, message.session, str(summary.get("exceptionType") or "an error")
        )
    return summary


def execute_message(
    app: Any,
    message: TaskMessage,
    *,
    eager: bool = False,
    celery_task_id: str | None = None,
    worker: str | None = None,
) -> dict[str, Any]:
    """Run the instance a message names; return a small JSON summary.

    The summary's ``status`` is the instance's status afterwards (with its
    ``exceptionType`` when ``failed``), or ``"ignored"`` when the instance was
    no longer scheduled.

    The storage is resolved from the worker's own settings only
    (:func:`~triggers_celery.storages.open_configured_storage`); a storage the
    worker does not know is refused with
    :class:`~triggers_celery.errors.StorageResolutionError` and logged.
    A manager class this worker cannot build fails the instance (when the
    storage is reachable) and raises :class:`~triggers_celery.errors.WorkerSetupError`.

    A transient storage error before the instance started (while opening the
    storage or marking it ``running``) is raised as
    :class:`~triggers_celery.errors.StorageUnavailableError`: nothing ran and
    the message may be run again. Any error after the instance started is
    raised as it is; the instance then stays ``running``.
    """
    logger = message_logger(message, celery_task_id)
    summary: dict[str, Any] = {"session": message.session, "instance": message.instance}
    started: list[TaskInstance] = []  # filled once the instance is committed as running
    try:
        storage = live_storage() if eager else None
        if storage is None:
            storage = _open_storage(app, message, logger)
        manager = build_manager(app, storage, message, logger, worker)
        logger.info("running %s of session %r", message.instance, message.session)
        # Messages arrive at least once: the finish records its cascade (see
        # TriggerManager.run_instance), so a duplicated completion never cascades twice.
        outcome = manager.run_instance(
            message.instance,
            on_started=started.append,
            guard_cascade=True,
            worker=_worker_info(worker, celery_task_id),
        )
    except UnknownInstanceError:
        logger.error(
            "session %r has no instance %s in storage %r: does this worker's storage "
            "setting point at the database the sender uses?",
            message.session,
            message.instance,
            redact(message.storage),
        )
        raise
    except DispatchError as exc:
        # The instance's outcome is committed; a cascade could not be sent and is
        # recorded as failed (replayable). Nothing to redo here, so do not raise.
        logger.error("%s ran, but dispatching what it scheduled failed: %s", message.instance, exc)
        summary.update(
            status=manager.storage[message.instance].status.value, dispatchError=str(exc)
        )
        return summary
    except StorageError as exc:
        if started:
            logger.error(
                "%s of session %r ran, but the storage failed before its outcome was "
                "recorded (%s); not retrying: the instance stays running until its lease "
                "expires, then a sweeper takes it over",
                message.instance,
                message.session,
                exc,
            )
        elif is_transient_storage_error(exc):  # nothing ran: the message may run again
            raise StorageUnavailableError(exc, instance=message.instance) from exc
        raise
    if outcome is None:
        taken = take_over_if_lost(manager, message.instance)
        if taken is not None:
            logger.warning(
                "%s of session %r was running under an expired lease (its worker died): "
                "taken over, now %s",
                message.instance,
                message.session,
                taken.status.value,
            )
            summary["status"] = "taken over"
            return summary
        logger.info("ignored the message for %s: it is no longer scheduled", message.instance)
        summary["status"] = "ignored"
        return summary
    logger.info("%s ended %s", message.instance, outcome.status.value)
    summary["status"] = outcome.status.value
    if outcome.status is Status.FAILED:
        summary["exceptionType"] = outcome.metadata.get("exceptionType")
    return summary


def _worker_info(worker: str | None, celery_task_id: str | None) -> dict[str, str]:
    """What a lease records about this run beyond host and pid: the node and the Celery task."""
    info = {}
    if worker:
        info["node"] = worker
    if celery_task_id:
        info["celeryTaskId"] = celery_task_id
    return info


def take_over_if_lost(manager: TriggerManager, name: str) -> TaskInstance | None:
    """Take ``name`` over if it is ``running`` under an expired lease; else None.

    What a redelivered message does for an instance whose worker died (the
    message came back because the pool process running it was lost): the run
    is lost, so the instance is failed (``WorkerLost``) and replayed per its
    task's ``on_lost`` policy, as a sweeper would. Under a live lease the
    instance belongs to the run that holds it and nothing changes. The lease
    is claimed first (compare-and-swap), so a sweeper racing this acts once.
    Costs one instance read and one lease read.
    """
    try:
        manager.storage.check_leases()
    except UnsupportedOperationError:
        return None
    instance = manager.storage.get_instance(name)
    owner = lease_owner(instance)
    if instance.status is not Status.RUNNING or owner is None:
        return None
    lease = manager.storage.get_lease(name)
    now = manager.now()
    if lease is None or lease.owner != owner or lease.at > now:
        return None
    claimed = manager.storage.claim_lease(
        name, owner, lease.at, now + timedelta(seconds=CLAIM_SECONDS)
    )
    if not claimed:
        return None
    try:
        return manager.take_over_instance(name, owner)
    except (InvalidTransitionError, UnknownInstanceError):
        return None  # it moved on meanwhile


def _open_storage(
    app: Any, message: TaskMessage, logger: logging.LoggerAdapter[logging.Logger]
) -> Storage:
    """The configured storage the message names; a refusal is logged (without secrets)."""
    try:
        return open_configured_storage(app.conf, message.storage, message.session)
    except StorageResolutionError as exc:
        logger.error(
            "refused the message for %s of session %r: %s",
            message.instance,
            message.session,
            exc,
        )
        raise
    except (RegistryError, ImportError) as exc:  # a broken entry in this worker's settings
        logger.error(
            "%s of session %r cannot run here: this worker cannot open its storage %r "
            "(%s: %s); fix the worker's storage settings or install the backend's extra",
            message.instance,
            message.session,
            redact(message.storage),
            type(exc).__name__,
            redact(str(exc)),
        )
        raise
