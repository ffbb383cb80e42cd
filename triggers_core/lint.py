"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.tools.lint` (see docs/architecture.md).
"""

from triggers_core.tools.lint import *  # noqa: F403 - every public name, unchanged
