"""One measured run on running workers: configure the sessions, fire, wait, check, measure.

The clock starts at the first fire of either producer and stops at the last
instance's ``finished`` timestamp (the worker's clock, the same host's); so
``sessions/s`` is sessions over that span. Worker CPU is read from /proc just
before the producers start and just after the last instance finished (the
workers are idle otherwise); producers measure their own CPU over their
firing loop. Sessions are configured before the clock starts.

On the floor (Celery alone: no storage, :mod:`benchmarks.celery_e2e.floor`)
there is nothing to configure, and the clock stops at the last effect row's
``at`` (the database's clock, the same host's) instead: the floor's tasks
record no ``finished`` time. Its CPU is read once every effect row is in.

Counters are attributed per run (the session UIDs carry the run's label) and
read when the workers stop, so :func:`add_counts` fills them in afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs

from benchmarks.celery_e2e import floor, instrument
from benchmarks.celery_e2e.app import STORAGE_NAME, E2EManager
from benchmarks.celery_e2e.processes import Producer, Worker, tail
from benchmarks.celery_e2e.verify import (
    BenchmarkFailure,
    check_exact,
    completion_latencies,
    percentile,
)
from benchmarks.celery_e2e.workload import (
    CONFIG,
    EXPECTED_INSTANCES,
    SCORE_DEPENDS_ON,
    SCORE_INSTANCE,
    WARMUP_LABEL,
    plan,
    session_fires,
    session_uid,
)
from triggers_celery import open_manager

PER_SESSION = len(EXPECTED_INSTANCES)
#: Seconds without a new effect row before a run is declared stuck.
STALL_TIMEOUT = 60.0
#: Seconds the instances get to record ``finished`` after their effect rows are in.
SETTLE_TIMEOUT = 60.0


@attrs.frozen
class Spec:
    """One measured run."""

    label: str
    sessions: int
    mode: str  # "saturated" or "paced"
    pace: float  # fires/s per producer when paced
    producers: int
    seed: int


@attrs.frozen
class Context:
    """What every run of one variant shares."""

    variant: str
    run_id: str
    app: Any
    env: dict[str, str]
    out_dir: Path
    workers: list[Worker]
    effects: Any  # a psycopg connection (autocommit) to the effect table's database
    effects_table: str
    timeout: float
    #: Celery alone (:mod:`benchmarks.celery_e2e.floor`): no storage, no managers.
    floor: bool = False


def _manager(ctx: Context, uid: str) -> Any:
    return open_manager(uid, STORAGE_NAME, app=ctx.app, manager=E2EManager.registry_key)


def configure(ctx: Context, uids: Sequence[str]) -> None:
    if ctx.floor:
        return  # nothing to configure without a storage
    for uid in uids:
        _manager(ctx, uid).update_configuration(CONFIG)


def effect_rows(ctx: Context, prefix: str) -> int:
    row = ctx.effects.execute(
        f"SELECT count(*) FROM {ctx.effects_table} WHERE starts_with(session, %s)", (prefix,)
    ).fetchone()
    return int(row[0])


def effects_by_instance(ctx: Context, prefix: str) -> dict[tuple[str, str], int]:
    rows = ctx.effects.execute(
        f"SELECT session, instance, count(*) FROM {ctx.effects_table}"
        " WHERE starts_with(session, %s) GROUP BY session, instance",
        (prefix,),
    ).fetchall()
    return {(str(s), str(i)): int(n) for s, i, n in rows}


def _worker_state(ctx: Context) -> str:
    lines = []
    for worker in ctx.workers:
        state = "running" if worker.alive() else f"exited ({worker.process.returncode})"
        lines.append(f"worker {worker.node}: {state}; log tail:\n{tail(worker.log_path, 1500)}")
    return "\n".join(lines)


def wait_for_effects(ctx: Context, label: str, prefix: str, expected: int, deadline: float) -> None:
    """Wait until ``expected`` effect rows exist; fail if stuck (bounded twice over)."""
    seen, changed = -1, time.monotonic()
    while True:
        count = effect_rows(ctx, prefix)
        if count >= expected:
            return
        now = time.monotonic()
        if count != seen:
            seen, changed = count, now
        if now > deadline or now - changed > STALL_TIMEOUT:
            why = "the run's time limit passed" if now > deadline else "no new row for 60 s"
            raise BenchmarkFailure(
                f"run {label} is stuck: waited for {expected} effect rows ({PER_SESSION} per "
                f"session) in {ctx.effects_table}, found {count}; {why}.\n{_worker_state(ctx)}"
            )
        time.sleep(0.1)


@attrs.frozen
class Stored:
    """What the storage holds for a run's sessions once it settled (the floor: its effect rows)."""

    #: session -> {instance: status}; None on the floor (no storage)
    statuses: dict[str, dict[str, str]] | None
    #: session -> wall-clock time its ``t_computeScore`` finished (seconds)
    score_finished: dict[str, float]
    #: the latest ``finished`` time of any instance of any session
    last_finished: float


