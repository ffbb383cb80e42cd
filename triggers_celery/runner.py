"""``CeleryTaskRunner``: hands ready instances to a Celery broker.

Each instance becomes one message to the Celery task named after the trigger
task (the configuration's ``run``), so ``task_routes``, queues, rate limits and
time limits apply per trigger task exactly as for any Celery task. The message
carries only a :class:`~triggers_celery.message.TaskMessage`; it is sent with
the JSON serializer, without a countdown (a retry's cooldown is a timer in the
storage, served before the instance is scheduled), and a short
publish retry policy so that a dead broker fails ``fire`` within about a
second instead of hanging it (the manager then marks the instance ``failed``
with the error and raises :class:`~triggers_core.errors.DispatchError`).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping
from contextvars import Context, copy_context
from typing import TYPE_CHECKING, Any, ClassVar

from triggers_celery.app import bound_app, default_app, set_default_app
from triggers_celery.errors import BindingError, StorageResolutionError, TriggersCeleryError
from triggers_celery.message import TaskMessage
from triggers_celery.observability import message_headers
from triggers_celery.storages import message_storage
from triggers_core.engine.effects import ScheduleInstance
from triggers_core.runtime.manager import managers
from triggers_core.runtime.ports import SessionManager, TaskRunner
from triggers_core.runtime.storage import Storage

if TYPE_CHECKING:
    pass

# default_app and set_default_app live in triggers_celery.app (storages needs them too);
# they are still importable from here.
__all__ = [
    "DEFAULT_RETRY_POLICY",
    "RETRY_POLICY_SETTING",
    "CeleryTaskRunner",
    "default_app",
    "set_default_app",
]

log = logging.getLogger(__name__)

#: Publish retries: three quick attempts, then the error reaches ``fire``.
DEFAULT_RETRY_POLICY: Mapping[str, float] = {
    "max_retries": 2,
    "interval_start": 0.0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
#: Celery setting overriding :data:`DEFAULT_RETRY_POLICY` for trigger task messages.
RETRY_POLICY_SETTING = "triggers_publish_retry_policy"

_eager = threading.local()

#: The storage field of an eager message whose storage has no name: an eager task
#: runs against the caller's storage object (:func:`live_storage`), never reopens it.
EAGER_STORAGE = "eager://caller"


class CeleryTaskRunner(TaskRunner):
    """Sends ready instances to Celery workers (registry name ``celery``).

    ``app`` defaults to :func:`default_app`. ``retry_policy`` overrides the
    publish retry policy (default: the ``triggers_publish_retry_policy``
    setting, else :data:`DEFAULT_RETRY_POLICY`).

    With ``task_always_eager`` the instance runs in the calling thread before
    ``dispatch`` returns, against the caller's own storage object; instances
    scheduled while it runs (cascades, retries) are queued and run one after
    another, so long chains never recurse. Countdowns are ignored, as Celery
    ignores them in eager mode.
    """

    name: ClassVar[str] = "celery"

    def __init__(self, app: Any = None, *, retry_policy: Mapping[str, float] | None = None):
        self._app = app
        self._retry_policy = dict(retry_policy) if retry_policy is not None else None

    @property
    def app(self) -> Any:
        """The Celery app messages go through."""
        return self._app if self._app is not None else default_app()

    def setup_problem(self) -> str | None:
        """None once an app is known: given, bound (:func:`bind_tasks`) or created here.

        Without one, messages would go to Celery's fallback app (its default
        broker and queue), where no worker of the application listens.
        """
        if self._app is not None or bound_app() is not None:
            return None
        from celery import _state  # noqa: PLC0415 - Celery's record of the current app

        if getattr(_state._tls, "current_app", None) is not None:
            return None
        return (
            "no Celery app is configured in this process: import the module that creates "
            "it (and calls triggers_celery.bind_tasks(app)), e.g. with --app MODULE"
        )

    def message_for(
        self, manager: SessionManager, effect: ScheduleInstance, *, eager: bool = False
    ) -> TaskMessage:
        """The message that makes a worker run ``effect``'s instance of ``manager``'s session.

        With ``eager`` the task runs in this thread against ``manager.storage``
        itself, so a storage that cannot be named (a private memory store) is fine.
        """
        key = type(manager).registry_key
        registered = managers.load(key)
        if registered is not type(manager):
            raise TriggersCeleryError(
                f"{type(manager).__qualname__}.registry_key is {key!r}, but that key names "
                f"{registered.__module__}.{registered.__qualname__}; workers would rebuild the "
                "wrong manager class. Give the subclass its own registry_key and register it "
                "(triggers_core.managers.register or the triggers.managers entry point)"
            )
        try:
            storage = message_storage(manager.storage, self.app.conf)
        except StorageResolutionError:
            if not eager:
                raise
            storage = EAGER_STORAGE
        return TaskMessage(
            manager=key,
            storage=storage,
            session=manager.uid,
            instance=effect.instance_name,
        )

    def publish_options(self, effect: ScheduleInstance) -> dict[str, Any]:
        """``apply_async`` options for ``effect`` (JSON, retry policy, trace headers).

        Never a countdown or an ETA: a retry's cooldown is served by a timer in the
        storage before the instance is scheduled.
        """
        policy = self._retry_policy
        if policy is None:
            policy = dict(self.app.conf.get(RETRY_POLICY_SETTING) or DEFAULT_RETRY_POLICY)
        options: dict[str, Any] = {"serializer": "json", "retry": True, "retry_policy": policy}
        headers = message_headers()  # the trace context, while tracing
        if headers is not None:
            options["headers"] = headers
        return options

    def dispatch(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        """Publish the instance's message; raise if the broker does not take it."""
        app = self.app
        eager = bool(app.conf.task_always_eager)
        if manager.storage.backend_name == "memory" and not eager:
            raise StorageResolutionError(
                f"{effect.instance_name}: a memory:// storage lives in this process only, so "
                "Celery workers cannot run its instances; use a shared storage (e.g. SQLAlchemy) "
                "or task_always_eager"
            )
        message = self.message_for(manager, effect, eager=eager)
        task = app.tasks.get(effect.run)
        if task is not None and getattr(task, "trigger_task_name", None) != effect.run:
            raise BindingError(
                f"the Celery task named {effect.run!r} is not a trigger task binding; "
                "bind trigger tasks with triggers_celery.bind_tasks(app)"
            )
        if eager:
            if task is None:
                raise BindingError(
                    f"task_always_eager is set but trigger task {effect.run!r} is not bound to "
                    f"{app.main or app!r}; call triggers_celery.bind_tasks(app) first"
                )
            _run_eagerly(task, message, manager.storage)
            return
        options = self.publish_options(effect)
        if task is not None:
            task.apply_async(kwargs=message.to_kwargs(), **options)
        else:  # not bound in this process: routes by name still apply
            app.send_task(effect.run, kwargs=message.to_kwargs(), **options)
        log.debug("sent %s (%s) to Celery", effect.instance_name, effect.run)


