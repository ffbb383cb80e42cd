"""The multi-process part of the storage contract: OS processes racing to fire.

Processes that each fire an ``andEvery`` trigger many times through
:class:`~triggers_core.runtime.manager.TriggerManager` schedule every instance
exactly once, lose no fire and apply none twice. Only for a backend whose
sessions other processes see (``supports_multiprocess``); the processes are
spawned and reopen the storage from :meth:`process_url`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

from triggers_core.engine.state import Status
from triggers_core.runtime.registry import open_storage
from triggers_core.testing._contract_support import (
    EVERY_TICK,
    PatientManager,
    RecordingRunner,
    race_processes,
    report_to,
)
from triggers_core.testing._storage_support import StorageCase

__all__ = ["MultiprocessRaceContract", "run_fire_race"]


class MultiprocessRaceContract(StorageCase):
    """``andEvery`` fires racing from OS processes (see the module docstring)."""

    #: Fires per process in the multi-process race.
    race_fires: ClassVar[int] = 100

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # An in-process store has no cross-process guarantee to prove.
        cls._include_test(
            MultiprocessRaceContract, "test_multiprocess_and_every_race", cls.supports_multiprocess
        )

    def test_multiprocess_and_every_race(self, uid: str) -> None:
        manager, _ = self._manager(uid)
        storage = manager.storage
        manager.update_configuration(EVERY_TICK)
        dispatched = run_fire_race(
            self.process_url(storage),
            uid,
            processes=self.race_processes,
            fires=self.race_fires,
            timeout=self.race_timeout,
        )
        total = self.race_processes * self.race_fires
        counts = Counter(dispatched)
        assert [name for name, n in counts.items() if n > 1] == [], "scheduled more than once"
        assert set(counts) == {f"t_every#{n}" for n in range(total)}
        state = storage.load_full().state
        assert len(state.instances) == total
        assert {i.status for i in state.instances.values()} == {Status.SCHEDULED}
        assert state.counters["t_every"] == total
        fired = {
            (i.kwargs["tick"]["worker"], i.kwargs["tick"]["i"]) for i in state.instances.values()
        }
        assert len(fired) == total, "a fire was lost or applied twice"


def run_fire_race(url: str, uid: str, *, processes: int, fires: int, timeout: float) -> list[str]:
    """Start ``processes`` OS processes (spawned) that each fire ``tick`` ``fires`` times.

    Returns every instance name the processes' runners were asked to run.
    """
    payloads = race_processes(
        _fire_worker,
        processes=processes,
        timeout=timeout,
        what="multi-process race",
        url=url,
        uid=uid,
        fires=fires,
    )
    return [name for dispatched in payloads for name in dispatched]


def _fire_worker(*, url: str, uid: str, index: int, fires: int, start: Any, results: Any) -> None:
    def work() -> list[str]:
        storage = open_storage(url, uid)
        runner = RecordingRunner()
        manager = PatientManager(storage, runners={"recording": runner}, default_runner="recording")
        start.wait(60)
        for n in range(fires):
            manager.fire("tick", {"worker": index, "i": n})
        storage.close()
        return runner.dispatched

    report_to(results, index, work)