def _finished_at(instance: Any) -> float | None:
    stamp = instance.metadata.get("timestamps", {}).get("finished")
    return datetime.fromisoformat(stamp).timestamp() if stamp else None


def read_sessions(ctx: Context, uids: Sequence[str]) -> Stored:
    statuses: dict[str, dict[str, str]] = {}
    score: dict[str, float] = {}
    last = 0.0
    for uid in uids:
        instances = _manager(ctx, uid).storage.instances
        statuses[uid] = {name: i.status.value for name, i in instances.items()}
        for name, instance in instances.items():
            at = _finished_at(instance)
            if at is not None:
                last = max(last, at)
                if name == SCORE_INSTANCE:
                    score[uid] = at
    return Stored(statuses, score, last)


def floor_stored(ctx: Context, prefix: str) -> Stored:
    """The floor's figures from its effect rows: each score's ``at``, and the last ``at``."""
    rows = ctx.effects.execute(
        f"SELECT session, instance, extract(epoch FROM at) FROM {ctx.effects_table}"
        " WHERE starts_with(session, %s)",
        (prefix,),
    ).fetchall()
    score = {str(s): float(at) for s, i, at in rows if i == SCORE_INSTANCE}
    return Stored(None, score, max((float(at) for _, _, at in rows), default=0.0))


def settled(ctx: Context, label: str, uids: Sequence[str], prefix: str) -> Stored:
    """What a run left once every effect row is in: the settled sessions (the floor: its
    effect rows)."""
    return floor_stored(ctx, prefix) if ctx.floor else wait_settled(ctx, label, uids)


