"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.runtime.manager` (see docs/architecture.md).
"""

from triggers_core.runtime.manager import (
    LIFECYCLE_LOGGER,
    TriggerManager,
    exception_type_name,
    managers,
)

__all__ = ["LIFECYCLE_LOGGER", "TriggerManager", "exception_type_name", "managers"]
