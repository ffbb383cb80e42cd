"""Whether a storage can record the cascade of a finished instance (so it cascades once).

A runner whose messages may arrive more than once (the Celery worker) asks the
manager to guard each finish's cascade with a fire record under the
instance's name (:func:`~triggers_core.engine.idempotency.cascade_key`).
:func:`guards_cascades_steps` tells whether the storage keeps fire records.
"""

from __future__ import annotations

import logging
from typing import Any

from triggers_core.errors import SchemaMissingError, UnsupportedOperationError
from triggers_core.runtime.lifecycle import LIFECYCLE_LOGGER
from triggers_core.runtime.shell import Steps, StorageCall

__all__ = ["guards_cascades_steps"]

lifecycle = logging.getLogger(LIFECYCLE_LOGGER)

#: Storages (by redacted reference) already warned about that they cannot guard cascades.
_UNGUARDED_WARNED: set[str] = set()


def guards_cascades_steps(storage: Any, uid: str) -> Steps[bool]:
    """True if ``storage`` keeps fire records, so a finish can record its cascade.

    A storage that keeps none (a third-party one) runs instances as before;
    one whose records are missing from its schema (SQL tables of an earlier
    version) too, with a warning (once per storage) saying how to add them.
    (A shell-core generator: ``check_fire_keys`` is the storage's call, sync or
    async.)
    """
    try:
        yield StorageCall("check_fire_keys")
    except UnsupportedOperationError:
        return False
    except SchemaMissingError as exc:
        where = storage.reference() or storage.backend_name
        if where not in _UNGUARDED_WARNED:
            _UNGUARDED_WARNED.add(where)
            lifecycle.warning(
                "session %r: cascades of finished instances are not recorded, so an "
                "instance finished twice would cascade twice: %s",
                uid,
                exc,
                extra={"session": uid},
            )
        return False
    return True
