"""CPU of a producer's fire with a real Celery app, in one process (issue 22).

The end-to-end benchmark (:mod:`benchmarks.celery_e2e`) counts a producer's CPU
over whole runs, next to workers and servers on the same cores. This script
repeats exactly what its producers do per fire, alone in one process:
``triggers_celery.open_manager(uid, "bench", app=app, manager="bench-e2e")``
then ``manager.fire(trigger, kwargs)``, with the benchmark's app
(:func:`benchmarks.celery_e2e.app.make_app`, the ``celery`` runner, so every
ready instance is a real ``apply_async`` to the broker) and storage
(:func:`benchmarks.celery_e2e.variants.open_variant`). No worker runs: the
messages pile up in a scratch queue, deleted afterwards. The workload is the
seed's (:mod:`benchmarks.celery_e2e.workload`: 6 fires and 5 instances per
session, fires shuffled with a fixed seed); the sessions' configuration is
stored before the clock starts. Unlike the end-to-end run, no instance
finishes, so ``t_computeScore`` (which waits for ``t_createApplicant``) is never
scheduled: every run checks that exactly the 4 other instances of each session
were published (Celery's ``after_task_publish`` signal, or the recording
runner). It prints the median over ``--repeat`` runs
of ``time.process_time()`` per fire::

    python -m benchmarks.producer_cpu --variants redis-django,rabbitmq-postgresql

``--profile N`` runs one more pass under cProfile and prints its N most
expensive functions (cumulative and own time); ``--no-broker`` replaces the
Celery runner by a recording runner, leaving the storage part alone (what
:mod:`benchmarks.path_cpu` measures as the producer's figure).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery.signals import after_task_publish

from benchmarks.celery_e2e.app import STORAGE_NAME, E2EManager, Settings, drop_queue, make_app
from benchmarks.celery_e2e.variants import open_variant
from benchmarks.celery_e2e.workload import CONFIG, EXPECTED_INSTANCES, SCORE_INSTANCE, plan
from triggers_celery import open_manager
from triggers_core.testing.storage_contract import RecordingRunner


@contextmanager
def _app(variant: Any) -> Iterator[Any]:
    """The benchmark's app on the variant's broker, with a scratch queue (deleted after)."""
    queue = f"producer-cpu-{uuid.uuid4().hex[:8]}"
    settings = Settings(broker=variant.broker, queue=queue, storage=variant.storage, out_dir="")
    app = make_app(settings, name="producer-cpu")
    try:
        yield app
    finally:
        drop_queue(app, queue)
        app.close()


def _fires(app: Any, sessions: int, seed: int) -> list[tuple[str, str, Any]]:
    run = uuid.uuid4().hex[:8]
    uids = [f"pcpu-{run}-{n:04d}" for n in range(sessions)]
    for uid in uids:
        open_manager(
            uid, STORAGE_NAME, app=app, manager=E2EManager.registry_key
        ).update_configuration(CONFIG)
    return [(f.session, f.trigger, f.kwargs) for f in plan(uids, 1, seed)[0]]


#: Messages published in this process (Celery's ``after_task_publish``).
_published: list[str] = []


def _count_published(sender: str | None = None, **_: Any) -> None:
    _published.append(str(sender))


def _fire_all(app: Any, fires: list[tuple[str, str, Any]], broker: bool) -> int:
    """Fire everything; return how many instances were dispatched."""
    published = len(_published)
    recorded = 0
    for session, trigger, kwargs in fires:
        if broker:
            manager = open_manager(session, STORAGE_NAME, app=app, manager=E2EManager.registry_key)
        else:
            runner = RecordingRunner()
            manager = open_manager(
                session,
                STORAGE_NAME,
                app=app,
                manager=E2EManager.registry_key,
                runners={"r": runner},
                default_runner="r",
            )
        manager.fire(trigger, kwargs)
        if not broker:
            recorded += len(runner.dispatched)
    return len(_published) - published if broker else recorded


def _check(fires: list[tuple[str, str, Any]], dispatched: int) -> None:
    # No worker runs t_createApplicant, so nothing schedules t_computeScore.
    per_session = len(EXPECTED_INSTANCES - {SCORE_INSTANCE})
    wanted = per_session * len({session for session, _, _ in fires})
    if dispatched != wanted:
        raise SystemExit(f"expected {wanted} dispatched instances, got {dispatched}")


def measure(app: Any, sessions: int, seed: int, broker: bool) -> float:
    """CPU ms per fire over the fires of ``sessions`` fresh sessions."""
    fires = _fires(app, sessions, seed)
    start = time.process_time()
    dispatched = _fire_all(app, fires, broker)
    cpu = time.process_time() - start
    _check(fires, dispatched)
    return 1000 * cpu / len(fires)


def profile(app: Any, sessions: int, seed: int, broker: bool, top: int) -> str:
    fires = _fires(app, sessions, seed)
    profiler = cProfile.Profile(time.process_time)
    _check(fires, profiler.runcall(_fire_all, app, fires, broker))
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="redis-django,rabbitmq-postgresql")
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    parser.add_argument("--no-broker", action="store_true", help="a recording runner, no Celery")
    args = parser.parse_args()
    after_task_publish.connect(_count_published, weak=False)
    for name in args.variants.split(","):
        with open_variant(name) as variant, _app(variant) as app:
            broker = not args.no_broker
            measure(app, 5, args.seed, broker)  # warm-up: connections, imports, caches
            runs = [measure(app, args.sessions, args.seed, broker) for _ in range(args.repeat)]
            result = {"variant": name, "broker": broker, "sessions": args.sessions}
            result["runs"] = [round(r, 3) for r in runs]
            result["cpu_ms_per_fire"] = round(statistics.median(runs), 3)
            print(json.dumps(result), flush=True)
            if args.profile:
                print(profile(app, args.sessions, args.seed, broker, args.profile))


if __name__ == "__main__":
    main()
