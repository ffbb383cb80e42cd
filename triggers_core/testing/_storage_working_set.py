"""The working set in the storage contract: what ``load`` reads and a write touches.

``load(scope)`` returns the header and the instances the scope names (by
name, the unstarted instances of some tasks, the unresolved ones, or what a
selector decides from the header of the same snapshot), and no others unless
``exact_working_set`` is False; an instance moves in and out of the working
set as its status changes. ``compare_and_swap`` writes only the instances
``changes.instances`` names, and the configuration only when
``changes.config`` says so.
"""

from __future__ import annotations

import attrs

from triggers_core import engine
from triggers_core.engine.scopes import Scope
from triggers_core.engine.state import SessionState, Status
from triggers_core.runtime.storage import Snapshot, Storage
from triggers_core.testing._storage_support import (
    TASKS,
    StorageCase,
    assert_working_set,
    header_json,
    make_state,
    sample_instance,
    writing,
)

__all__ = ["WorkingSetContract"]


class WorkingSetContract(StorageCase):
    """Scoped loads and partial writes (see the module docstring)."""

    def _stored_mix(self, storage: Storage) -> SessionState:
        instances = [
            sample_instance("t_alpha#0", Status.FINISHED),
            sample_instance("t_alpha#1", Status.SCHEDULED),
            sample_instance("t_alpha#2", Status.UNSTARTED),
            sample_instance("t_beta#0", Status.ABANDONED),
            sample_instance("t_beta#1", Status.FAILED),
            sample_instance("t_beta#2", Status.UNSTARTED),
            sample_instance("t_beta#3", Status.UNSTARTED),
        ]
        state = make_state(instances)
        storage.compare_and_swap(None, state, writing([i.name for i in instances]))
        return state

    def _check_working_set(self, snapshot: Snapshot, state: SessionState, wanted: set[str]) -> None:
        assert_working_set(
            snapshot, header_json(state), state.instances, wanted, exact=self.exact_working_set
        )

    def test_load_returns_what_the_scope_names(self, uid: str) -> None:
        storage = self.make_storage(uid)
        state = self._stored_mix(storage)
        unresolved = {"t_alpha#1", "t_alpha#2", "t_beta#1", "t_beta#2", "t_beta#3"}
        self._check_working_set(storage.load(), state, set())
        self._check_working_set(storage.load(Scope(unresolved=True)), state, unresolved)
        self._check_working_set(
            storage.load(Scope(names=frozenset({"t_beta#0", "t_alpha#1"}))),
            state,
            {"t_beta#0", "t_alpha#1"},
        )
        self._check_working_set(
            storage.load(Scope(unstarted_of=frozenset({"t_beta"}))), state, {"t_beta#2", "t_beta#3"}
        )
        self._check_working_set(
            storage.load(
                Scope(names=frozenset({"t_alpha#0"}), unstarted_of=frozenset({"t_alpha", "t_x"}))
            ),
            state,
            {"t_alpha#0", "t_alpha#2"},
        )
        assert set(storage.load_full().state.instances) == set(state.instances)
        # The inspection API still sees everything.
        assert set(storage.instances) == set(state.instances)
        assert storage["t_alpha#0"].status is Status.FINISHED
        assert "t_beta#0" in storage
        assert [i.name for i in storage.get_unresolved_instances()] == sorted(unresolved)

    def test_load_of_missing_names_returns_the_others(self, uid: str) -> None:
        storage = self.make_storage(uid)
        state = self._stored_mix(storage)
        snapshot = storage.load(Scope(names=frozenset({"t_beta#9", "t_gamma#0", "t_beta#1"})))
        self._check_working_set(snapshot, state, {"t_beta#1"})
        self._check_working_set(storage.load(Scope(names=frozenset({"t_beta#9"}))), state, set())
        assert "t_beta#9" not in storage

    def test_a_selector_decides_from_the_header_in_the_same_snapshot(self, uid: str) -> None:
        storage = self.make_storage(uid)
        state = self._stored_mix(storage)
        seen: list[SessionState] = []

        def select(header: SessionState) -> Scope:
            seen.append(header)
            return Scope(unstarted_of=frozenset(t for t in header.tasks if t.endswith("beta")))

        snapshot = storage.load(select)
        self._check_working_set(snapshot, state, {"t_beta#2", "t_beta#3"})
        assert len(seen) == 1
        assert header_json(seen[0]) == header_json(state)
        assert snapshot.version == storage.load_full().version

    def test_resolving_an_instance_moves_it_out_of_the_working_set(self, uid: str) -> None:
        storage = self.make_storage(uid)
        unresolved = Scope(unresolved=True)
        unstarted = Scope(unstarted_of=frozenset({"t_alpha"}))
        v1 = storage.compare_and_swap(
            None, make_state([sample_instance("t_alpha#0")]), writing(["t_alpha#0"])
        )
        assert set(storage.load(unresolved).state.instances) == {"t_alpha#0"}
        assert set(storage.load(unstarted).state.instances) == {"t_alpha#0"}
        done = make_state([sample_instance("t_alpha#0", Status.FINISHED, marker=1)])
        v2 = storage.compare_and_swap(v1, done, writing(["t_alpha#0"]))
        if self.exact_working_set:
            assert set(storage.load(unresolved).state.instances) == set()
            assert set(storage.load(unstarted).state.instances) == set()
        named = storage.load(Scope(names=frozenset({"t_alpha#0"}))).state.instances
        assert named["t_alpha#0"].status is Status.FINISHED
        # ... and back again (an operator can force any status).
        again = make_state([sample_instance("t_alpha#0", Status.UNSTARTED, marker=2)])
        v3 = storage.compare_and_swap(v2, again, writing(["t_alpha#0"]))
        assert set(storage.load(unresolved).state.instances) >= {"t_alpha#0"}
        assert set(storage.load(unstarted).state.instances) >= {"t_alpha#0"}
        self.assert_stored(storage, again, v3)

    def test_only_changed_instances_are_written(self, uid: str) -> None:
        storage = self.make_storage(uid)
        history = sample_instance("t_alpha#0", Status.FINISHED, marker="original")
        pending = sample_instance("t_alpha#1", Status.UNSTARTED, marker="original")
        v1 = storage.compare_and_swap(
            None, make_state([history, pending]), writing([history.name, pending.name])
        )
        # A later commit carries altered copies of both but names only a new instance.
        altered = [
            sample_instance("t_alpha#0", Status.FAILED, marker="altered"),
            sample_instance("t_alpha#1", Status.SCHEDULED, marker="altered"),
            sample_instance("t_alpha#2", Status.UNSTARTED, marker="new"),
        ]
        v2 = storage.compare_and_swap(
            v1, make_state(altered), writing(["t_alpha#2"], created=["t_alpha#2"])
        )
        expected = make_state([history, pending, altered[2]])
        self.assert_stored(storage, expected, v2)

    def test_configuration_is_written_only_when_it_changed(self, uid: str) -> None:
        storage = self.make_storage(uid)
        v1 = storage.compare_and_swap(None, make_state(), writing([]))
        other = engine.update_configuration(
            SessionState(), {"t_other": {"after": ["z"], "run": "contract_task"}}
        ).state.tasks
        # The header changes, the tasks in the state differ, but changes.config is False.
        header_only = attrs.evolve(make_state(), tasks=other, counters={"t_alpha": 3})
        v2 = storage.compare_and_swap(v1, header_only, writing([], config=False))
        stored = storage.load_full().state
        assert dict(stored.tasks) == dict(TASKS)
        assert stored.counters == {"t_alpha": 3}
        v3 = storage.compare_and_swap(v2, header_only, writing([], config=True))
        assert dict(storage.load().state.tasks) == dict(other)
        assert dict(self.make_storage(uid).load().state.tasks) == dict(other)
        assert storage.load().version == v3
