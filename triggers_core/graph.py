"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.engine.graph` (see docs/architecture.md).
"""

from triggers_core.engine.graph import (
    Edges,
    and_every_cycles,
    and_every_edges,
    cascade_edges,
    find_cycles,
    strongly_connected_components,
)

__all__ = [
    "Edges",
    "and_every_cycles",
    "and_every_edges",
    "cascade_edges",
    "find_cycles",
    "strongly_connected_components",
]
