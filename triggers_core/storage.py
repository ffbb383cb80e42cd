"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.runtime.storage` (see docs/architecture.md).
"""

from triggers_core.runtime.storage import (
    Changes,
    Scope,
    Selector,
    Snapshot,
    Storage,
    Version,
    check_uid,
)

__all__ = ["Changes", "Scope", "Selector", "Snapshot", "Storage", "Version", "check_uid"]
