"""What a worker does when it lacks what a message needs, and the checks it runs at start.

A message can reach a worker that cannot act on it: the manager class is
registered only in the web process, the trigger task is not bound on this
worker, the storage name is not configured here or is ``memory://``. None of
these may leave the instance silently ``scheduled``:

* when the worker can reach the storage, it marks the instance ``failed`` with
  a :class:`~triggers_celery.errors.WorkerSetupError` saying what to register
  where (replay it once the worker is fixed);
* when it cannot, it logs the same explanation.

:func:`watch_app` (called by :func:`~triggers_celery.bind_tasks`) installs the
worker-wide parts: Celery's "unregistered task" signal, and a check of the
configured storages when a worker starts.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from celery import signals

from triggers_celery.errors import StorageResolutionError, WorkerSetupError
from triggers_celery.message import MESSAGE_FIELDS, TaskMessage
from triggers_celery.runner import CeleryTaskRunner
from triggers_celery.storages import configured_storages, open_configured_storage, seal_storages
from triggers_core.runtime.manager import TriggerManager, managers
from triggers_core.runtime.redaction import redact
from triggers_core.runtime.registry import STORAGE_URL_ENV, storage_scheme
from triggers_core.runtime.runners import ThreadingTaskRunner
from triggers_core.runtime.storage import Storage

__all__ = [
    "build_manager",
    "fail_unstarted",
    "message_logger",
    "watch_app",
    "worker_default_runner",
]

log = logging.getLogger("triggers_celery.worker")


def worker_default_runner(manager_cls: type[TriggerManager]) -> str:
    """The default runner of a manager rebuilt on a worker.

    The class's own :attr:`~triggers_core.TriggerManager.default_runner`, except
    that the core default (``threading``) becomes ``celery``: an instance a
    worker schedules (a cascade, a retry) belongs on the broker, not in a
    thread of whichever worker happened to run its predecessor.
    """
    default = manager_cls.default_runner
    return CeleryTaskRunner.name if default == ThreadingTaskRunner.name else default


def message_logger(
    message: TaskMessage, celery_task_id: str | None
) -> logging.LoggerAdapter[logging.Logger]:
    """The worker's logger, with the message's session, instance and storage as context."""
    context = {
        "session": message.session,
        "instance": message.instance,
        "storage": redact(message.storage),
        "celery_task_id": celery_task_id,
    }
    return logging.LoggerAdapter(log, {"context": context})


_MANAGER_HINT = (
    "register the manager class in a module this worker imports (the module that creates "
    "the Celery app, or one in its 'imports' setting) with "
    "triggers_core.managers.register(key, cls), or through the 'triggers.managers' entry "
    "point; then replay the instance"
)
_TASK_HINT = (
    "define the trigger task in a module this worker imports (the module that creates the "
    "Celery app, or one in its 'imports' setting) and bind it with "
    "triggers_celery.bind_tasks(app); then replay the instance"
)


def build_manager(
    app: Any,
    storage: Storage,
    message: TaskMessage,
    logger: logging.LoggerAdapter[logging.Logger],
    worker: str | None,
) -> TriggerManager:
    """The manager the message names, on ``storage``; if this worker cannot build it,
    the instance is failed with a hint and :class:`WorkerSetupError` is raised."""
    try:
        manager_cls = managers.load(message.manager)
        return manager_cls(
            storage,
            runners={CeleryTaskRunner.name: CeleryTaskRunner(app)},
            default_runner=worker_default_runner(manager_cls),
        )
    except Exception as exc:
        error = WorkerSetupError(
            f"worker {worker or '(unnamed)'} cannot build the trigger manager "
            f"{message.manager!r}: {type(exc).__name__}: {redact(str(exc))}; {_MANAGER_HINT}"
        )
        fail_unstarted(app, storage, message, error, logger=logger, worker=worker)
        raise error from None


def fail_unstarted(
    app: Any,
    storage: Storage,
    message: TaskMessage,
    error: WorkerSetupError,
    *,
    logger: logging.LoggerAdapter[logging.Logger],
    worker: str | None,
) -> None:
    """Mark the instance ``failed`` with ``error``, or log why that was not possible."""
    try:
        recorder = TriggerManager(
            storage, runners={CeleryTaskRunner.name: CeleryTaskRunner(app)}, default_runner="celery"
        )
        failed = recorder.fail_unstarted_instance(
            message.instance, error, context={"worker": worker or "(unnamed)"}
        )
    except Exception as exc:
        logger.error(
            "%s of session %r cannot run here: %s; it could not be marked failed either (%s)",
            message.instance,
            message.session,
            error,
            redact(str(exc)),
        )
        return
    if failed is not None:
        logger.error("marked %s of session %r failed: %s", message.instance, message.session, error)
    else:
        logger.error(
            "%s of session %r cannot run here (%s), but it is no longer scheduled",
            message.instance,
            message.session,
            error,
        )


# -- worker-wide hooks ---------------------------------------------------------------

_WATCHED: weakref.WeakSet[Any] = weakref.WeakSet()
_WATCH_LOCK = threading.Lock()
_connected = False


def watch_app(app: Any) -> None:
    """Install the worker-side checks for ``app`` (called by ``bind_tasks``).

    * its ``triggers_storages`` setting is sealed (:func:`~triggers_celery.storages.seal_storages`);
    * when a worker of ``app`` starts, its storages are checked: ``memory://`` is
      refused with an error, and a worker without storages says so;
    * a message for a trigger task this worker has not bound (Celery's
      "unregistered task") fails its instance with a hint, instead of leaving
      it ``scheduled``.
    """
    global _connected  # noqa: PLW0603 - the signal handlers are connected once per process
    seal_storages(app.conf)
    with _WATCH_LOCK:
        _WATCHED.add(app)
        if not _connected:
            signals.worker_init.connect(_on_worker_init, weak=False)
            signals.task_unknown.connect(_on_unknown_task, weak=False)
            _connected = True


def _watched_app(sender: Any) -> Any:
    app = getattr(sender, "app", None)
    with _WATCH_LOCK:
        return app if app is not None and app in _WATCHED else None


def _on_worker_init(sender: Any = None, **_kwargs: Any) -> None:
    app = _watched_app(sender)
    if app is None:
        return
    try:
        seal_storages(app.conf)
        configured = configured_storages(app.conf)
    except StorageResolutionError as exc:
        log.error("trigger storages: %s", exc)
        return
    if not configured:
        log.warning(
            "this worker has no trigger storages: set the Celery setting %r or %s; every "
            "trigger task message will be refused",
            "triggers_storages",
            STORAGE_URL_ENV,
        )
    for name, url in sorted(configured.items()):
        if storage_scheme(url) == "memory":
            log.error(
                "storage %r is memory://, which lives inside one process: this worker refuses "
                "its messages. Configure a storage the senders and workers share "
                "(sqlite:///path/shared.db, postgresql+psycopg://...)",
                name,
            )


def _on_unknown_task(
    sender: Any = None,
    message: Any = None,
    name: str | None = None,
    id: str | None = None,
    **_: Any,
) -> None:
    """Celery received a message for a task it does not know: fail a trigger instance."""
    app = _watched_app(sender)
    if app is None or message is None:
        return
    try:
        payload = message.payload
        kwargs = payload[1] if isinstance(payload, list | tuple) and len(payload) > 1 else None
        if not isinstance(kwargs, Mapping) or set(kwargs) != set(MESSAGE_FIELDS):
            return  # not a trigger task message
        trigger = TaskMessage.from_kwargs(kwargs)
    except Exception:  # not ours, or malformed: Celery has logged it already
        return
    worker = getattr(sender, "hostname", None)
    logger = message_logger(trigger, id)
    error = WorkerSetupError(
        f"worker {worker or '(unnamed)'} has no Celery task {name!r} for trigger task "
        f"{name!r}; {_TASK_HINT}"
    )
    try:
        storage = open_configured_storage(app.conf, trigger.storage, trigger.session)
    except Exception as exc:
        logger.error(
            "%s of session %r cannot run here: %s; it could not be marked failed (%s)",
            trigger.instance,
            trigger.session,
            error,
            redact(str(exc)),
        )
        return
    fail_unstarted(app, storage, trigger, error, logger=logger, worker=worker)
