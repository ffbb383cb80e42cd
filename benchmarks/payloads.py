"""Fire latency before and after one huge fire of a trigger no task uses (issue 23, item 7).

A session whose ``andEvery`` task creates an instance per fire (seeded from one other
trigger) is fired N times; then a trigger no task uses is fired once with a 20 MB
payload (``max_value_bytes`` raised to allow it); then the task's trigger N times
again. The latest kwargs are read only where an operation needs them
(:mod:`triggers_core.engine.latest`), so the ratio after/before should stay near 1 on
the backends that keep them apart (memory, the key-value layout). Medians of each
run of N; nothing asserts a timing (``tests/backends/test_latest_kwargs_cost.py``
counts the bytes instead).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.memcached import memcached_process
from triggers_core import TriggerManager
from triggers_core.runtime.registry import open_storage
from triggers_core.testing.storage_contract import RecordingRunner

CONFIG = {
    "t_every": {"after": ["tick", "ready"], "andEvery": "tick", "run": "bench.task"},
}
HUGE_BYTES = 20 * 1024 * 1024


def measure(storage: Any, fires: int, huge: int) -> tuple[float, float]:
    """(median ms of ``fires`` fires before, and after, one fire of ``huge`` bytes)."""
    storage.max_value_bytes = 4 * huge
    runner = RecordingRunner()
    manager = TriggerManager(storage, runners={"rec": runner}, default_runner="rec")
    manager.update_configuration(CONFIG)
    manager.fire("ready", {"ok": True})

    def timed(first: int) -> float:
        times = []
        for n in range(first, first + fires):
            start = time.perf_counter()
            manager.fire("tick", {"n": n})
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000

    timed(0)  # warm up
    before = timed(fires)
    manager.fire("unused", {"blob": "x" * huge})
    after = timed(2 * fires)
    assert len(runner.dispatched) == 3 * fires  # every fire scheduled its instance
    return before, after


def report(quick: bool) -> list[str]:
    """The report's section: per backend, the medians and their ratio."""
    fires = 5 if quick else 30
    huge = 256 * 1024 if quick else HUGE_BYTES
    lines = [
        "",
        f"### Fire latency before and after one {huge // 1024} KB fire of an unused "
        f"trigger (median ms of {fires} fires)",
        "",
        "| backend | before | after | after / before |",
        "| --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as tmp, memcached_process() as memcached:
        prefix = f"bench{uuid.uuid4().hex[:8]}:"
        factories: list[tuple[str, Callable[[str], Any]]] = [
            ("memory", lambda uid: open_storage("memory://payloads", uid)),
            (
                "sqlite",
                lambda uid: open_storage(
                    f"sqlite:///{Path(tmp) / 'payloads.db'}?triggers_create_schema=true", uid
                ),
            ),
            ("memcached", lambda uid: open_storage(f"{memcached}?prefix={prefix}", uid)),
        ]
        for label, factory in factories:
            before, after = measure(factory(f"payload-{uuid.uuid4().hex}"), fires, huge)
            lines.append(f"| {label} | {before:.2f} | {after:.2f} | {after / before:.2f} |")
    return lines
