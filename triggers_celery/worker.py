"""Worker side: turn a received message into ``manager.run_instance(name)``.

The worker rebuilds the manager class from its registry key and the storage
from its *own* settings (see :mod:`triggers_celery.storages`), then runs the
instance exactly as the in-process runner does: mark it ``running``, call the
trigger task, commit finished-with-cascade / failed / skipped / retried, and
dispatch what that scheduled (through this worker's app).

Delivery is at least once, so a message may arrive for an instance that is no
longer ``scheduled`` (a redelivery after a lost ack, a duplicate publish, an
operator who already replayed it). ``run_instance`` refuses such an instance
before running anything; the message is acknowledged and ignored with a log
line. Celery's own retry machinery is never used: a trigger task retries by
raising ``self.retry(...)``, which fails the instance and schedules a new one.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from triggers_celery.message import TaskMessage
from triggers_celery.runner import CeleryTaskRunner, live_storage
from triggers_celery.storages import open_message_storage
from triggers_core.errors import DispatchError, UnknownInstanceError
from triggers_core.manager import TriggerManager
from triggers_core.registry import managers
from triggers_core.runners import ThreadingTaskRunner

__all__ = ["TriggerCeleryTask", "execute_message", "run_message", "worker_default_runner"]

log = logging.getLogger(__name__)


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


def worker_default_runner(manager_cls: type[TriggerManager]) -> str:
    """The default runner of a manager rebuilt on a worker.

    The class's own :attr:`~triggers_core.TriggerManager.default_runner`, except
    that the core default (``threading``) becomes ``celery``: an instance a
    worker schedules (a cascade, a retry) belongs on the broker, not in a
    thread of whichever worker happened to run its predecessor.
    """
    default = manager_cls.default_runner
    return CeleryTaskRunner.name if default == ThreadingTaskRunner.name else default


def run_message(
    self: TriggerCeleryTask, *, manager: str, storage: str, session: str, instance: str
) -> dict[str, Any]:
    """The body of every bound trigger task (``self`` is the Celery task)."""
    message = TaskMessage(manager=manager, storage=storage, session=session, instance=instance)
    return execute_message(
        self.app, message, eager=bool(self.request.is_eager), celery_task_id=self.request.id
    )


def execute_message(
    app: Any, message: TaskMessage, *, eager: bool = False, celery_task_id: str | None = None
) -> dict[str, Any]:
    """Run the instance a message names; return a small JSON summary.

    The summary's ``status`` is the instance's status afterwards, or
    ``"ignored"`` when the instance was no longer scheduled.
    """
    context = {
        "session": message.session,
        "instance": message.instance,
        "storage": message.storage,
        "celery_task_id": celery_task_id,
    }
    logger = logging.LoggerAdapter(log, {"context": context})
    storage = live_storage() if eager else None
    if storage is None:
        storage = open_message_storage(app.conf, message.storage, message.session)
    manager_cls = managers.load(message.manager)
    manager = manager_cls(
        storage,
        runners={CeleryTaskRunner.name: CeleryTaskRunner(app)},
        default_runner=worker_default_runner(manager_cls),
    )
    summary: dict[str, Any] = {"session": message.session, "instance": message.instance}
    logger.info("running %s of session %r", message.instance, message.session)
    try:
        outcome = manager.run_instance(message.instance)
    except UnknownInstanceError:
        logger.error(
            "session %r has no instance %s in storage %s: does this worker's storage "
            "setting point at the database the sender uses?",
            message.session,
            message.instance,
            message.storage,
        )
        raise
    except DispatchError as exc:
        # The instance's outcome is committed; a cascade could not be sent and is
        # recorded as failed (replayable). Nothing to redo here, so do not raise.
        logger.error("%s ran, but dispatching what it scheduled failed: %s", message.instance, exc)
        summary.update(status=storage[message.instance].status.value, dispatchError=str(exc))
        return summary
    if outcome is None:
        logger.info("ignored the message for %s: it is no longer scheduled", message.instance)
        summary["status"] = "ignored"
        return summary
    logger.info("%s ended %s", message.instance, outcome.status.value)
    summary["status"] = outcome.status.value
    return summary