def live_storage() -> Storage | None:
    """The caller's storage while an eager trigger task runs in this thread, else None."""
    storage: Storage | None = getattr(_eager, "storage", None)
    return storage


def _run_eagerly(task: Any, message: TaskMessage, storage: Storage) -> None:
    """Run now in this thread; if a trigger task is already running here, queue it.

    Only an error of the first queued item reaches this dispatch's caller (it
    concerns the instance being dispatched); later items were accepted by
    earlier dispatches, so their errors are logged.
    """
    queue: deque[tuple[Any, TaskMessage, Storage, Context]] | None = getattr(_eager, "queue", None)
    if queue is not None:
        # Queued work runs later in the context of its dispatch (its trace, while tracing).
        queue.append((task, message, storage, copy_context()))
        return
    queue = _eager.queue = deque([(task, message, storage, copy_context())])
    first_error: BaseException | None = None
    first = True
    try:
        while queue:
            item_task, item, item_storage, context = queue.popleft()
            _eager.storage = item_storage
            try:
                result = context.run(
                    item_task.apply_async, kwargs=item.to_kwargs(), serializer="json"
                )
                if result.failed():  # task_eager_propagates is off: the error is in the result
                    raise result.result
            except Exception as exc:
                if first:
                    first_error = exc
                else:
                    log.error("eager trigger task for %s failed", item, exc_info=exc)
            finally:
                _eager.storage = None
                first = False
    finally:
        _eager.queue = None
    if first_error is not None:
        raise first_error
