"""The command line of the end-to-end benchmark: ``python -m benchmarks.celery_e2e [options]``.

``nox -s bench-celery`` runs it with the defaults: every variant, 200 and
1,000 sessions, saturated and paced (40 fires/s per producer), a warm-up of
10 sessions per variant, then ``--profile``'s pass. Every variant includes the
floors (``floor-redis``, ``floor-rabbitmq``: Celery alone, the same message flow
as plain Celery tasks, :mod:`benchmarks.celery_e2e.floor`): the report sets each
Triggers variant beside the floor on its broker, which is what bounds it.
A smoke run::

    python -m benchmarks.celery_e2e --variants redis-memcached --sessions 20 --modes saturated

Every run is checked exactly (a lost or doubled instance fails the benchmark
with exit status 1 and a message naming the sessions); nothing asserts speed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.celery_e2e import measure, processes
from benchmarks.celery_e2e.app import Settings, drop_queue, make_app
from benchmarks.celery_e2e.profiling import summaries
from benchmarks.celery_e2e.report import render
from benchmarks.celery_e2e.tasks import (
    EFFECTS_DSN_ENV,
    EFFECTS_TABLE_ENV,
    create_effects_table,
    drop_effects_table,
)
from benchmarks.celery_e2e.variants import (
    VARIANTS,
    Variant,
    libpq_dsn,
    open_variant,
    postgres_url,
)
from benchmarks.celery_e2e.verify import BenchmarkFailure

MODES = ("saturated", "paced")
#: Seconds a worker gets to start, and to stop warmly.
WORKER_START_TIMEOUT = 120.0
WORKER_STOP_TIMEOUT = 60.0


def _ints(text: str) -> list[int]:
    """``200,1000`` -> [200, 1000] (each size once: a size names its run)."""
    try:
        sizes = list(dict.fromkeys(int(x) for x in text.split(",") if x))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 200,1000; got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected sizes >= 1; got {text!r}")
    return sizes


def _names(allowed: Sequence[str]) -> Any:
    def parse(text: str) -> list[str]:
        names = list(dict.fromkeys(x for x in text.split(",") if x))
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose among {', '.join(allowed)}; got {text!r}")
        return names

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.celery_e2e", description=__doc__)
    p.add_argument(
        "--variants",
        type=_names(list(VARIANTS)),
        default=list(VARIANTS),
        help=f"among {', '.join(VARIANTS)} (default: all of them)",
    )
    p.add_argument("--sessions", type=_ints, default=[200, 1000], help="e.g. 200,1000")
    p.add_argument("--modes", type=_names(MODES), default=list(MODES))
    p.add_argument("--pace", type=float, default=40.0, help="fires/s per producer when paced")
    p.add_argument("--producers", type=int, default=2)
    p.add_argument("--nodes", type=int, default=2, help="celery worker nodes")
    p.add_argument("--concurrency", type=int, default=2, help="prefork pool size per node")
    p.add_argument("--warmup", type=int, default=10, help="sessions run before measuring")
    p.add_argument("--seed", type=int, default=22)
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="SESSIONS",
        help="also profile the first node's pool processes over a saturated run of SESSIONS "
        "sessions per variant, on separate workers (0: no profile)",
    )
    p.add_argument(
        "--timeout", type=float, default=900.0, help="seconds a run may take after its last fire"
    )
    p.add_argument("--output", type=Path, help="write the Markdown report here too")
    p.add_argument("--profile-dir", type=Path, help="write the profile summaries (and .prof) here")
    p.add_argument("--keep", type=Path, help="keep logs, counters and profiles in this directory")
    return p


def _progress(message: str) -> None:
    # UTC: the Django variant's settings set the process's TZ when Django is set up.
    stamp = time.strftime("%H:%M:%S", time.gmtime())
    print(f"[{stamp} UTC] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _workers(
    variant: Variant, args: argparse.Namespace, run_id: str, out_dir: Path, profile: str
) -> Iterator[tuple[measure.Context, list[dict[str, Any]]]]:
    """Start the nodes; yield a context and a list that receives the pool processes' counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        broker=variant.broker,
        queue=f"bench-e2e-{run_id}-{variant.name}{'-profile' if profile else ''}",
        storage=variant.storage,
        out_dir=str(out_dir),
        counting=dict(variant.counting),
        profile=profile,
    )
    env = {**settings.to_env(), **variant.env, **_effects_env()}
    app = make_app(settings, name=f"bench-orchestrator-{variant.name}")
    workers: list[processes.Worker] = []
    counts: list[dict[str, Any]] = []
    effects = _effects_connection()
    try:
        for n in range(1, args.nodes + 1):
            workers.append(
                processes.Worker(
                    f"node-{n}",
                    run_id=run_id,
                    queue=settings.queue,
                    env=env,
                    out_dir=out_dir,
                    concurrency=args.concurrency,
                )
            )
        for worker in workers:
            worker.wait_ready(WORKER_START_TIMEOUT)
        yield (
            measure.Context(
                variant=variant.name,
                # Session UIDs start with the run and the variant: the effect table is shared.
                run_id=f"{run_id}-{variant.name}",
                app=app,
                env=env,
                out_dir=out_dir,
                workers=workers,
                effects=effects,
                effects_table=_table(),
                timeout=args.timeout,
                floor=variant.floor,
            ),
            counts,
        )
        _progress(f"{variant.name}: stopping the workers")
        unclean = [w.node for w in workers if not w.stop(WORKER_STOP_TIMEOUT)]
        if unclean:
            raise BenchmarkFailure(
                f"worker(s) {unclean} did not stop within {WORKER_STOP_TIMEOUT:.0f} s of SIGTERM"
            )
        for worker in workers:
            counts += worker.counts()
        expected = args.nodes * args.concurrency
        if len(counts) < expected:
            raise BenchmarkFailure(
                f"{len(counts)} of {expected} pool processes wrote their counters on shutdown "
                f"(files counts-*.json in {out_dir}); a pool process died or was replaced"
            )
    finally:
        for worker in workers:
            worker.stop(5)
        drop_queue(app, settings.queue)
        app.close()
        effects.close()