def wait_settled(ctx: Context, label: str, uids: Sequence[str]) -> Stored:
    """Read the sessions until no instance is still on its way (bounded), then return them."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        stored = read_sessions(ctx, uids)
        statuses = stored.statuses or {}
        busy = [
            u for u, s in statuses.items() if any(v in ("scheduled", "running") for v in s.values())
        ]
        if not busy:
            return stored
        if time.monotonic() > deadline:
            raise BenchmarkFailure(
                f"run {label}: {len(busy)} session(s) still had scheduled or running instances "
                f"{SETTLE_TIMEOUT:.0f} s after all effect rows were in (e.g. {busy[0]}: "
                f"{statuses[busy[0]]})"
            )
        time.sleep(0.2)


def warm_up(ctx: Context, sessions: int, label: str = WARMUP_LABEL) -> None:
    """Run ``sessions`` sessions from this process, in order, and check them (not measured).

    ``label`` must start with ``warmup`` (the workers never profile those) and be new
    in this run.
    """
    if sessions <= 0:
        return
    if not label.startswith(WARMUP_LABEL):
        raise ValueError(f"a warm-up label starts with {WARMUP_LABEL!r}: {label!r}")
    uids = [session_uid(ctx.run_id, label, n) for n in range(sessions)]
    configure(ctx, uids)
    for n, uid in enumerate(uids):
        if ctx.floor:
            for fire in session_fires(uid, n):
                floor.fire(ctx.app, uid, fire.trigger, fire.kwargs)
            continue
        manager = _manager(ctx, uid)
        for fire in session_fires(uid, n):
            manager.fire(fire.trigger, fire.kwargs)
    prefix = f"{ctx.run_id}.{label}."
    wait_for_effects(ctx, label, prefix, sessions * PER_SESSION, time.monotonic() + ctx.timeout)
    stored = settled(ctx, label, uids, prefix)
    check_exact(label, uids, stored.statuses, effects_by_instance(ctx, prefix))


def _cpu(workers: Sequence[Worker]) -> tuple[float, float]:
    main = pool = 0.0
    for worker in workers:
        m, p = worker.cpu()
        main, pool = main + m, pool + p
    return main, pool


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def measure(ctx: Context, spec: Spec, progress: Callable[[str], None]) -> dict[str, Any]:
    """Run ``spec`` on the workers of ``ctx``; return its figures (counters come later)."""
    uids = [session_uid(ctx.run_id, spec.label, n) for n in range(spec.sessions)]
    prefix = f"{ctx.run_id}.{spec.label}."
    progress(f"{ctx.variant} {spec.label}: configuring {spec.sessions} sessions")
    configure(ctx, uids)
    pace = spec.pace if spec.mode == "paced" else 0.0
    shares = plan(uids, spec.producers, spec.seed)
    producers = [
        Producer(
            index,
            {
                "index": index,
                "label": spec.label,
                "pace": pace,
                "floor": ctx.floor,
                "fires": [[f.session, f.trigger, dict(f.kwargs)] for f in share],
                "out": str(ctx.out_dir / f"producer-{index}-{spec.label}.out.json"),
            },
            ctx.env,
            ctx.out_dir,
        )
        for index, share in enumerate(shares)
    ]
    for producer in producers:
        producer.wait_ready(120)
    load_before = _loadavg()
    cpu_before = _cpu(ctx.workers)
    go = time.time() + 0.3
    progress(f"{ctx.variant} {spec.label}: firing {spec.sessions * 6} fires ({spec.mode})")
    for producer in producers:
        producer.go(go)
    deadline = time.monotonic() + ctx.timeout + (max(map(len, shares)) / pace if pace else 0)
    results = [p.result(max(1.0, deadline - time.monotonic())) for p in producers]
    errors = [e for r in results for e in r["errors"]]
    if errors:
        raise BenchmarkFailure(
            f"run {spec.label}: {len(errors)} fire(s) failed in the producers, e.g.:\n  "
            + "\n  ".join(errors[:10])
        )
    wait_for_effects(ctx, spec.label, prefix, spec.sessions * PER_SESSION, deadline)
    stored = settled(ctx, spec.label, uids, prefix)
    cpu_after = _cpu(ctx.workers)
    load_after = _loadavg()
    exact = check_exact(spec.label, uids, stored.statuses, effects_by_instance(ctx, prefix))
    depends_on = floor.SCORE_STARTS_AT if ctx.floor else SCORE_DEPENDS_ON
    return figures(spec, results, stored, cpu_before, cpu_after, depends_on=depends_on) | {
        "variant": ctx.variant,
        "floor": ctx.floor,
        "exact": attrs.asdict(exact),
        "load": f"{load_before} -> {load_after}",
        "queue_left": queue_left(ctx),
    }


def figures(
    spec: Spec,
    producers: Sequence[dict[str, Any]],
    stored: Stored,
    cpu_before: tuple[float, float],
    cpu_after: tuple[float, float],
    *,
    depends_on: AbstractSet[str] = SCORE_DEPENDS_ON,
) -> dict[str, Any]:
    """The run's figures from the producers' records, the storage and the CPU readings.

    ``depends_on``: the fires completion latency runs from (the last of them).
    """
    fires = [(s, t, start) for r in producers for s, t, start, _ in r["fires"]]
    durations = [d for r in producers for _, _, _, d in r["fires"]]
    first = min(start for _, _, start in fires)
    last = stored.last_finished
    latencies = list(completion_latencies(fires, stored.score_finished, depends_on).values())
    n = spec.sessions
    main = cpu_after[0] - cpu_before[0]
    pool = cpu_after[1] - cpu_before[1]
    return {
        "label": spec.label,
        "sessions": n,
        "mode": spec.mode,
        "pace": spec.pace if spec.mode == "paced" else None,
        "producers": spec.producers,
        "seconds": last - first,
        "sessions_per_s": n / (last - first),
        "latency_p50_ms": percentile(latencies, 50) * 1000,
        "latency_p99_ms": percentile(latencies, 99) * 1000,
        "latency_max_ms": max(latencies) * 1000,
        "fire_p50_ms": percentile(durations, 50) * 1000,
        "fire_p99_ms": percentile(durations, 99) * 1000,
        "worker_cpu_ms": (main + pool) / n * 1000,
        "worker_main_cpu_ms": main / n * 1000,
        "worker_pool_cpu_ms": pool / n * 1000,
        "producer_cpu_ms": sum(r["cpu"] for r in producers) / n * 1000,
        "producer_counts": _merge(r["counts"].get(spec.label, {}) for r in producers),
    }


def _merge(counts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counts:
        for key, value in one.items():
            total[key] = total.get(key, 0) + int(value)
    return total


def queue_left(ctx: Context) -> int:
    """Messages still waiting in the run's queue (0 once every message was consumed).

    -1 if the broker could not tell. (A Redis queue that ran empty no longer exists:
    kombu then answers NOT_FOUND, which means 0.)
    """
    try:
        with ctx.app.connection_for_read() as conn:
            ok = conn.default_channel.queue_declare(ctx.app.conf.task_default_queue, passive=True)
            return int(ok.message_count)
    except Exception as exc:
        if str(ctx.app.conf.broker_url).startswith("redis") and "NOT_FOUND" in str(exc):
            return 0
        return -1


def add_counts(result: dict[str, Any], worker_counts: Sequence[dict[str, Any]]) -> None:
    """Fill in the per-instance counters of ``result`` from the pool processes' files."""
    label = result["label"]
    workers = _merge(c["counts"].get(label, {}) for c in worker_counts)
    producers = result["producer_counts"]
    instances = result["sessions"] * PER_SESSION
    fires = result["sessions"] * 6
    result["worker_counts"] = workers
    result["tasks_run"] = workers.get(instrument.TASKS, 0)
    if result.get("floor"):  # no storage: nothing to count
        result["storage_rt_per_instance_workers"] = None
        result["storage_rt_per_fire_producers"] = None
        result["storage_rt_per_instance"] = None
    else:
        storage_workers = workers.get(instrument.STORAGE, 0)
        storage_producers = producers.get(instrument.STORAGE, 0)
        result["storage_rt_per_instance_workers"] = storage_workers / instances
        result["storage_rt_per_fire_producers"] = storage_producers / fires
        result["storage_rt_per_instance"] = (storage_workers + storage_producers) / instances
    result["published_per_instance"] = (
        workers.get(instrument.PUBLISHED, 0) + producers.get(instrument.PUBLISHED, 0)
    ) / instances
    broker = workers.get(instrument.BROKER, 0) + producers.get(instrument.BROKER, 0)
    result["broker_rt_per_instance"] = broker / instances if broker else None
    both = _merge([workers, producers])
    result["operations_per_instance"] = {
        key.removeprefix("op:"): value / instances
        for key, value in sorted(both.items())
        if key.startswith("op:")
    }
    # Round trips per call of each operation, and those made outside any operation.
    result["round_trips_per_call"] = {
        key.removeprefix("rt:"): value / both[f"op:{key.removeprefix('rt:')}"]
        for key, value in sorted(both.items())
        if key.startswith("rt:") and both.get(f"op:{key.removeprefix('rt:')}")
    }
    inside = sum(v for k, v in both.items() if k.startswith("rt:"))
    result["round_trips_outside_per_instance"] = (
        None if result.get("floor") else (both.get(instrument.STORAGE, 0) - inside) / instances
    )
    result["sql"] = {
        key: (workers.get(key, 0) + producers.get(key, 0)) / instances
        for key in (instrument.STATEMENTS, instrument.TRANSACTIONS, instrument.PINGS)
        if workers.get(key, 0) + producers.get(key, 0)
    }
