"""Compare-and-swap in the storage contract: one writer wins, the others change nothing.

A missing session loads empty; a session is created once; what is written
(header and instances) reads back the same from the writer and from a new
storage; a stale compare-and-swap is a conflict and writes nothing; versions
are never reused; and of threads racing to create a session, or to write on
one version, exactly one wins.
"""

from __future__ import annotations

import threading
from typing import Any

import attrs
import pytest

from triggers_core.engine.scopes import Scope
from triggers_core.engine.state import SessionState, Status
from triggers_core.errors import ConflictError
from triggers_core.runtime.storage import Storage, Version
from triggers_core.testing._contract_support import race_in_threads
from triggers_core.testing._storage_support import (
    StorageCase,
    header_json,
    make_state,
    sample_instance,
    writing,
)

__all__ = ["CompareAndSwapContract"]


class CompareAndSwapContract(StorageCase):
    """Versions, conflicts and the thread races (see the module docstring)."""

    def test_missing_session_loads_empty(self, uid: str) -> None:
        storage = self.make_storage(uid)
        for snapshot in (
            storage.load(),
            storage.load(Scope(names=frozenset({"t_alpha#0"}))),
            storage.load_full(),
        ):
            assert snapshot.version is None
            assert header_json(snapshot.state) == header_json(SessionState())
            assert dict(snapshot.state.instances) == {}
        assert len(storage) == 0
        assert "t_alpha#0" not in storage

    def test_create_then_load(self, uid: str) -> None:
        storage = self.make_storage(uid)
        state = make_state([sample_instance("t_alpha#0")], latest_kwargs={"a": {"k": [1, "ü"]}})
        version = storage.compare_and_swap(None, state, writing(["t_alpha#0"]))
        assert version is not None
        self.assert_stored(storage, state, version)
        self.assert_stored(self.make_storage(uid), state, version)

    def test_the_whole_header_round_trips(self, uid: str) -> None:
        storage = self.make_storage(uid)
        state = attrs.evolve(
            make_state([sample_instance("t_alpha#0")], latest_kwargs={"a": {"k": 1}}),
            unsettled={"t_alpha": frozenset({"t_alpha#0"})},
            settled={"t_alpha": frozenset({"a"}), "t_beta": frozenset({"b", "c"})},
        )
        v1 = storage.compare_and_swap(None, state, writing(["t_alpha#0"]))
        for reader in (storage, self.make_storage(uid)):
            header = reader.load().state
            assert (header.unsettled, header.settled) == (state.unsettled, state.settled)
            self.assert_stored(reader, state, v1)
        # A header-only write (no instance, no configuration) replaces both.
        changed = attrs.evolve(state, unsettled={}, settled={"t_beta": frozenset({"b"})})
        v2 = storage.compare_and_swap(v1, changed, writing([], config=False))
        for reader in (storage, self.make_storage(uid)):
            header = reader.load().state
            assert (header.unsettled, header.settled) == ({}, {"t_beta": frozenset({"b"})})
            self.assert_stored(reader, changed, v2)

    def test_create_once(self, uid: str) -> None:
        first, second = self.make_storage(uid), self.make_storage(uid)
        winner = make_state([sample_instance("t_alpha#0", marker="first")])
        loser = make_state(
            [sample_instance("t_alpha#0", marker="second"), sample_instance("t_beta#0")]
        )
        version = first.compare_and_swap(None, winner, writing(["t_alpha#0"]))
        with pytest.raises(ConflictError):
            second.compare_and_swap(None, loser, writing(["t_alpha#0", "t_beta#0"]))
        self.assert_stored(second, winner, version)

    def test_stale_compare_and_swap_is_rejected_and_changes_nothing(self, uid: str) -> None:
        storage = self.make_storage(uid)
        v1 = storage.compare_and_swap(
            None, make_state([sample_instance("t_alpha#0")]), writing(["t_alpha#0"])
        )
        current = make_state(
            [sample_instance("t_alpha#0", Status.SCHEDULED, marker=2)], latest_kwargs={"a": {}}
        )
        v2 = storage.compare_and_swap(v1, current, writing(["t_alpha#0"]))
        assert v2 != v1
        stale = make_state(
            [sample_instance("t_alpha#0", Status.FINISHED, marker=3), sample_instance("t_beta#0")],
            latest_kwargs={"b": {}},
        )
        with pytest.raises(ConflictError):
            storage.compare_and_swap(v1, stale, writing(["t_alpha#0", "t_beta#0"]))
        self.assert_stored(storage, current, v2)
        assert storage.load().version == v2

    def test_versions_are_never_reused(self, uid: str) -> None:
        storage = self.make_storage(uid)
        seen: list[Version] = []
        version: Version | None = None
        for n in range(5):
            state = make_state([sample_instance(f"t_alpha#{i}") for i in range(n + 1)])
            version = storage.compare_and_swap(version, state, writing([f"t_alpha#{n}"]))
            assert version not in seen
            seen.append(version)
            assert storage.load().version == version

    def _race(self, storages: list[Storage], expected: Version | None) -> list[Any]:
        """Each storage writes its own instance at ``expected``: a version or a conflict."""

        def attempt(index: int, start: threading.Barrier) -> Any:
            name = f"t_alpha#{index}"
            state = make_state([sample_instance(name, marker=index)])
            start.wait(timeout=30)
            try:
                return storages[index].compare_and_swap(expected, state, writing([name]))
            except ConflictError as exc:
                return exc
            finally:
                # Each thread uses its own storage: release what the thread opened
                # (per-thread connections, e.g. Django's database connections).
                storages[index].close()

        return race_in_threads(attempt, threads=len(storages), timeout=60)

    def _check_one_winner(self, uid: str, outcomes: list[Any]) -> None:
        winners = [i for i, o in enumerate(outcomes) if not isinstance(o, ConflictError)]
        assert len(winners) == 1, f"expected exactly one winner, got {outcomes}"
        index = winners[0]
        state = make_state([sample_instance(f"t_alpha#{index}", marker=index)])
        self.assert_stored(self.make_storage(uid), state, outcomes[index])

    def test_threads_racing_to_create_one_winner(self, uid: str) -> None:
        storages = [self.make_storage(uid) for _ in range(self.race_threads)]
        self._check_one_winner(uid, self._race(storages, None))

    def test_threads_racing_on_one_version_one_winner(self, uid: str) -> None:
        storages = [self.make_storage(uid) for _ in range(self.race_threads)]
        base = storages[0].compare_and_swap(None, make_state(), writing([]))
        self._check_one_winner(uid, self._race(storages, base))
