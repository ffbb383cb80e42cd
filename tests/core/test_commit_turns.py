"""Threads sharing a storage object take turns committing instead of conflicting."""

from __future__ import annotations

import threading
import time

import pytest

from triggers_core import (
    ConcurrencyError,
    ConflictError,
    MemoryStorage,
    MemoryStore,
    TriggerManager,
)
from triggers_core.engine.scopes import HEADER_ONLY, Changes, Scope, Selector
from triggers_core.engine.state import SessionState
from triggers_core.runtime import commit as commit_module
from triggers_core.runtime.storage import Snapshot, Version
from triggers_core.testing.storage_contract import RecordingRunner

EVERY = {"t_every": {"after": ["tick"], "andEvery": "tick", "run": "T"}}


class SlowStorage(MemoryStorage):
    """A memory storage with a database's round trip: 1 ms per load, conflicts counted."""

    def __init__(self, uid: str, store: MemoryStore) -> None:
        super().__init__(uid, store)
        self.conflicts = 0

    def load(self, scope: Scope | Selector = HEADER_ONLY) -> Snapshot:
        snapshot = super().load(scope)
        time.sleep(0.001)  # the answer travels back: others may load the same version
        return snapshot

    def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        try:
            return super().compare_and_swap(expected, state, changes)
        except ConflictError:
            self.conflicts += 1
            raise


def test_threads_sharing_a_storage_never_conflict() -> None:
    storage = SlowStorage("turns", MemoryStore())
    runner = RecordingRunner()
    manager = TriggerManager(storage, runners={"rec": runner}, default_runner="rec")
    manager.update_configuration(EVERY)
    barrier = threading.Barrier(4)

    def fire_some(index: int) -> None:
        barrier.wait(10)
        for n in range(20):
            manager.fire("tick", {"thread": index, "n": n})

    threads = [threading.Thread(target=fire_some, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert storage.conflicts == 0
    assert sorted(runner.dispatched) == sorted(f"t_every#{n}" for n in range(80))
    assert storage.load().state.counters == {"t_every": 80}


def test_a_turn_that_never_comes_is_a_concurrency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commit_module, "COMMIT_TURN_TIMEOUT", 0.05)
    storage = MemoryStorage("stuck", MemoryStore())
    manager = TriggerManager(storage)
    with storage.commit_lock, pytest.raises(ConcurrencyError, match=r"waited 0\.05s"):
        manager.update_configuration(EVERY)
    assert storage.load().version is None
    manager.update_configuration(EVERY)  # the turn is free again
    assert storage.load().version == 1
