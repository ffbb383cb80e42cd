"""Fire latency against session history size: is a fire's cost flat?

For each storage backend and each history size (0, 1,000 and 10,000 *finished*
instances already in the session), fire an ``andEvery`` trigger N times through
:class:`TriggerManager` with a runner that only records dispatches, and report
the median latency of ``manager.fire``. Between timed fires the new instance is
marked finished (untimed) so the working set stays the same size: only the
history grows. The history is seeded with one compare-and-swap, not 10,000 fires,
and the three sessions are fired round-robin so machine noise hits them alike.

Usage: ``nox -s bench`` or ``python benchmarks/fire_latency.py [--fires N]``.
PostgreSQL and MariaDB are used when reachable (override the URLs with
``TRIGGERS_BENCH_POSTGRES_URL`` / ``TRIGGERS_BENCH_MYSQL_URL``; set either to
``off`` to skip). Target: median(10,000) / median(0) <= 1.5.
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from triggers_core import MemoryStorage, MemoryStore, SessionState, Status, Storage, TriggerManager
from triggers_core.effects import ScheduleInstance
from triggers_core.engine import update_configuration
from triggers_core.runners import TaskRunner
from triggers_core.state import TaskInstance

HISTORY_SIZES = (0, 1_000, 10_000)
TARGET_RATIO = 1.5
CONFIG = {"t_every": {"after": ["tick"], "andEvery": "tick", "run": "bench_task"}}

DEFAULT_URLS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test",
}

StorageFactory = Callable[[str], Storage]


class RecordingRunner(TaskRunner):
    """Records dispatches; runs nothing (we time the fire, not the task)."""

    name = "bench-recording"

    def __init__(self) -> None:
        self.dispatched: list[str] = []

    def dispatch(self, manager: TriggerManager, effect: ScheduleInstance) -> None:
        self.dispatched.append(effect.instance_name)


def seeded_state(finished: int) -> SessionState:
    """A session whose history holds ``finished`` finished instances of ``t_every``."""
    tasks = update_configuration(SessionState(), CONFIG).state.tasks
    start = datetime(2024, 1, 1, tzinfo=UTC)
    instances = {}
    for n in range(finished):
        stamp = (start + timedelta(seconds=n)).isoformat()
        name = f"t_every#{n}"
        instances[name] = TaskInstance(
            name=name,
            task_name="t_every",
            status=Status.FINISHED,
            kwargs={"tick": {"n": n, "payload": "x" * 64}},
            metadata={
                "created": stamp,
                "lastModified": stamp,
                "timestamps": {"scheduled": stamp, "running": stamp, "finished": stamp},
                "actualKwargs": {"tick": {"n": n, "payload": "x" * 64}},
                "result": {"ok": True, "n": n},
            },
        )
    latest = {"tick": {"n": finished - 1}} if finished else {}
    return SessionState(
        tasks=tasks, instances=instances, latest_kwargs=latest, counters={"t_every": finished}
    )


def measure(make: StorageFactory, fires: int, warmup: int) -> list[float]:
    """Median seconds per fire for each of :data:`HISTORY_SIZES`.

    The sessions are fired round-robin (one fire in each per round), so a
    neighbour's load on a shared machine slows every size alike and cancels
    out of the ratio.
    """
    managers = []
    for finished in HISTORY_SIZES:
        storage = make(f"bench-{finished}-{uuid.uuid4().hex}")
        state = seeded_state(finished)
        storage.compare_and_swap(None, state, list(state.instances))
        runner = RecordingRunner()
        managers.append(TriggerManager(storage, runners={"rec": runner}, default_runner="rec"))
    samples: list[list[float]] = [[] for _ in HISTORY_SIZES]
    for n in range(warmup + fires):
        for index, manager in enumerate(managers):
            began = time.perf_counter()
            scheduled = manager.fire("tick", {"n": n})
            elapsed = time.perf_counter() - began
            if n >= warmup:
                samples[index].append(elapsed)
            # Untimed: finish it, so only the history grows, not the working set.
            manager.update_instance_status(scheduled[0], Status.FINISHED)
    for finished, manager in zip(HISTORY_SIZES, managers, strict=True):
        assert len(manager.storage.load_full().state.instances) == finished + warmup + fires
    return [statistics.median(each) for each in samples]


def _reachable(url: str) -> bool:
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - only when SQL backends run

    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 0), 1.0):
            return True
    except OSError:
        return False


@contextmanager
def memory_backend() -> Iterator[StorageFactory]:
    store = MemoryStore()
    yield lambda uid: MemoryStorage(uid, store)


@contextmanager
def sql_backend(url: str) -> Iterator[StorageFactory]:
    from triggers_backends.sqlalchemy import (  # noqa: PLC0415 - optional extra
        SQLAlchemyStorage,
        create_schema,
        drop_schema,
        shared_engine,
    )

    engine = shared_engine(url)
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    create_schema(engine, prefix)
    try:
        yield lambda uid: SQLAlchemyStorage(uid, engine, table_prefix=prefix)
    finally:
        drop_schema(engine, prefix)
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fires", type=int, default=200, help="timed fires per cell")
    parser.add_argument("--warmup", type=int, default=20, help="untimed fires first")
    parser.add_argument(
        "--strict", action="store_true", help=f"exit 1 if a ratio exceeds {TARGET_RATIO}"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        backends: list[tuple[str, Callable[[], AbstractContextManager[StorageFactory]]]] = [
            ("memory", memory_backend),
            ("sqlite", lambda: sql_backend(f"sqlite:///{Path(tmp) / 'bench.db'}")),
        ]
        for label, env in (
            ("postgresql", "TRIGGERS_BENCH_POSTGRES_URL"),
            ("mariadb", "TRIGGERS_BENCH_MYSQL_URL"),
        ):
            url = os.environ.get(env, DEFAULT_URLS[label])
            if url == "off":
                continue
            if _reachable(url):
                backends.append((label, functools.partial(sql_backend, url)))
            else:
                print(f"({label}: not reachable at {url}; skipped)", file=sys.stderr)

        print(
            f"fire latency, median of {args.fires} fires (after {args.warmup} warm-up), "
            "by finished instances already in the session"
        )
        header = f"{'backend':<12}" + "".join(f"{n:>12,}" for n in HISTORY_SIZES)
        print(header + f"{'10k/0':>9}  target <= {TARGET_RATIO}")
        worst = 0.0
        for label, backend in backends:
            with backend() as make:
                medians = measure(make, args.fires, args.warmup)
            ratio = medians[-1] / medians[0]
            if label != "memory":
                worst = max(worst, ratio)
            cells = "".join(f"{m * 1000:>10.3f}ms" for m in medians)
            verdict = "ok" if ratio <= TARGET_RATIO else "ABOVE TARGET"
            print(f"{label:<12}{cells}{ratio:>9.2f}  {verdict}", flush=True)
    return 1 if args.strict and worst > TARGET_RATIO else 0


if __name__ == "__main__":
    sys.exit(main())
