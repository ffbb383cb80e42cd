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
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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


def measure(url: str, sessions: int, seed: int = 22) -> dict[str, float]:
    """CPU ms per fire (producer) and per instance (worker) over ``sessions`` sessions."""
    conf = {"triggers_storages": {NAME: url}}
    uids = [f"cpu-{uuid.uuid4().hex[:12]}" for _ in range(sessions)]
    for session in uids:
        opened = open_configured_storage(conf, NAME, session, for_message=False)
        TriggerManager(opened).update_configuration(CONFIG)
    fires = [(session, trigger) for session in uids for trigger in FIRES]
    random.Random(seed).shuffle(fires)
    pending: list[tuple[str, str]] = []
    start = time.process_time()
    for session, trigger in fires:
        runner = RecordingRunner()
        opened = open_configured_storage(conf, NAME, session, for_message=False)
        TriggerManager(opened, runners={"r": runner}, default_runner="r").fire(trigger, {"x": 1})
        pending += [(session, name) for name in runner.dispatched]
    producer = time.process_time() - start
    ran = 0
    start = time.process_time()
    while pending:
        session, name = pending.pop(0)
        runner = RecordingRunner()
        opened = open_configured_storage(conf, NAME, session)
        manager = TriggerManager(opened, runners={"r": runner}, default_runner="r")
        manager.run_instance(name, guard_cascade=True)
        ran += 1
        pending += [(session, cascaded) for cascaded in runner.dispatched]
    worker = time.process_time() - start
    for session in uids:
        open_configured_storage(conf, NAME, session).delete()
    if ran != 5 * sessions:
        raise SystemExit(f"expected {5 * sessions} instances, ran {ran}")
    return {
        "producer_ms_per_fire": 1000 * producer / len(fires),
        "worker_ms_per_instance": 1000 * worker / ran,
    }


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
    args = parser.parse_args()
    for label in args.backends.split(","):
        with _backend(label) as url:
            measure(url, 5)  # warm-up: connections, statements, imports
            runs = [measure(url, args.sessions) for _ in range(args.repeat)]
        result = {"backend": label, "sessions": args.sessions, "runs": args.repeat}
        for key in runs[0]:
            result[key] = round(statistics.median(run[key] for run in runs), 3)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
