"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.engine.idempotency` (see docs/architecture.md).
"""

from triggers_core.engine.idempotency import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    FireKey,
    cascade_key,
    check_idempotency_key,
    decode_scheduled,
    fire_key,
)

__all__ = [
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "FireKey",
    "cascade_key",
    "check_idempotency_key",
    "decode_scheduled",
    "fire_key",
]
