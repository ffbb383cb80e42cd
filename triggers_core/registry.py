"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.runtime.registry`
and :mod:`triggers_core.runtime.manager` (see docs/architecture.md).
"""

from triggers_core.runtime.manager import (
    managers,
)
from triggers_core.runtime.registry import (
    EXTRAS,
    STORAGE_URL_ENV,
    Registry,
    install_hint,
    open_storage,
    runners,
    storage_scheme,
    storages,
)

__all__ = [
    "EXTRAS",
    "STORAGE_URL_ENV",
    "Registry",
    "install_hint",
    "managers",
    "open_storage",
    "runners",
    "storage_scheme",
    "storages",
]
