"""Repeat-fire latency with many tasks listening to one trigger: linear, not quadratic?

Each of K tasks waits for ``x`` and, in the *waiting* variant, for its own
``never<k>`` too (``after: [x, never<k>]``), so after the first fire of ``x``
every task has one unstarted instance that already recorded ``x``. In the
*scheduled* variant (``after: [x]``) the first fire schedules one instance per
task (a recording runner leaves them scheduled). Then ``x`` fires again and
again: a repeat fire changes nothing, but must look at every task that uses
``x`` (and, in the waiting variant, at its unstarted instance).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from benchmarks.common import StorageFactory, median_ms, recording_manager, uid
from triggers_core import Status


def config(tasks: int, *, waiting: bool) -> dict[str, dict[str, Any]]:
    return {
        f"t_{k:05d}": {"after": ["x", f"never{k}"] if waiting else ["x"], "run": "bench_task"}
        for k in range(tasks)
    }


def fanout(
    make: StorageFactory, sizes: Sequence[int], fires: int, warmup: int, *, waiting: bool
) -> list[float]:
    """Median ms per repeat fire of ``x`` for each number of tasks in ``sizes``."""
    sessions = []
    for size in sizes:
        manager, runner = recording_manager(make(uid(f"fanout{size}")))
        manager.update_configuration(config(size, waiting=waiting))
        manager.fire("x", {"first": True})  # untimed: one instance per task
        sessions.append((manager, runner))
    samples: list[list[float]] = [[] for _ in sizes]
    for n in range(warmup + fires):
        for index, (manager, _) in enumerate(sessions):
            began = time.perf_counter()
            scheduled = manager.fire("x", {"n": n})
            elapsed = time.perf_counter() - began
            assert scheduled == []
            if n >= warmup:
                samples[index].append(elapsed)
    for size, (manager, runner) in zip(sizes, sessions, strict=True):
        state = manager.storage.load_full().state
        assert len(state.instances) == size
        expected = Status.UNSTARTED if waiting else Status.SCHEDULED
        assert {i.status for i in state.instances.values()} == {expected}
        assert all(i.kwargs["x"] == {"first": True} for i in state.instances.values())
        assert len(runner.dispatched) == (0 if waiting else size)
    return [median_ms(each) for each in samples]
