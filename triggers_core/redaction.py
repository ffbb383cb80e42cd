"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.runtime.redaction` (see docs/architecture.md).
"""

from triggers_core.runtime.redaction import *  # noqa: F403 - every public name, unchanged
