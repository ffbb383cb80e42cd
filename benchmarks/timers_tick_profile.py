"""One tick of ``--timers`` due timers on ``django-cache://`` Redis, in a fresh process (issue 24).

The sessions are seeded (one delayed instance each, all due) by this process;
a spawned process then opens the store from its reference, as a Celery worker
would (nothing of it cached), and runs one :func:`~triggers_core.runtime.clock.tick_store`.
Printed: the tick's wall time, the ticking thread's CPU time, the timers fired;
with ``--profile``, the cProfile of the tick (CPU time of the ticking thread, so
``--tick-workers 1`` to see all of it) and the number of Redis commands sent.

    python -m benchmarks.timers_tick_profile --timers 1000 --tick-workers 1 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing
import pstats
import time
from datetime import UTC, datetime, timedelta
from typing import Any


def _tick(url: str, workers: int | None, profile: bool, results: Any) -> None:
    from benchmarks.timers_lateness import _factory  # noqa: PLC0415
    from triggers_core.runtime.clock import tick_store  # noqa: PLC0415
    from triggers_core.runtime.registry import open_storage  # noqa: PLC0415

    storage = open_storage(url, "p-0")
    if workers is not None:
        type(storage).tick_workers = workers
    profiler = cProfile.Profile(time.thread_time) if profile else None
    started, cpu = time.perf_counter(), time.thread_time()
    if profiler is not None:
        profiler.enable()
    report = tick_store(storage, _factory)
    if profiler is not None:
        profiler.disable()
    took, cpu = time.perf_counter() - started, time.thread_time() - cpu
    text = ""
    if profiler is not None:
        stream = io.StringIO()
        stats = pstats.Stats(profiler, stream=stream)
        commands = sum(
            calls[1]
            for (path, _, name), calls in stats.stats.items()  # type: ignore[attr-defined]
            if path.endswith("redis/client.py") and name == "execute_command"
        )
        stats.sort_stats("cumulative").print_stats(40)
        text = f"Redis commands: {commands}\n{stream.getvalue()}"
    results.put((took, cpu, len(report.acted), report.examined, text))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timers", type=int, default=1000)
    parser.add_argument("--tick-workers", type=int, default=None)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)

    from benchmarks import django_cache  # noqa: PLC0415
    from benchmarks.timers_lateness import seed  # noqa: PLC0415

    label = "django-redis-cache"
    with django_cache.django_backend(label, {label}) as make:
        now = datetime.now(UTC)
        start = now - timedelta(seconds=10)
        dues = [start + timedelta(milliseconds=i) for i in range(args.timers)]
        seed(make, "p-", dues)
        url = make("p-0").reference()
        assert url is not None
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        worker = context.Process(target=_tick, args=(url, args.tick_workers, args.profile, results))
        worker.start()
        took, cpu, fired, examined, text = results.get(timeout=600)
        worker.join(30)
    print(
        f"tick of {examined} due timers: {took * 1000:.0f} ms, ticking thread CPU "
        f"{cpu * 1000:.0f} ms, fired {fired}"
    )
    if text:
        print(text)


if __name__ == "__main__":
    main()
