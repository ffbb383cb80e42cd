"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.tools.render` (see docs/architecture.md).
"""

from triggers_core.tools.render import (
    Edge,
    GroupNode,
    edges,
    group_nodes,
    task_statuses,
    to_dot,
    to_mermaid,
)

__all__ = ["Edge", "GroupNode", "edges", "group_nodes", "task_statuses", "to_dot", "to_mermaid"]
