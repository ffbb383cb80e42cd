"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.tools.listing` (see docs/architecture.md).
"""

from triggers_core.tools.listing import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    STALE_STATUSES,
    SessionFilter,
    SessionPage,
    check_page_size,
    is_stale,
    iter_sessions,
    list_sessions,
    status_since,
    storage_class,
)

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "STALE_STATUSES",
    "SessionFilter",
    "SessionPage",
    "check_page_size",
    "is_stale",
    "iter_sessions",
    "list_sessions",
    "status_since",
    "storage_class",
]
