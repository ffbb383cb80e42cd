"""Tools over sessions and configurations, built on the runtime and the engine.

:mod:`.lint` (configuration problems), :mod:`.explain` (why an instance waits),
:mod:`.render` (the configuration as a graph), :mod:`.requirements` (what a
task still needs), :mod:`.simulation` (a workflow run in memory, no broker or
database) and :mod:`.listing` (the sessions of a store). The command line and
the testing toolbox sit on top of them.
"""
