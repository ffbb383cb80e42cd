"""A producer process: ``python -m benchmarks.celery_e2e.producer <job.json>``.

It builds the run's Celery app (settings from the environment), warms its
storage and broker connections, prints ``READY`` and waits for a line
``GO <epoch seconds>`` on its standard input. From that moment it fires its
share of the plan in order, as fast as it can or paced (fire ``i`` not before
``go + i / pace``), each fire as a web request would: open the session's
manager (:func:`triggers_celery.open_manager`) and ``fire``. It writes one JSON
file: every fire's start and end (wall clock, comparable with the storage's
timestamps), its CPU seconds over the firing, its counters, and any error
(an error does not stop the others; the benchmark fails on it afterwards).

On the floor (``"floor": true`` in the job) a fire publishes the plain Celery
message of :func:`benchmarks.celery_e2e.floor.fire` instead (or nothing).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.celery_e2e import floor, instrument
from benchmarks.celery_e2e.app import STORAGE_NAME, E2EManager, Settings, make_app, setup_django
from triggers_celery import open_manager


def _warm(app: Any, session: str, on_floor: bool) -> None:
    """Open the storage (not on the floor) and the broker connection before the clock starts."""
    if not on_floor:
        manager = open_manager(session, STORAGE_NAME, app=app, manager=E2EManager.registry_key)
        manager.storage.load()
    with app.producer_pool.acquire(block=True, timeout=10) as producer:
        producer.connection.ensure_connection(max_retries=3)


def run(job: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_env()
    if settings is None:
        raise SystemExit("the benchmark's settings are not in the environment")
    setup_django()
    instrument.install(settings.counting)
    app = make_app(settings, name=f"bench-producer-{job['index']}")
    fires: list[list[Any]] = job["fires"]
    pace = float(job["pace"])
    on_floor = bool(job.get("floor"))
    if fires:
        _warm(app, fires[0][0], on_floor)
    print("READY", flush=True)
    line = sys.stdin.readline().split()
    if len(line) != 2 or line[0] != "GO":
        raise SystemExit(f"expected 'GO <time>' on stdin, got {line!r}")
    go = float(line[1])
    time.sleep(max(0.0, go - time.time()))
    records: list[list[Any]] = []
    errors: list[str] = []
    instrument.begin(job["label"])
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    for i, (session, trigger, kwargs) in enumerate(fires):
        if pace:
            delay = go + i / pace - time.time()
            if delay > 0:
                time.sleep(delay)
        start = time.time()
        began = time.perf_counter()
        try:
            if on_floor:
                floor.fire(app, session, trigger, kwargs)
            else:
                manager = open_manager(
                    session, STORAGE_NAME, app=app, manager=E2EManager.registry_key
                )
                manager.fire(trigger, kwargs)
        except Exception as exc:  # reported, and the benchmark fails on it
            errors.append(f"{session} {trigger}: {type(exc).__name__}: {exc}")
        records.append([session, trigger, start, time.perf_counter() - began])
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    instrument.end()
    app.close()
    return {
        "index": job["index"],
        "fires": records,
        "cpu": cpu,
        "wall": wall,
        "errors": errors,
        "counts": instrument.snapshot(),
    }


def main(argv: list[str]) -> None:
    job_path = Path(argv[0])
    job = json.loads(job_path.read_text())
    result = run(job)
    Path(job["out"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
