"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.tools.explain` (see docs/architecture.md).
"""

from triggers_core.tools.explain import (
    FailureInfo,
    InstanceExplanation,
    TaskExplanation,
    UnknownNameError,
    Waiting,
    WaitingGroup,
    WhatIf,
    explain,
    explain_instance,
    explain_task,
    format_age,
    summary_line,
    what_if,
)

__all__ = [
    "FailureInfo",
    "InstanceExplanation",
    "TaskExplanation",
    "UnknownNameError",
    "Waiting",
    "WaitingGroup",
    "WhatIf",
    "explain",
    "explain_instance",
    "explain_task",
    "format_age",
    "summary_line",
    "what_if",
]
