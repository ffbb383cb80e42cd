"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.engine.state` (see docs/architecture.md).
"""

from triggers_core.engine.state import (
    RESOLVED_STATUSES,
    SessionState,
    Status,
    TaskInstance,
    copy_instance,
    instance_name,
)

__all__ = [
    "RESOLVED_STATUSES",
    "SessionState",
    "Status",
    "TaskInstance",
    "copy_instance",
    "instance_name",
]
