"""Triggers: a distributed observer pattern for Celery.

Fire named triggers inside a session; a JSON configuration says which tasks run
once which triggers have fired (in any order, across processes and days).
This package is the typed core and needs only ``attrs``.
"""

from triggers_core.engine import Transition
from triggers_core.engine.config import TaskConfig, parse_configuration
from triggers_core.engine.effects import (
    InstanceReplayed,
    InstanceSkipped,
    ScheduleInstance,
    TriggerFired,
)
from triggers_core.engine.state import RESOLVED_STATUSES, SessionState, Status, TaskInstance
from triggers_core.errors import (
    CascadeDepthExceeded,
    ConcurrencyError,
    ConfigurationError,
    ConflictError,
    DispatchError,
    InvalidKwargsError,
    InvalidTransitionError,
    MaxRetriesExceeded,
    RegistryError,
    SchemaMissingError,
    SerializationError,
    StorageError,
    StorageURLError,
    TriggersError,
    UnknownInstanceError,
    UnknownTaskError,
    UnknownTriggerError,
    UnsupportedOperationError,
    WorkerLost,
)
from triggers_core.runtime.async_manager import AsyncTriggerManager
from triggers_core.runtime.async_memory import AsyncMemoryStorage
from triggers_core.runtime.async_runner import AsyncioTaskRunner
from triggers_core.runtime.async_storage import AsyncStorage
from triggers_core.runtime.firing import FireResult
from triggers_core.runtime.lifecycle import LIFECYCLE_LOGGER
from triggers_core.runtime.manager import TriggerManager, managers
from triggers_core.runtime.memory import MemoryStorage, MemoryStore
from triggers_core.runtime.ports import SessionManager, TaskRunner
from triggers_core.runtime.redaction import redact
from triggers_core.runtime.registry import (
    STORAGE_URL_ENV,
    async_storages,
    open_async_storage,
    open_storage,
    runners,
    storages,
)
from triggers_core.runtime.runners import ThreadingTaskRunner
from triggers_core.runtime.storage import Snapshot, Storage
from triggers_core.runtime.tasks import (
    TaskContext,
    TriggerTask,
    get_task,
    register_task,
    registered_tasks,
    set_task_defaults,
    with_context,
)
from triggers_core.tools.recovery import recover, tick

__all__ = [
    "LIFECYCLE_LOGGER",
    "RESOLVED_STATUSES",
    "STORAGE_URL_ENV",
    "AsyncMemoryStorage",
    "AsyncStorage",
    "AsyncTriggerManager",
    "AsyncioTaskRunner",
    "CascadeDepthExceeded",
    "ConcurrencyError",
    "ConfigurationError",
    "ConflictError",
    "DispatchError",
    "FireResult",
    "InstanceReplayed",
    "InstanceSkipped",
    "InvalidKwargsError",
    "InvalidTransitionError",
    "MaxRetriesExceeded",
    "MemoryStorage",
    "MemoryStore",
    "RegistryError",
    "ScheduleInstance",
    "SchemaMissingError",
    "SerializationError",
    "SessionManager",
    "SessionState",
    "Snapshot",
    "Status",
    "Storage",
    "StorageError",
    "StorageURLError",
    "TaskConfig",
    "TaskContext",
    "TaskInstance",
    "TaskRunner",
    "ThreadingTaskRunner",
    "Transition",
    "TriggerFired",
    "TriggerManager",
    "TriggerTask",
    "TriggersError",
    "UnknownInstanceError",
    "UnknownTaskError",
    "UnknownTriggerError",
    "UnsupportedOperationError",
    "WorkerLost",
    "async_storages",
    "get_task",
    "managers",
    "open_async_storage",
    "open_storage",
    "parse_configuration",
    "recover",
    "redact",
    "register_task",
    "registered_tasks",
    "runners",
    "set_task_defaults",
    "storages",
    "tick",
    "with_context",
]
