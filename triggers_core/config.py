"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.engine.config` (see docs/architecture.md).
"""

from triggers_core.engine.config import (
    KNOWN_DIRECTIVES,
    TaskConfig,
    cycle_problems,
    directive_typo,
    parse_configuration,
    parse_task_config,
)

__all__ = [
    "KNOWN_DIRECTIVES",
    "TaskConfig",
    "cycle_problems",
    "directive_typo",
    "parse_configuration",
    "parse_task_config",
]