_RUN: dict[str, str] = {}


def _table() -> str:
    return _RUN["table"]


def _effects_env() -> dict[str, str]:
    return {EFFECTS_DSN_ENV: _RUN["dsn"], EFFECTS_TABLE_ENV: _RUN["table"]}


def _effects_connection() -> Any:
    import psycopg  # noqa: PLC0415

    return psycopg.connect(_RUN["dsn"], autocommit=True, connect_timeout=10)


def run_variant(
    variant: Variant, args: argparse.Namespace, run_id: str, out_dir: Path
) -> list[dict[str, Any]]:
    """The measured runs of one variant, with their counters."""
    results: list[dict[str, Any]] = []
    with _workers(variant, args, run_id, out_dir / variant.name, profile="") as (ctx, counts):
        _progress(f"{variant.name}: warm-up ({args.warmup} sessions)")
        measure.warm_up(ctx, args.warmup)
        for sessions in args.sessions:
            for mode in args.modes:
                spec = measure.Spec(
                    label=f"{mode[:3]}{sessions}",
                    sessions=sessions,
                    mode=mode,
                    pace=args.pace,
                    producers=args.producers,
                    seed=args.seed,
                )
                result = measure.measure(ctx, spec, _progress)
                _progress(
                    f"{variant.name} {spec.label}: {result['sessions_per_s']:.1f} sessions/s, "
                    f"completion p50 {result['latency_p50_ms']:.0f} ms"
                )
                results.append(result)
    for result in results:
        measure.add_counts(result, counts)
    return results


def profile_variant(
    variant: Variant, args: argparse.Namespace, run_id: str, out_dir: Path
) -> list[str]:
    """A saturated run on profiled workers; the summaries of the two pool profiles."""
    where = out_dir / f"{variant.name}-profile"
    with _workers(variant, args, run_id, where, profile="wall,cpu") as (ctx, counts):
        _progress(f"{variant.name}: profile run ({args.profile} sessions)")
        measure.warm_up(ctx, min(args.warmup, 4), label="warmupprofile")
        spec = measure.Spec("profile", args.profile, "saturated", args.pace, args.producers, 1)
        measure.measure(ctx, spec, _progress)
    profiles = [c["profile"] for c in counts if c.get("profile")]
    if not profiles:
        raise BenchmarkFailure(f"no profile was written (looked in {where})")
    texts = summaries(profiles, f"Profile of a pool process, {VARIANTS[variant.name]}")
    if args.profile_dir:
        args.profile_dir.mkdir(parents=True, exist_ok=True)
        for profile, text in zip(
            sorted(profiles, key=lambda p: p["clock"], reverse=True), texts, strict=True
        ):
            name = f"celery-e2e-{variant.name}-{profile['clock']}"
            (args.profile_dir / f"{name}.md").write_text(text + "\n")
    return texts


def machine_lines(args: argparse.Namespace, versions: list[str], load: str) -> list[str]:
    return [
        "## End-to-end on Celery workers (issue 22)",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} CPUs; load average (1, 5, 15 min) at start {load}",
        f"- Python {platform.python_version()}; " + "; ".join(versions),
        f"- {args.nodes} worker nodes x prefork concurrency {args.concurrency}, "
        f"worker_prefetch_multiplier=1; {args.producers} producers; paced: {args.pace:g} "
        f"fires/s per producer; {args.warmup} warm-up sessions per variant; seed {args.seed}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    run_id = f"e2e{uuid.uuid4().hex[:8]}"
    _RUN.update(dsn=libpq_dsn(postgres_url()), table=f"bench_{run_id}_effects")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    results: list[dict[str, Any]] = []
    profiles: list[str] = []
    versions: list[str] = []
    with contextlib.ExitStack() as stack:
        out_dir = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            create_effects_table(_RUN["dsn"], _RUN["table"])
            stack.callback(drop_effects_table, _RUN["dsn"], _RUN["table"])
            for name in args.variants:
                with open_variant(name) as variant:
                    versions.append(f"{name}: {variant.versions}")
                    results += run_variant(variant, args, run_id, out_dir)
                    if args.profile and not variant.floor:  # no Triggers to profile
                        profiles += profile_variant(variant, args, run_id, out_dir)
        except BenchmarkFailure as exc:
            print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
            if args.keep:
                print(f"(logs kept in {out_dir})", file=sys.stderr)
            return 1
        finally:
            processes.stop_everything()
    text = render(machine_lines(args, versions, load), results, profiles)
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
