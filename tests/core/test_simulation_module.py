"""The simulator lives in triggers_core.tools.simulation; the testing toolbox re-exports it."""

from __future__ import annotations

import importlib
import subprocess
import sys

from triggers_core import simulation
from triggers_core import testing as toolbox
from triggers_core.tools import simulation as moved

# The package's `simulate` attribute is the function; the module is reached by name.
toolbox_simulate = importlib.import_module("triggers_core.testing.simulate")


def test_the_testing_toolbox_re_exports_the_same_objects() -> None:
    for name in moved.__all__:  # both old homes offer every name of the new one
        assert getattr(toolbox_simulate, name) is getattr(moved, name), name
        assert getattr(simulation, name) is getattr(moved, name), name
    for name in ("Failure", "ReplayFailed", "SkipFailed", "Simulation", "simulate"):
        assert getattr(toolbox, name) is getattr(simulation, name)
    assert toolbox.run_simulation is simulation.run_simulation


def test_importing_explain_registers_no_sample_task() -> None:
    # The testing toolbox registers its sample tasks when imported; explain (and
    # the what-if simulation it runs) must not pull it in.
    code = (
        "import sys, triggers_core.tools.explain, triggers_core.tools.simulation; "
        "from triggers_core.runtime.tasks import registered_tasks; "
        "print(sorted(registered_tasks()), sorted(m for m in sys.modules "
        "if m.startswith('triggers_core.testing')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[] []"
