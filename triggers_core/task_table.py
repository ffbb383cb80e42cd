"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.engine.task_table` (see docs/architecture.md).
"""

from triggers_core.engine.task_table import *  # noqa: F403 - every public name, unchanged
