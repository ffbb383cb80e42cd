"""Keyed fire latency against the number of idempotency keys a session holds: flat?

Each session first gets N fire records, written straight through its storage's
``compare_and_swap`` (``Changes.fire_records``, 1,000 per commit: what N keyed
fires would leave behind, without N fires through the manager). Then, round
robin across the sizes (as in ``latency.py``), the timed fires go through the
manager, each on ``tick`` (``t_every``, ``andEvery: tick``):

* *new key*: a key the session has not seen: the fire looks its record up,
  finds none, schedules a new instance and writes the record;
* *duplicate*: the key of the previous new-key fire again: the fire finds the
  record and writes nothing (it reads the first fire's instance back).

Every run checks its outcome: one instance per new key, each scheduled once,
none for a duplicate, and every seeded record still there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from benchmarks.common import (
    RecordingRunner,
    StorageFactory,
    median_ms,
    recording_manager,
    uid,
)
from triggers_core import Storage, TriggerManager
from triggers_core.engine.idempotency import fire_key
from triggers_core.engine.scopes import Changes, Scope

CONFIG = {"t_every": {"after": ["tick"], "andEvery": "tick", "run": "bench_task"}}
SEED_BATCH = 1_000


def seed_keys(storage: Storage, count: int) -> None:
    """``count`` fire records of ``tick`` (keys ``seed-0``...), ``SEED_BATCH`` per commit."""
    for start in range(0, count, SEED_BATCH):
        records = {
            fire_key("tick", f"seed-{n}"): () for n in range(start, min(count, start + SEED_BATCH))
        }
        snapshot = storage.load()
        storage.compare_and_swap(snapshot.version, snapshot.state, Changes(fire_records=records))


def keyed(
    make: StorageFactory, sizes: Sequence[int], fires: int, warmup: int
) -> tuple[list[float], list[float]]:
    """Median ms per new-key fire and per duplicate fire, for each of ``sizes`` stored keys."""
    managers: list[TriggerManager] = []
    runners: list[RecordingRunner] = []
    for size in sizes:
        storage = make(uid(f"keys{size}"))
        manager, runner = recording_manager(storage)
        manager.update_configuration(CONFIG)
        seed_keys(storage, size)
        managers.append(manager)
        runners.append(runner)
    new: list[list[float]] = [[] for _ in sizes]
    duplicate: list[list[float]] = [[] for _ in sizes]
    for n in range(warmup + fires):
        for index, manager in enumerate(managers):
            began = time.perf_counter()
            scheduled = manager.fire("tick", {"n": n}, idempotency_key=f"bench-{n}")
            middle = time.perf_counter()
            again = manager.fire("tick", {"n": -1}, idempotency_key=f"bench-{n}")
            ended = time.perf_counter()
            assert [i.name for i in scheduled] == [f"t_every#{n}"], scheduled
            assert [i.name for i in again] == [f"t_every#{n}"], again
            if n >= warmup:
                new[index].append(middle - began)
                duplicate[index].append(ended - middle)
    for size, manager, runner in zip(sizes, managers, runners, strict=True):
        state = manager.storage.load_full().state
        assert len(state.instances) == warmup + fires
        assert state.counters["t_every"] == warmup + fires
        assert len(runner.dispatched) == len(set(runner.dispatched)) == warmup + fires
        sample = {fire_key("tick", f"seed-{n}") for n in range(0, size, max(1, size // 50))}
        found = manager.storage.load(Scope(fire_keys=frozenset(sample))).state.fire_records
        assert len(found) == len(sample), (size, len(found), len(sample))
    return [median_ms(s) for s in new], [median_ms(s) for s in duplicate]
