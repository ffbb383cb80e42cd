"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.runtime.redaction` (see docs/architecture.md).
"""

from triggers_core.runtime.redaction import (
    SENSITIVE_KEY_FRAGMENTS,
    SENSITIVE_KEYS,
    is_sensitive_key,
    redact,
)

__all__ = ["SENSITIVE_KEYS", "SENSITIVE_KEY_FRAGMENTS", "is_sensitive_key", "redact"]
