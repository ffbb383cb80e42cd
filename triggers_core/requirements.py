"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.tools.requirements` (see docs/architecture.md).
"""

from triggers_core.tools.requirements import (
    MAX_SHARED_NAMES,
    GroupReference,
    Lack,
    Missing,
    Reference,
    abandoned_by,
    after_triggers,
    condition_words,
    group_references,
    grouped,
    is_complete,
    lack_to_json,
    lack_words,
    missing_after,
    missing_unless,
    ready_with,
    references,
    unless_always_wins,
    unless_complete,
    unless_recorded,
    unless_triggers,
)

__all__ = [
    "MAX_SHARED_NAMES",
    "GroupReference",
    "Lack",
    "Missing",
    "Reference",
    "abandoned_by",
    "after_triggers",
    "condition_words",
    "group_references",
    "grouped",
    "is_complete",
    "lack_to_json",
    "lack_words",
    "missing_after",
    "missing_unless",
    "ready_with",
    "references",
    "unless_always_wins",
    "unless_complete",
    "unless_recorded",
    "unless_triggers",
]
