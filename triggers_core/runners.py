"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.runtime.runners`
and :mod:`triggers_core.runtime.ports` (see docs/architecture.md).
"""

from triggers_core.runtime.ports import (
    TaskRunner,
)
from triggers_core.runtime.runners import (
    ThreadingTaskRunner,
)

__all__ = ["TaskRunner", "ThreadingTaskRunner"]
