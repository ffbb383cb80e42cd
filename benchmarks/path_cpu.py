"""CPU of the Celery path's storage work in one process, without Celery (issue 22).

The end-to-end benchmark (:mod:`benchmarks.celery_e2e`) measures CPU seconds
per session of real workers, which on a shared machine say as much about the
neighbours as about Triggers. This one runs the same storage work in one
process, one operation after another, and reads ``time.process_time()``:

* *producer*, per fire: ``open_configured_storage(conf, name, uid,
  for_message=False)``, a ``TriggerManager`` on it, ``fire`` (a recording
  runner keeps the instances it schedules);
* *worker*, per instance: ``open_configured_storage(conf, name, uid)`` (as a
  message does), a manager, ``run_instance(name, guard_cascade=True)`` (mark
  running with a lease, run ``triggers.PassThruTask``, finish with the cascade
  recorded); cascaded instances are run the same way.

The workload is the seed's example of issue 22 (3 tasks, 6 fires and 5
instances per session, fires shuffled with a fixed seed). Nothing runs
concurrently, so there are no conflicts: the figures are the floor of what a
worker and a producer pay per instance and per fire, Celery and the task body
excluded. Medians of ``--repeat`` runs::

    python -m benchmarks.path_cpu --backends postgresql,memcached,django-redis-cache

With ``--round-trips``, the same workload counts storage round trips instead
(the client-side counters of :mod:`benchmarks.celery_e2e.instrument`, installed
in this process; no CPU is measured then, the counting costs some): per fire,
per instance, and per ``load`` and ``compare_and_swap`` of the worker. Counted,
so independent of the machine's load; no concurrency, so no conflicts::

    python -m benchmarks.path_cpu --round-trips --sessions 20 --repeat 1 [--cold]

In one process, the worker finds in the decoded-document cache of the
key-value layout every immutable document the producer wrote; Celery's workers
are other processes. ``--cold`` empties that cache before each fire and each
instance, as if every message met a process that had not seen its session (the
worst case; a real pool is between the two).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import triggers_core.testing  # noqa: F401 - registers triggers.PassThruTask
from triggers_celery.storages import open_configured_storage
from triggers_core import TriggerManager
from triggers_core.testing.storage_contract import RecordingRunner

CONFIG = {
    "t_createApplicant": {
        "after": ["startSession", "observationsReceived"],
        "run": "triggers.PassThruTask",
    },
    "t_computeScore": {
        "after": ["t_createApplicant", "sessionFinalized"],
        "run": "triggers.PassThruTask",
    },
    "t_page": {
        "after": ["startSession"],
        "andEvery": "pageReceived",
        "run": "triggers.PassThruTask",
    },
}
FIRES = (
    "startSession",
    "pageReceived",
    "pageReceived",
    "pageReceived",
    "observationsReceived",
    "sessionFinalized",
)
NAME = "bench"
#: The counters (benchmarks.celery_e2e.instrument) when ``--round-trips`` installed them.
_counts: Counter[str] | None = None


def _forget_documents(storage: Any) -> None:
    """Empty the key-value layout's cache of decoded documents (``--cold``)."""
    cache = getattr(storage, "_cache", None)
    items = getattr(cache, "_items", None)
    if cache is not None and items is not None:
        cache.discard(list(items))


def measure(url: str, sessions: int, seed: int = 22, cold: bool = False) -> dict[str, float]:
    """CPU ms per fire (producer) and per instance (worker) over ``sessions`` sessions
    (with ``--round-trips``: storage round trips instead)."""
    conf = {"triggers_storages": {NAME: url}}
    uids = [f"cpu-{uuid.uuid4().hex[:12]}" for _ in range(sessions)]
    for session in uids:
        opened = open_configured_storage(conf, NAME, session, for_message=False)
        # Not the default (threading) runner: its manager would start the store's
        # background sweeper, whose ticks this process's CPU time would count.
        setup = TriggerManager(opened, runners={"r": RecordingRunner()}, default_runner="r")
        setup.update_configuration(CONFIG)
    fires = [(session, trigger) for session in uids for trigger in FIRES]
    random.Random(seed).shuffle(fires)
    pending: list[tuple[str, str]] = []
    counted = Counter(_counts) if _counts is not None else None
    start = time.process_time()
    for session, trigger in fires:
        runner = RecordingRunner()
        opened = open_configured_storage(conf, NAME, session, for_message=False)
        if cold:
            _forget_documents(opened)
        TriggerManager(opened, runners={"r": runner}, default_runner="r").fire(trigger, {"x": 1})
        pending += [(session, name) for name in runner.dispatched]
    producer = time.process_time() - start
    by_producer = _counts - counted if _counts is not None and counted is not None else None
    counted = Counter(_counts) if _counts is not None else None
    ran = 0
    start = time.process_time()
    while pending:
        session, name = pending.pop(0)
        runner = RecordingRunner()
        opened = open_configured_storage(conf, NAME, session)
        if cold:
            _forget_documents(opened)
        manager = TriggerManager(opened, runners={"r": runner}, default_runner="r")
        manager.run_instance(name, guard_cascade=True)
        ran += 1
        pending += [(session, cascaded) for cascaded in runner.dispatched]
    worker = time.process_time() - start
    by_worker = _counts - counted if _counts is not None and counted is not None else None
    for session in uids:
        open_configured_storage(conf, NAME, session).delete()
    if ran != 5 * sessions:
        raise SystemExit(f"expected {5 * sessions} instances, ran {ran}")
    if by_producer is not None and by_worker is not None:
        return _round_trips(by_producer, len(fires), by_worker, ran)
    return {
        "producer_ms_per_fire": 1000 * producer / len(fires),
        "worker_ms_per_instance": 1000 * worker / ran,
    }


