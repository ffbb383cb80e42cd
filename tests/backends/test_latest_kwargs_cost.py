"""A huge fire of a trigger no task uses does not make later fires of its session pay for
its size: the latest kwargs are read only where an operation needs them (``LatestKwargs``)
and written only when they change. Counted in bytes read and written (the memory storage:
values read and copied), never timed; the times are in ``benchmarks/``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from kv_memory import DictKeyValueClient, DictStore

from triggers_backends.kv.storage import KeyValueStorage
from triggers_core import MemoryStorage, TriggerManager
from triggers_core.engine.latest import LatestKwargs
from triggers_core.engine.scopes import Scope, Selector
from triggers_core.runtime.storage import Snapshot
from triggers_core.testing.storage_contract import RecordingRunner

CONFIG = {
    "t_every": {"after": ["tick", "ready"], "andEvery": "tick", "run": "triggers.DevNullTask"}
}
HUGE = 5 * 1024 * 1024


def manager_on(storage: Any) -> TriggerManager:
    storage.max_value_bytes = 64 * 1024 * 1024
    return TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")


def fires(manager: TriggerManager, first: int, count: int) -> None:
    for n in range(first, first + count):
        scheduled = manager.fire("tick", {"n": n})
        assert [i.name for i in scheduled] == [f"t_every#{n}"]


class CountingClient(DictKeyValueClient):
    """Counts the bytes of the values read and written."""

    def __init__(self, store: DictStore) -> None:
        super().__init__(store)
        self.read = 0
        self.written = 0

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        found = super().get_many(keys)
        self.read += sum(map(len, found.values()))
        return found

    def gets(self, key: str) -> Any:
        found = super().gets(key)
        self.read += 0 if found is None else len(found[0])
        return found

    def add(self, key: str, value: bytes) -> bool:
        self.written += len(value)
        return super().add(key, value)

    def cas(self, key: str, value: bytes, token: Any) -> bool:
        self.written += len(value)
        return super().cas(key, value, token)

    def set_many(self, items: Mapping[str, bytes]) -> None:
        self.written += sum(map(len, items.values()))
        super().set_many(items)


def test_a_huge_fire_costs_later_fires_nothing_on_a_key_value_store() -> None:
    client = CountingClient(DictStore(max_value_size=1024 * 1024))  # the huge one is chunked
    manager = manager_on(KeyValueStorage(f"huge-{uuid.uuid4().hex}", client))
    manager.update_configuration(CONFIG)
    manager.fire("ready", {"ok": True})
    fires(manager, 0, 3)
    client.read = client.written = 0
    fires(manager, 3, 5)
    before = (client.read, client.written)
    manager.fire("unused", {"blob": "x" * HUGE})
    assert client.written > HUGE  # stored once
    client.read = client.written = 0
    fires(manager, 8, 5)
    after = (client.read, client.written)
    # Five fires read and write what five fires did before (the version's digits and a
    # few more instances aside): nothing of the 5 MB.
    assert after[0] <= before[0] * 1.25 + 4096, (before, after)
    assert after[1] <= before[1] * 1.25 + 4096, (before, after)
    assert manager.storage.latest_kwargs["unused"] == {"blob": "x" * HUGE}  # still there


class RecordingMemory(MemoryStorage):
    """Keeps the latest kwargs of every load, to see which values were read."""

    def __init__(self, uid: str) -> None:
        super().__init__(uid)
        self.loaded: list[LatestKwargs] = []

    def load(self, scope: Scope | Selector = Scope()) -> Snapshot:  # noqa: B008 - frozen
        snapshot = super().load(scope)
        latest = snapshot.state.latest_kwargs
        if isinstance(latest, LatestKwargs):  # (a new session has none)
            self.loaded.append(latest)
        return snapshot


def test_a_huge_fire_costs_later_fires_nothing_in_memory() -> None:
    storage = RecordingMemory(f"huge-{uuid.uuid4().hex}")
    manager = manager_on(storage)
    manager.update_configuration(CONFIG)
    manager.fire("ready", {"ok": True})
    manager.fire("unused", {"blob": "x" * HUGE})
    stored = storage.store._sessions[storage.uid].latest["unused"]
    storage.loaded.clear()
    fires(manager, 0, 5)
    # Each fire read "ready" (to seed its instance) and set "tick"; none read "unused",
    # and none copied it: the stored value is the very same object.
    assert storage.loaded
    assert all("unused" not in latest.read for latest in storage.loaded)
    assert storage.store._sessions[storage.uid].latest["unused"] is stored
    assert storage.latest_kwargs["unused"] == {"blob": "x" * HUGE}
