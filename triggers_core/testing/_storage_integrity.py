"""Integrity in the storage contract: history is never overwritten, damage is refused.

A write that creates an instance already stored is refused and writes
nothing, also when it comes from a manager whose counter was lowered by
hand (the error names the instance); a session whose counters fall below
its instances is refused when it is loaded, the manager writes nothing, and
the session works again once repaired; and an instance of a task that is no
longer configured is refused when it is loaded.
"""

from __future__ import annotations

import attrs
import pytest

from triggers_core.engine.scopes import Scope
from triggers_core.engine.state import SessionState, Status
from triggers_core.errors import SerializationError
from triggers_core.testing._contract_support import EVERY_TICK
from triggers_core.testing._storage_support import (
    StorageCase,
    instances_json,
    make_state,
    sample_instance,
    writing,
)

__all__ = ["IntegrityContract"]


class IntegrityContract(StorageCase):
    """What must never be overwritten or loaded (see the module docstring)."""

    def test_creating_an_instance_that_exists_is_refused_and_writes_nothing(self, uid: str) -> None:
        storage = self.make_storage(uid)
        finished = sample_instance("t_alpha#0", Status.FINISHED, marker="history")
        v1 = storage.compare_and_swap(
            None, make_state([finished]), writing(["t_alpha#0"], created=["t_alpha#0"])
        )
        # A writer whose counter was lowered "creates" t_alpha#0 again, plus t_beta#0.
        again = make_state(
            [sample_instance("t_alpha#0", marker="again"), sample_instance("t_beta#0")]
        )
        with pytest.raises(SerializationError) as caught:
            storage.compare_and_swap(
                v1, again, writing(["t_alpha#0", "t_beta#0"], created=["t_alpha#0", "t_beta#0"])
            )
        message = str(caught.value)
        assert "t_alpha#0" in message
        assert uid in message
        assert "already exists" in message
        self.assert_stored(storage, make_state([finished]), v1)
        self.assert_stored(self.make_storage(uid), make_state([finished]), v1)

    def test_a_lowered_counter_cannot_overwrite_history(self, uid: str) -> None:
        manager, runner = self._manager(uid)
        storage = manager.storage
        manager.update_configuration(EVERY_TICK)
        manager.fire("tick", {"n": 0})
        manager.update_instance_status("t_every#0", Status.FINISHED, metadata={"kept": True})
        before = storage.load_full()
        # Someone lowers the counter by hand (header only; nothing else changes).
        lowered = attrs.evolve(before.state, counters={"t_every": 0})
        version = storage.compare_and_swap(before.version, lowered, writing([], config=False))
        with pytest.raises(SerializationError) as caught:
            manager.fire("tick", {"n": 1})  # loads no instance: refused when it writes
        assert "t_every#0" in str(caught.value)
        # Nothing was written: repairing from the version of the edit still works.
        storage.compare_and_swap(version, before.state, writing([], config=False))
        after = storage.load_full()
        assert instances_json(after.state.instances) == instances_json(before.state.instances)
        assert after.state.instances["t_every#0"].metadata["kept"] is True
        assert runner.dispatched == ["t_every#0"]

    def test_a_lowered_counter_is_refused_on_load_and_nothing_is_written(self, uid: str) -> None:
        manager = self._manager(uid)[0]
        manager.update_configuration(EVERY_TICK)
        for n in range(3):
            manager.fire("tick", {"n": n})
        storage = self.make_storage(uid)
        good = storage.load_full()
        # A hand edit (or a bad restore) lowers the counter below existing instances.
        lowered = SessionState(
            tasks=good.state.tasks,
            latest_kwargs=good.state.latest_kwargs,
            counters={"t_every": 1},
        )
        assert good.version is not None
        version = storage.compare_and_swap(good.version, lowered, writing([], config=False))
        unresolved = Scope(unresolved=True)
        for load in (
            lambda: storage.load(unresolved),
            storage.load_full,
            lambda: storage["t_every#2"],
        ):
            with pytest.raises(SerializationError) as caught:
                load()
            message = str(caught.value)
            assert repr(uid) in message
            assert "'t_every#1'" in message or "'t_every#2'" in message
            assert "counter" in message
        with pytest.raises(SerializationError):
            manager.fire("tick", {"n": 3})
        # Nothing was written: the version is still the one the edit produced.
        repaired = storage.compare_and_swap(version, good.state, writing([], config=False))
        stored = storage.load_full().state.instances
        assert instances_json(stored) == instances_json(good.state.instances)
        assert storage.load().version == repaired
        assert [i.name for i in manager.fire("tick", {"n": 3})] == ["t_every#3"]

    def test_an_instance_of_an_unconfigured_task_is_refused_on_load(self, uid: str) -> None:
        storage = self.make_storage(uid)
        state = make_state([sample_instance("t_alpha#0")])
        version = storage.compare_and_swap(None, state, writing(["t_alpha#0"]))
        storage.compare_and_swap(version, attrs.evolve(state, tasks={}), writing([]))
        with pytest.raises(SerializationError, match="does not have"):
            storage.load(Scope(unresolved=True))
