"""Fire latency before and after one huge fire of a trigger no task uses (issue 23, item 7).

A session whose ``andEvery`` task creates an instance per fire (seeded from one other
trigger) is fired N times; then a trigger no task uses is fired once with a 20 MB
payload (``max_value_bytes`` raised to allow it); then the task's trigger N times
again. The latest kwargs are read only where an operation needs them
(:mod:`triggers_core.engine.latest`), so the ratio after/before should stay near 1 on
every backend: memory, the key-value layout, and SQL (the ``latest`` table; SQLite,
and PostgreSQL and MariaDB when they answer at the URLs of
:mod:`benchmarks.backends`). Medians of each
run of N; nothing asserts a timing (``tests/backends/test_latest_kwargs_cost.py``
counts the bytes instead).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.backends import DEFAULT_URLS, URL_ENV, reachable, sql_backend
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


def _packet_room(storage: Any) -> int:
    """MySQL/MariaDB: 3/4 of ``max_allowed_packet`` (one statement carries the payload)."""
    engine = getattr(storage, "engine", None)
    if engine is None or engine.dialect.name not in ("mysql", "mariadb"):
        return 1 << 62
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one()) * 3 // 4


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
        with contextlib.ExitStack() as servers:
            for label in ("postgresql", "mariadb"):
                url = os.environ.get(URL_ENV[label], DEFAULT_URLS[label])
                if url != "off" and reachable(url):
                    factories.append((label, servers.enter_context(sql_backend(url))))
            for label, factory in factories:
                storage = factory(f"payload-{uuid.uuid4().hex}")
                size = min(huge, _packet_room(storage))
                before, after = measure(storage, fires, size)
                note = "" if size == huge else f" ({size // (1024 * 1024)} MB: max_allowed_packet)"
                lines.append(
                    f"| {label}{note} | {before:.2f} | {after:.2f} | {after / before:.2f} |"
                )
    return lines
