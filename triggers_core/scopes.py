"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.engine.scopes` (see docs/architecture.md).
"""

from triggers_core.engine.scopes import (
    HEADER_ONLY,
    Changes,
    Scope,
    Selector,
    configuration_scope,
    fire_needs,
    fire_scope,
    instance_scope,
    is_unsettled,
    narrowed,
    read_in_full,
    reads_every_unstarted,
    resolve,
    settled_of,
    settled_triggers,
    still_settled,
    task_of,
    task_triggers,
    unsettled_of,
)

__all__ = [
    "HEADER_ONLY",
    "Changes",
    "Scope",
    "Selector",
    "configuration_scope",
    "fire_needs",
    "fire_scope",
    "instance_scope",
    "is_unsettled",
    "narrowed",
    "read_in_full",
    "reads_every_unstarted",
    "resolve",
    "settled_of",
    "settled_triggers",
    "still_settled",
    "task_of",
    "task_triggers",
    "unsettled_of",
]
