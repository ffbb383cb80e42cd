"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.engine.conditions` (see docs/architecture.md).
"""

from triggers_core.engine.conditions import (
    GROUP_KEYS,
    MAX_GROUP_DEPTH,
    Entry,
    Group,
    all_satisfied,
    entry_from_json,
    entry_names,
    entry_satisfied,
    entry_to_json,
    names_of,
    parse_entries,
)

__all__ = [
    "GROUP_KEYS",
    "MAX_GROUP_DEPTH",
    "Entry",
    "Group",
    "all_satisfied",
    "entry_from_json",
    "entry_names",
    "entry_satisfied",
    "entry_to_json",
    "names_of",
    "parse_entries",
]
