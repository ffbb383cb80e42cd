"""The simulator, where the testing toolbox has always offered it.

It lives in :mod:`triggers_core.tools.simulation` (so that the workflow tools can
use it without importing this package, which registers the sample tasks);
every name is re-exported here unchanged.
"""

from __future__ import annotations

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
