"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.runtime.tasks` (see docs/architecture.md).
"""

from triggers_core.runtime.tasks import (
    RetryTask,
    SkipTask,
    TaskContext,
    TaskLogger,
    TriggerTask,
    get_task,
    get_task_class,
    mark_traceback_logged,
    register_task,
    registered_tasks,
    traceback_was_logged,
    with_context,
)

__all__ = [
    "RetryTask",
    "SkipTask",
    "TaskContext",
    "TaskLogger",
    "TriggerTask",
    "get_task",
    "get_task_class",
    "mark_traceback_logged",
    "register_task",
    "registered_tasks",
    "traceback_was_logged",
    "with_context",
]
