"""Triggers on Celery: ready instances run on Celery workers.

Sender side, :class:`CeleryTaskRunner` (runner name ``celery``) publishes one
message per ready instance to the Celery task named after the trigger task.
Worker side, :func:`bind_tasks` (class style) or :func:`trigger_task`
(decorator style) registers trigger tasks with the Celery app; each message is
turned into ``manager.run_instance(name)`` against a storage the worker's own
settings name (``triggers_storages``; a message can name only those, see
:mod:`triggers_celery.storages` and ``SECURITY.md``); a transient storage error
before the instance starts retries the message with backoff
(``triggers_storage_retry_*`` settings). Messages carry the manager's registry
key, a storage name (or a configured storage's credential-free reference), the
session UID and the instance name: never kwargs, never credentials.

Importing this package imports Celery (install the ``celery`` extra).
"""

from triggers_celery.app import default_app, set_default_app
from triggers_celery.binding import FORBIDDEN_OPTIONS, bind_tasks, trigger_task
from triggers_celery.errors import (
    BindingError,
    InstanceFailedError,
    MessageError,
    StorageResolutionError,
    StorageUnavailableError,
    TriggersCeleryError,
    WorkerSetupError,
)
from triggers_celery.message import MESSAGE_FIELDS, TaskMessage
from triggers_celery.runner import DEFAULT_RETRY_POLICY, RETRY_POLICY_SETTING, CeleryTaskRunner
from triggers_celery.storages import (
    DEFAULT_STORAGE_NAME,
    STORAGES_SETTING,
    StorageURLs,
    configured_storages,
    open_configured_storage,
    open_manager,
    seal_storages,
)
from triggers_celery.worker import (
    STORAGE_RETRY_BACKOFF_MAX_SETTING,
    STORAGE_RETRY_BACKOFF_SETTING,
    STORAGE_RETRY_MAX_SETTING,
    TriggerCeleryTask,
    execute_message,
    storage_retry_countdown,
)

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "DEFAULT_STORAGE_NAME",
    "FORBIDDEN_OPTIONS",
    "MESSAGE_FIELDS",
    "RETRY_POLICY_SETTING",
    "STORAGES_SETTING",
    "STORAGE_RETRY_BACKOFF_MAX_SETTING",
    "STORAGE_RETRY_BACKOFF_SETTING",
    "STORAGE_RETRY_MAX_SETTING",
    "BindingError",
    "CeleryTaskRunner",
    "InstanceFailedError",
    "MessageError",
    "StorageResolutionError",
    "StorageURLs",
    "StorageUnavailableError",
    "TaskMessage",
    "TriggerCeleryTask",
    "TriggersCeleryError",
    "WorkerSetupError",
    "bind_tasks",
    "configured_storages",
    "default_app",
    "execute_message",
    "open_configured_storage",
    "open_manager",
    "seal_storages",
    "set_default_app",
    "storage_retry_countdown",
    "trigger_task",
]
