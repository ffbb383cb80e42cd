"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.runtime.memory` (see docs/architecture.md).
"""

from triggers_core.runtime.memory import (
    MemoryStorage,
    MemoryStore,
)

__all__ = ["MemoryStorage", "MemoryStore"]
