"""A no-op task end to end on a real Celery worker, with leases and without.

Usage: ``python -m benchmarks.leases_celery [--instances N] [--rounds R]`` from the
repository root (``nox -s bench`` runs it when Redis and PostgreSQL answer). Needs
Redis (``TRIGGERS_BENCH_REDIS_BROKER``, default ``redis://127.0.0.1:6379/0``) and
PostgreSQL (``TRIGGERS_BENCH_POSTGRES_URL``).

One ``celery worker`` (prefork, concurrency 2) serves two storages on PostgreSQL:
``leased`` (tables with the due table: every run holds a lease) and ``bare`` (the
same tables without it: instances run without leases, as on tables of an earlier
version). Rounds alternate the two: each fires ``N`` instances of
``triggers.DevNullTask`` (``andEvery``, over 10 sessions) and waits until all
have finished; measured per instance are the worker's CPU (main process and pool,
from ``/proc``) and the wall time from the first fire to the last finish. Medians
over the rounds; every instance must end ``finished``, with or without a lease as
intended.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.celery_e2e.processes import tree_cpu
from benchmarks.lease_worker import BROKER_ENV, QUEUE_ENV, STORAGES_ENV, make_app
from triggers_celery import CeleryTaskRunner
from triggers_core import Status, TriggerManager

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"t_noop": {"after": ["tick"], "andEvery": "tick", "run": "triggers.DevNullTask"}}
SESSIONS = 10


def _tables(url: str) -> tuple[str, str, Any]:
    """Two table prefixes, the second without the due table; an engine of their own
    (the storages' shared engine must not remember the dropped table)."""
    import sqlalchemy as sa  # noqa: PLC0415 - only where the benchmark runs

    from triggers_backends.sqlalchemy import create_schema  # noqa: PLC0415

    engine = sa.create_engine(url)
    leased, bare = (f"bl{uuid.uuid4().hex[:8]}_", f"bb{uuid.uuid4().hex[:8]}_")
    for prefix in (leased, bare):
        create_schema(engine, prefix)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {bare}due")
    return leased, bare, engine


def _finished(engine: Any, prefix: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                f"SELECT count(*) FROM {prefix}instances WHERE status = 'finished'"
            ).scalar_one()
        )


def _round(  # noqa: PLR0917 - a private helper called twice
    managers: list[TriggerManager],
    count: int,
    worker_pid: int,
    base: int,
    engine: Any,
    prefix: str,
) -> tuple[float, float]:
    """(worker CPU ms, wall ms) per instance for ``count`` instances over ``managers``."""
    cpu_before = sum(tree_cpu(worker_pid))
    began = time.perf_counter()
    for n in range(count):
        managers[n % len(managers)].fire("tick", {"n": base + n})
    while _finished(engine, prefix) < base + count:
        if time.perf_counter() - began > 300:
            raise AssertionError("instances still not finished after 300 s")
        time.sleep(0.02)
    wall = time.perf_counter() - began
    cpu = sum(tree_cpu(worker_pid)) - cpu_before
    return cpu / count * 1000, wall / count * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200, help="per round and variant")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    if args.instances % SESSIONS:
        parser.error(f"--instances must be a multiple of {SESSIONS}")
    broker = os.environ.get("TRIGGERS_BENCH_REDIS_BROKER", "redis://127.0.0.1:6379/0")
    base_url = os.environ.get(
        "TRIGGERS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    from triggers_backends.sqlalchemy import drop_schema  # noqa: PLC0415

    leased, bare, engine = _tables(base_url)
    storages = {
        "leased": f"{base_url}?triggers_prefix={leased}",
        "bare": f"{base_url}?triggers_prefix={bare}",
    }
    queue = f"lease-bench-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        BROKER_ENV: broker,
        QUEUE_ENV: queue,
        STORAGES_ENV: json.dumps(storages),
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "benchmarks.lease_worker",
        "worker",
        "--pool=prefork",
        "--concurrency=2",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=WARNING",
        f"--queues={queue}",
        f"--hostname={queue}@%h",
    ]
    app = make_app(broker, queue, storages)
    with tempfile.TemporaryFile() as log:
        worker = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            variants: dict[str, list[TriggerManager]] = {}
            for name in ("leased", "bare"):
                variants[name] = []
                for n in range(SESSIONS):
                    manager = TriggerManager(
                        storages[name],
                        f"lease-bench-{name}-{n}-{uuid.uuid4().hex[:6]}",
                        runners={"celery": CeleryTaskRunner(app)},
                        default_runner="celery",
                    )
                    manager.update_configuration(CONFIG)
                    variants[name].append(manager)
            samples: dict[str, list[tuple[float, float]]] = {"leased": [], "bare": []}
            prefixes = {"leased": leased, "bare": bare}
            for name in ("leased", "bare"):  # warm-up: the pool processes start
                _round(variants[name], SESSIONS, worker.pid, 0, engine, prefixes[name])
            done = {"leased": SESSIONS, "bare": SESSIONS}
            for index in range(args.rounds):
                order = ("leased", "bare") if index % 2 else ("bare", "leased")
                for name in order:
                    samples[name].append(
                        _round(
                            variants[name],
                            args.instances,
                            worker.pid,
                            done[name],
                            engine,
                            prefixes[name],
                        )
                    )
                    done[name] += args.instances
            for name, managers in variants.items():
                for manager in managers:
                    for instance in manager.storage.instances.values():
                        assert instance.status is Status.FINISHED, instance
                        assert ("owner" in instance.metadata) is (name == "leased"), instance
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait()
            app.close()
            for prefix in (leased, bare):
                drop_schema(engine, prefix)
    cpu = {k: statistics.median(c for c, _ in v) for k, v in samples.items()}
    wall = {k: statistics.median(w for _, w in v) for k, v in samples.items()}
    print(
        f"\n### A no-op task end to end on a Celery worker (Redis, PostgreSQL, prefork x 2; "
        f"median of {args.rounds} rounds of {args.instances} instances)\n"
    )
    print("| | no lease | lease | lease / no lease |")
    print("| --- | --- | --- | --- |")
    print(
        f"| worker CPU ms per instance | {cpu['bare']:.2f} | {cpu['leased']:.2f} | "
        f"{cpu['leased'] / cpu['bare']:.3f} |"
    )
    print(
        f"| wall ms per instance | {wall['bare']:.2f} | {wall['leased']:.2f} | "
        f"{wall['leased'] / wall['bare']:.3f} |"
    )


if __name__ == "__main__":
    main()
