"""The simulator, where the testing toolbox has always offered it.

It lives in :mod:`triggers_core.tools.simulation` (so that the workflow tools can
use it without importing this package, which registers the sample tasks);
every name is re-exported here unchanged.
"""

from triggers_core.tools.simulation import *  # noqa: F403 - every public name, unchanged
