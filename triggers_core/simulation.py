"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.tools.simulation` (see docs/architecture.md).
"""

from triggers_core.tools.simulation import (
    DEFAULT_START,
    Advance,
    Failure,
    Outcome,
    ReplayFailed,
    ResultFunction,
    Results,
    Simulation,
    SimulationLimitExceeded,
    SkipFailed,
    Step,
    TriggerSpec,
    run_simulation,
    simulate,
)

__all__ = [
    "DEFAULT_START",
    "Advance",
    "Failure",
    "Outcome",
    "ReplayFailed",
    "ResultFunction",
    "Results",
    "Simulation",
    "SimulationLimitExceeded",
    "SkipFailed",
    "Step",
    "TriggerSpec",
    "run_simulation",
    "simulate",
]
