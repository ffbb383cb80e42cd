"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.runtime.lifecycle` (see docs/architecture.md).
"""

from triggers_core.runtime.lifecycle import (
    LIFECYCLE_LOGGER,
    log_failure,
    log_outcome,
    log_started,
    log_transition,
)

__all__ = ["LIFECYCLE_LOGGER", "log_failure", "log_outcome", "log_started", "log_transition"]
