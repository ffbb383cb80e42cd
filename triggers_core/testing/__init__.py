"""The testing toolbox shipped to users.

* :class:`TriggerManagerTestCaseMixin` (unittest) and the ``assert_instance_*``
  helpers (pytest; the fixtures ``trigger_manager``, ``trigger_storage`` and
  ``trigger_runner`` come from the ``triggers`` pytest plugin).
* Sample tasks: :class:`PassThruTask`, :class:`DevNullTask`, :class:`FailingTask`,
  :class:`SelfSkippingTask`, :class:`SelfRetryingTask`.
* :class:`FakeClock`: a manual clock for managers (``clock=``); ``advance("2h")``
  ticks their stores, so ``within`` windows close and delays end in virtual time.
* :func:`simulate`: run a configuration and a sequence of steps (triggers,
  :class:`ReplayFailed`, :class:`SkipFailed`, clock moves :class:`Advance`) through
  the pure engine, with no
  broker, database or threads; tasks may fail (:class:`Failure`).
* ``triggers_core.testing.strategies``: Hypothesis strategies (needs hypothesis).
* ``triggers_core.testing.storage_contract``: the storage contract suite that
  every backend's tests subclass (needs pytest and hypothesis).

Importing this package needs neither pytest nor hypothesis.
"""

from triggers_core.testing.assertions import (
    assert_instance_abandoned,
    assert_instance_expired,
    assert_instance_failed,
    assert_instance_finished,
    assert_instance_missing,
    assert_instance_replayed,
    assert_instance_skipped,
    assert_instance_status,
    assert_instance_unstarted,
    assert_unresolved_instances,
    assert_unresolved_tasks,
    wait_for_tasks,
)
from triggers_core.testing.clock import FakeClock
from triggers_core.testing.mixin import TriggerManagerTestCaseMixin
from triggers_core.testing.sample_tasks import (
    DevNullTask,
    FailingTask,
    PassThruTask,
    SelfRetryingTask,
    SelfSkippingTask,
)
from triggers_core.testing.simulate import (
    Advance,
    Failure,
    ReplayFailed,
    Simulation,
    SkipFailed,
    run_simulation,
    simulate,
)

__all__ = [
    "Advance",
    "DevNullTask",
    "FailingTask",
    "Failure",
    "FakeClock",
    "PassThruTask",
    "ReplayFailed",
    "SelfRetryingTask",
    "SelfSkippingTask",
    "Simulation",
    "SkipFailed",
    "TriggerManagerTestCaseMixin",
    "assert_instance_abandoned",
    "assert_instance_expired",
    "assert_instance_failed",
    "assert_instance_finished",
    "assert_instance_missing",
    "assert_instance_replayed",
    "assert_instance_skipped",
    "assert_instance_status",
    "assert_instance_unstarted",
    "assert_unresolved_instances",
    "assert_unresolved_tasks",
    "run_simulation",
    "simulate",
    "wait_for_tasks",
]
