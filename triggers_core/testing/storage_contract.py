"""The storage contract suite: every backend, ours or yours, proves the same guarantees.

Subclass :class:`StorageContract` in a test module (the class name must start
with ``Test`` so pytest collects it) and implement :meth:`~StorageContract.make_storage`::

    import pytest
    from triggers_core.testing.storage_contract import StorageContract
    from my_backend import MyStorage

    class TestMyStorage(StorageContract):
        supports_multiprocess = True  # the store is shared between OS processes

        @pytest.fixture(autouse=True)
        def _server(self, tmp_path):
            self.client = connect(...)  # per-test setup; pytest makes one instance per test
            yield
            self.client.close()

        def make_storage(self, uid):
            return MyStorage(uid, self.client)

What it checks (see :mod:`triggers_core.runtime.storage` for the contract itself), one
part per idea, each a class in its own module that :class:`StorageContract`
inherits:

* compare-and-swap (``_storage_cas``): a missing session loads empty; create
  once; what is written reads back; a stale compare-and-swap is rejected and
  changes nothing; versions are never reused; of N threads racing to create a
  session or to write on one version, one wins;
* the working set (``_storage_working_set``): ``load(scope)`` returns what the
  scope names (by name, unstarted instances of some tasks, unresolved ones; a
  selector decides from the header); instances left out of
  ``changes.instances`` are not rewritten; the configuration is written only
  when ``changes.config`` says so;
* integrity (``_storage_integrity``): a created instance that already exists
  is refused and nothing is written (also through the manager, after a counter
  was lowered by hand); a damaged session is refused on load;
* values and names (``_storage_values``): trigger kwargs round-trip or are
  refused before anything is written; callers never share mutable values with
  the store; kwargs and condition groups written through the manager read
  back; names no backend can store are refused; sessions are isolated by UID;
  awkward UIDs round-trip;
* the multi-process race (``_storage_race``): ``andEvery`` fires from OS
  processes through :class:`~triggers_core.runtime.manager.TriggerManager` schedule
  every instance exactly once (opt in with ``supports_multiprocess``);
* the stateful model (``_storage_model``): a Hypothesis state machine compares
  the store with an in-memory model;
* fire records (idempotency keys) behave as
  :mod:`triggers_core.testing.fire_records_contract` describes, including a
  race of threads and one of OS processes firing the same keys (set
  ``keeps_fire_records = False`` for a backend that keeps none).

A backend's test class may set ``supports_multiprocess``,
``exact_working_set`` and ``keeps_fire_records``, and size the checks with
``race_threads``, ``race_processes``, ``race_fires``, ``race_timeout``,
``keyed_race_keys``, ``value_examples``, ``stateful_examples`` and
``stateful_steps``.

``pytest`` is needed to run it; ``hypothesis`` only for the value and stateful tests.
"""

from __future__ import annotations

from triggers_core.testing._contract_support import RecordingRunner
from triggers_core.testing._storage_cas import CompareAndSwapContract
from triggers_core.testing._storage_integrity import IntegrityContract
from triggers_core.testing._storage_model import StatefulModelContract, storage_state_machine
from triggers_core.testing._storage_race import MultiprocessRaceContract, run_fire_race
from triggers_core.testing._storage_support import make_state
from triggers_core.testing._storage_values import AWKWARD_UIDS, ValuesAndNamesContract
from triggers_core.testing._storage_working_set import WorkingSetContract
from triggers_core.testing.fire_records_contract import FireRecordsContract

__all__ = [
    "AWKWARD_UIDS",
    "RecordingRunner",
    "StorageContract",
    "make_state",
    "run_fire_race",
    "storage_state_machine",
]


class StorageContract(
    CompareAndSwapContract,
    WorkingSetContract,
    IntegrityContract,
    ValuesAndNamesContract,
    MultiprocessRaceContract,
    StatefulModelContract,
    FireRecordsContract,
):
    """Base class of the storage contract tests (see the module docstring).

    One class made of the parts, so that a backend subclasses one thing and
    every part sees the same ``make_storage`` and settings.
    """
