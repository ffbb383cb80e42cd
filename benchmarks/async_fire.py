"""Issue 27: ``fire`` throughput of AsyncTriggerManager on PostgreSQL against TriggerManager.

One process, fresh tables, ``--sessions`` sessions (100), each configured with
one ``andEvery`` task whose instances go to a runner that records them (the fire
is timed, not the task). Modes:

* ``async-asyncpg`` / ``async-psycopg``: one event loop, one AsyncTriggerManager
  per session on ``postgresql+asyncpg://`` / ``postgresql+psycopg://`` (one
  shared engine per URL), ``--coroutines`` coroutines (100) at once, coroutine
  ``k`` firing into session ``k mod sessions``;
* ``sync-threads``: one TriggerManager per session on ``postgresql+psycopg://``
  (one shared engine), ``--threads`` threads (20) at once, thread ``k`` firing
  into sessions ``k, k + threads, ...`` in turn.

Every mode does the same number of fires (``--fires`` per session, 20) after a
warm-up fire per session, with the default pools of SQLAlchemy (5 connections
plus 10 overflow per engine). Reported: fires per second (wall clock) and the
median and 99th percentile latency of one ``fire`` call, and the process's CPU
time per fire (warm-up and setup included). The runs assert that
every fire scheduled exactly one instance and each instance was handed over
once. ``--profile FILE`` profiles one ``async-asyncpg`` run with cProfile and
prints where its time goes. ``TRIGGERS_BENCH_POSTGRES_URL`` (a sync URL) names
another database. ``python -m benchmarks.async_fire [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Sequence

import sqlalchemy as sa

from triggers_backends.sqlalchemy import create_schema, drop_schema, shared_engine
from triggers_backends.sqlalchemy.asyncio import dispose_async_engines
from triggers_core import AsyncTriggerManager, ScheduleInstance, SessionManager, TriggerManager
from triggers_core.runtime.ports import TaskRunner

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CONFIG = {"t": {"after": [], "andEvery": "go", "run": "bench_task"}}
MODES = ("async-asyncpg", "async-psycopg", "sync-threads")


class Recorder(TaskRunner):
    """Records (session, instance) handed over; on the loop for the async manager."""

    name = "bench-session-recording"
    runs_coroutines = True  # called on the loop, no worker thread (the sync manager calls it)

    def __init__(self) -> None:
        self.dispatched: list[tuple[str, str]] = []

    def dispatch(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        self.dispatched.append((manager.uid, effect.instance_name))  # list.append: atomic


class Quiet(TriggerManager):
    """No background sweeper (the tables are dropped at the end of each mode)."""

    sweep_interval = None


def _async_url(sync_url: str, driver: str) -> str:
    return sync_url.replace("postgresql+psycopg://", f"postgresql+{driver}://", 1)


async def _async_run(url: str, uids: list[str], coroutines: int, fires: int) -> list[float]:
    """Latencies (s) of every timed fire; the wall time is measured around this."""
    runner = Recorder()
    managers = [
        AsyncTriggerManager(url, u, runners={"rec": runner}, default_runner="rec") for u in uids
    ]
    for m in managers:  # warm: connections open, sessions cached
        await m.fire("go")
    runner.dispatched.clear()
    per = fires * len(uids) // coroutines
    latencies: list[float] = []

    async def one(k: int) -> None:
        m = managers[k % len(managers)]
        for _ in range(per):
            began = time.perf_counter()
            scheduled = await m.fire("go")
            latencies.append(time.perf_counter() - began)
            assert len(scheduled) == 1

    await asyncio.gather(*(one(k) for k in range(coroutines)))
    assert len(runner.dispatched) == len(set(runner.dispatched)) == per * coroutines
    await dispose_async_engines()
    return latencies


def _sync_run(url: str, uids: list[str], threads: int, fires: int) -> list[float]:
    runner = Recorder()
    managers = [Quiet(url, u, runners={"rec": runner}, default_runner="rec") for u in uids]
    for m in managers:
        m.fire("go")
    runner.dispatched.clear()
    per = fires * len(uids) // threads
    latencies: list[float] = []
    start = threading.Barrier(threads)

    def one(k: int) -> None:
        start.wait(30)
        for n in range(per):
            m = managers[(k + n * threads) % len(managers)]
            began = time.perf_counter()
            scheduled = m.fire("go")
            latencies.append(time.perf_counter() - began)
            assert len(scheduled) == 1

    pool = [threading.Thread(target=one, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert len(latencies) == len(runner.dispatched) == len(set(runner.dispatched)) == per * threads
    return latencies


def run_mode(mode: str, sync_url: str, args: argparse.Namespace) -> dict[str, float]:
    """One mode on fresh tables: fires/s, p50 and p99 (ms)."""
    engine = sa.create_engine(sync_url)
    prefix = f"b{uuid.uuid4().hex[:10]}_"
    create_schema(engine, prefix)
    url = f"{sync_url}?triggers_prefix={prefix}"
    uids = [f"bench-async-{n}-{uuid.uuid4().hex[:8]}" for n in range(args.sessions)]
    try:
        setup = Quiet(url, uids[0])
        for u in uids:
            Quiet(setup.storage.session(u)).update_configuration(CONFIG)
        began, cpu = time.perf_counter(), time.process_time()
        if mode == "sync-threads":
            latencies = _sync_run(url, uids, args.threads, args.fires)
        else:
            driver = mode.split("-", 1)[1]
            latencies = asyncio.run(
                _async_run(_async_url(url, driver), uids, args.coroutines, args.fires)
            )
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    finally:
        shared_engine(url).dispose()
        drop_schema(engine, prefix)
        engine.dispose()
    latencies.sort()
    return {
        "fires": len(latencies),
        "per_second": len(latencies) / wall,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "cpu": cpu / len(latencies) * 1000,
    }


def profile(sync_url: str, args: argparse.Namespace, out: str) -> str:
    """Profile one async-asyncpg run; the top functions by own time and by cumulative."""
    profiler = cProfile.Profile()
    profiler.enable()
    run_mode("async-asyncpg", sync_url, args)
    profiler.disable()
    profiler.dump_stats(out)
    lines: list[str] = []
    for key in ("tottime", "cumulative"):
        stream = _Lines()
        pstats.Stats(out, stream=stream).sort_stats(key).print_stats(25)  # type: ignore[arg-type]
        lines.append(stream.text)
    return "\n".join(lines)


class _Lines:
    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line's options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--coroutines", type=int, default=100)
    parser.add_argument("--threads", type=int, default=20)
    parser.add_argument("--fires", type=int, default=20, help="timed fires per session")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--profile", metavar="FILE", help="also profile async-asyncpg")
    parser.add_argument("--quick", action="store_true", help="a smoke run (10 sessions)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.coroutines, args.threads, args.fires = 10, 10, 4, 2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    sync_url = os.environ.get("TRIGGERS_BENCH_POSTGRES_URL", PG)
    if sync_url == "off":
        print("async_fire: PostgreSQL is off (TRIGGERS_BENCH_POSTGRES_URL=off); nothing run")
        return 0
    load = os.getloadavg()
    print(f"### Async fire (issue 27): {args.sessions} sessions, {args.fires} fires each")
    print(f"\nload average at the start: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}\n")
    print("| mode | concurrency | fires | fires/s | p50 ms | p99 ms | CPU ms per fire |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode in args.modes.split(","):
        got = run_mode(mode, sync_url, args)
        width = args.threads if mode == "sync-threads" else args.coroutines
        unit = "threads" if mode == "sync-threads" else "coroutines"
        print(
            f"| {mode} | {width} {unit} | {got['fires']:.0f} | {got['per_second']:.0f} "
            f"| {got['p50']:.1f} | {got['p99']:.1f} | {got['cpu']:.2f} |",
            flush=True,
        )
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.profile:
        print("\n```\n" + profile(sync_url, args, args.profile) + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