def _round_trips(
    producer: Counter[str], fires: int, worker: Counter[str], ran: int
) -> dict[str, float]:
    from benchmarks.celery_e2e import instrument  # noqa: PLC0415 - only when counting

    trips = instrument.STORAGE
    found = {
        "producer_round_trips_per_fire": producer[trips] / fires,
        "worker_round_trips_per_instance": worker[trips] / ran,
        "round_trips_per_instance": (producer[trips] + worker[trips]) / ran,
    }
    for operation in ("load", "compare_and_swap"):
        calls = worker[f"op:{operation}"]
        found[f"worker_{operation}_per_instance"] = calls / ran
        found[f"worker_round_trips_per_{operation}"] = worker[f"rt:{operation}"] / max(calls, 1)
    found["worker_conflicts"] = float(worker[instrument.CONFLICTS])
    return found


def _count(label: str, url: str) -> None:
    """Install the round-trip counters of ``label``'s client in this process."""
    global _counts  # noqa: PLW0603 - process-wide, as the counters are
    from benchmarks.celery_e2e import instrument  # noqa: PLC0415 - only when counting

    counting: dict[str, Any]
    if label == "postgresql":
        counting = {"storage": "sql"}
    elif label == "memcached":
        counting = {"storage": "memcached"}
    elif label == "django-redis-cache":
        from benchmarks import django_cache  # noqa: PLC0415

        parts = urlsplit(django_cache.redis_url())
        db = int((parts.path or "/0").strip("/") or 0)
        counting = {"storage": "redis", "storage_redis": [parts.port or 6379, db]}
    else:
        raise SystemExit(f"--round-trips: cannot count {label!r} ({url})")
    instrument.install(counting)
    _counts = instrument.COUNTS


@contextmanager
def _backend(label: str) -> Iterator[str]:
    """The reference URL of a fresh store of ``label`` (removed afterwards)."""
    from benchmarks import backends, django_cache  # noqa: PLC0415 - only when run

    manager: Any
    if label == "postgresql":
        manager = backends.sql_backend(backends.DEFAULT_URLS["postgresql"])
    elif label == "memcached":
        manager = backends.memcached_backend(os.environ.get(backends.MEMCACHED_URL_ENV))
    else:
        manager = django_cache.django_backend(label, {label})
    with manager as make:
        reference = make("probe").reference()
        if not reference:
            raise SystemExit(f"{label}: the storage has no reference URL")
        yield str(reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="postgresql,memcached,django-redis-cache")
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--round-trips", action="store_true", help="count storage round trips instead of CPU"
    )
    parser.add_argument(
        "--cold", action="store_true", help="forget decoded documents before each operation"
    )
    args = parser.parse_args()
    labels = args.backends.split(",")
    if args.round_trips and len(labels) > 1:  # the counters of one client kind per process
        for label in labels:
            command = [sys.executable, "-m", "benchmarks.path_cpu", "--round-trips"]
            command += ["--sessions", str(args.sessions), "--repeat", str(args.repeat)]
            command += ["--backends", label, *(["--cold"] if args.cold else [])]
            subprocess.run(command, check=True)
        return
    for label in labels:
        with _backend(label) as url:
            if args.round_trips:
                _count(label, url)
            measure(url, 5, cold=args.cold)  # warm-up: connections, statements, imports
            runs = [measure(url, args.sessions, cold=args.cold) for _ in range(args.repeat)]
        result: dict[str, Any] = {"backend": label, "sessions": args.sessions}
        result.update(runs=args.repeat, cold=args.cold)
        for key in runs[0]:
            result[key] = round(statistics.median(run[key] for run in runs), 3)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
