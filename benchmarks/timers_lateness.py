"""Timer lateness at a sustained rate (issue 24): ``rate`` timers due per second for ``duration`` s.

Every session holds one instance with a ``delay``; the sessions are seeded
ahead of time (straight through the engine and one compare-and-swap each, not
measured) so that their due times are spread uniformly over ``duration``
seconds starting a few seconds after the seeding ends. Then the store's clock
runs in real time, as users run it:

* ``thread``: the in-process runner's clock thread of the store
  (:class:`~triggers_core.runtime.recovery.StoreSweeper`, a tick every second);
* ``race``: two processes (two threads for ``memory``, which one process holds)
  each calling :func:`~triggers_core.runtime.clock.tick_store` every second,
  racing on the same due timers (a Celery worker's sweep bootstep does this).

Lateness is the instance's ``scheduled`` timestamp minus its ``delayedUntil``.
Checked: every timer fired exactly once (each instance scheduled, the
``timer fired`` actions of all tickers name each instance once).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.common import RecordingRunner, StorageFactory
from triggers_core import SessionState, TriggerManager, engine
from triggers_core.engine.leases import parse_time
from triggers_core.engine.state import Status
from triggers_core.runtime import recovery
from triggers_core.runtime.clock import tick_store
from triggers_core.runtime.storage import Storage

DELAY = timedelta(hours=1)
CONFIG = {"t_x": {"after": ["go"], "run": "bench", "delay": "1h"}}


def seed(make: StorageFactory, prefix: str, dues: list[datetime]) -> None:
    """Session ``prefix + i`` gets one instance delayed until ``dues[i]``."""
    config = engine.update_configuration(SessionState(), CONFIG).state
    for i, due in enumerate(dues):
        storage = make(f"{prefix}{i}")
        snapshot = storage.load_full()
        configured = engine.update_configuration(snapshot.state, config.tasks)
        fired = engine.fire(configured.state, "go", {}, now=due - DELAY)
        changes = fired.changes
        storage.compare_and_swap(
            snapshot.version,
            fired.state,
            type(changes)(
                instances=changes.instances,
                created=changes.created,
                config=True,
                fire_records=changes.fire_records,
                due=changes.due,
            ),
        )


def _factory(storage: Storage) -> TriggerManager:
    runner = RecordingRunner()
    manager = TriggerManager(storage, runners={"rec": runner}, default_runner="rec")
    manager.sweep_interval = None
    return manager


@dataclass
class Ticks:
    """What each tick of one ticker did: (seconds it took, timers it fired)."""

    ticks: list[tuple[float, int]] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)

    def record(self, report: Any, took: float) -> None:
        names = [f"{a.session}/{a.instance}" for a in report.actions if a.action == "timer fired"]
        self.fired.extend(names)
        if report.examined:
            self.ticks.append((took, len(names)))


@contextlib.contextmanager
def _recorded_ticks(ticks: Ticks) -> Iterator[None]:
    """The clock thread's ``tick_store`` calls, recorded (restored afterwards)."""
    original = recovery.tick_store

    def recording(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        report = original(*args, **kwargs)
        ticks.record(report, time.perf_counter() - started)
        return report

    recovery.tick_store = recording  # type: ignore[assignment]
    try:
        yield
    finally:
        recovery.tick_store = original


def _tick_loop(storage: Storage, last_due: float, ticks: Ticks, every: float) -> None:
    """Tick every ``every`` s until a tick after ``last_due`` (epoch s) finds nothing due."""
    deadline = time.time() + 600
    while time.time() < deadline:
        started = time.perf_counter()
        report = tick_store(storage, _factory)
        took = time.perf_counter() - started
        ticks.record(report, took)
        if not report.examined and time.time() > last_due + 1:
            return
        time.sleep(max(0.0, every - took))


def _race_process(
    *, url: str, session: str, last_due: float, results: Any, tick_workers: int | None
) -> None:
    try:
        from triggers_core.runtime.registry import open_storage  # noqa: PLC0415

        storage = open_storage(url, session)
        if tick_workers is not None:
            type(storage).tick_workers = tick_workers
        ticks = Ticks()
        _tick_loop(storage, last_due, ticks, 1.0)
        results.put(("ok", (ticks.ticks, ticks.fired)))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def run(
    label: str,
    backend: Callable[[], AbstractContextManager[StorageFactory]],
    *,
    rate: int,
    duration: float,
    mode: str,
    shared: bool,
    tick_workers: int | None = None,
) -> str:
    """One row: ``rate`` due timers/s for ``duration`` s, ticked by ``mode``."""
    count = int(rate * duration)
    with backend() as make:
        if tick_workers is not None:
            type(make("late-0")).tick_workers = tick_workers
        pilot = time.perf_counter()  # the seeding's pace here and now (never due)
        seed(make, "pilot-", [datetime.now(UTC) + timedelta(days=1)] * 100)
        lead = (time.perf_counter() - pilot) / 100 * count * 2 + 10
        start = datetime.now(UTC) + timedelta(seconds=lead)
        dues = [start + timedelta(seconds=i / rate) for i in range(count)]
        seeding = time.perf_counter()
        seed(make, "late-", dues)
        seeding = time.perf_counter() - seeding
        spare = (start - datetime.now(UTC)).total_seconds()
        assert spare > 0, f"seeding ran past the first due time by {-spare:.1f} s"
        last_due = dues[-1].timestamp()
        storage = make("late-0")
        all_ticks: list[Ticks] = []
        if mode == "thread":
            ticks = Ticks()
            all_ticks.append(ticks)
            with _recorded_ticks(ticks):
                sweeper = recovery.StoreSweeper(storage, _factory, interval=3600, tick_interval=1.0)
                sweeper._thread.start()
                deadline = time.time() + 600
                while len(ticks.fired) < count and time.time() < deadline:
                    time.sleep(0.2)
                sweeper.stop()
                sweeper._thread.join(30)
        elif shared:
            url = storage.reference()
            assert url is not None
            context = multiprocessing.get_context("spawn")
            results = context.Queue()
            workers = [
                context.Process(
                    target=_race_process,
                    kwargs={
                        "url": url,
                        "session": "late-0",
                        "last_due": last_due,
                        "results": results,
                        "tick_workers": tick_workers,
                    },
                    daemon=True,
                )
                for _ in range(2)
            ]
            for worker in workers:
                worker.start()
            for _ in workers:
                kind, payload = results.get(timeout=900)
                if kind != "ok":
                    raise RuntimeError(payload)
                ticks = Ticks(*payload)
                all_ticks.append(ticks)
            for worker in workers:
                worker.join(30)
        else:
            threads = []
            for _ in range(2):
                ticks = Ticks()
                all_ticks.append(ticks)
                threads.append(
                    threading.Thread(target=_tick_loop, args=(make("late-0"), last_due, ticks, 1.0))
                )
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        late = _lateness(make, count)
        workers = type(storage).tick_workers
    fired = [name for t in all_ticks for name in t.fired]
    assert len(fired) == count == len(set(fired)), (len(fired), len(set(fired)), count)
    per_tick = sorted(n for t in all_ticks for _, n in t.ticks if n)
    took = sorted(s for t in all_ticks for s, n in t.ticks if n)
    late.sort()
    p50, p99 = late[len(late) // 2], late[min(len(late) - 1, int(len(late) * 0.99))]
    return (
        f"| {label} | {mode} | {rate} x {duration:g} s | {p50 * 1000:.0f} | {p99 * 1000:.0f} | "
        f"{late[-1] * 1000:.0f} | {workers} | {len(per_tick)} | {per_tick[len(per_tick) // 2]} / "
        f"{per_tick[-1]} | {took[len(took) // 2] * 1000:.0f} / {took[-1] * 1000:.0f} | "
        f"{seeding:.0f} s |"
    )


def _lateness(make: StorageFactory, count: int) -> list[float]:
    late = []
    for i in range(count):
        instance = make(f"late-{i}").get_instance("t_x#0")
        assert instance.status is Status.SCHEDULED, (i, instance.status)
        scheduled = parse_time(instance.metadata["timestamps"]["scheduled"])
        due = parse_time(instance.metadata["delayedUntil"])
        assert scheduled is not None
        assert due is not None
        late.append((scheduled - due).total_seconds())
    return late


HEADER = [
    "| backend | clock | due timers | p50 ms | p99 ms | max ms | tick threads | ticks with timers "
    "| timers per tick (median / max) | tick ms (median / max) | seeding |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]
