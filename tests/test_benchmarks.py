"""A small smoke run of the benchmarks (``nox -s bench``) so their code cannot rot.

Tiny sizes, in-process and SQLite backends (and memcached, on a server the
benchmark starts itself), and no timing assertion: the
benchmarks themselves check that every outcome is exact (instance counts,
statuses, nothing lost or scheduled twice) and fail otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(
    module: str,
    *args: str,
    unset: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks.<module> args`` in a subprocess run from the checkout.

    ``TRIGGERS_STORAGE_URL`` and the variables in ``unset`` are removed from its
    environment (the benchmark sets up what it needs itself), ``env`` is added.
    """
    skip = ("TRIGGERS_STORAGE_URL", *unset)
    base = {k: v for k, v in os.environ.items() if k not in skip}
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=timeout,
    )


def quick_report(tmp_path: Path, backends: str, *, unset: tuple[str, ...] = ()) -> str:
    """Run ``benchmarks.run --quick`` on ``backends`` in a subprocess; return its report.

    ``TRIGGERS_STORAGE_URL`` and the variables in ``unset`` are removed from its
    environment, so the benchmark sets up what it needs itself.
    """
    report = tmp_path / "report.md"
    out = run_benchmark(
        "run", "--quick", "--backends", backends, "--output", str(report), unset=unset
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return report.read_text()


def test_the_benchmarks_run_and_report(tmp_path: Path) -> None:
    text = quick_report(tmp_path, "memory,sqlite,sqlite-normal")
    for heading in (
        "waiting `andEvery` instances",
        "N finished instances",
        "Fires per second",
        "P writers x F fires",
        "3-task cascade",
        "K tasks on one trigger",
        "N stored idempotency keys",
        "Targets of issue 8",
        "Targets of issue 15 (idempotency keys)",
        "Workflow tools against size (issue 23)",
        "Targets of issue 23 (tooling)",
    ):
        assert heading in text, heading
    for backend in ("| memory |", "| sqlite |", "| sqlite-normal |"):
        assert backend in text, backend
    assert "n/a (--quick sizes)" in text


def test_the_memcached_benchmarks_run_and_report(tmp_path: Path) -> None:
    import shutil

    from services import unavailable

    if shutil.which("memcached") is None:
        unavailable("memcached", "the memcached binary is not installed (apt install memcached)")
    # The benchmark starts its own memcached unless told to use another one.
    text = quick_report(tmp_path, "memcached", unset=("TRIGGERS_BENCH_MEMCACHED_URL",))
    assert "| memcached |" in text
    assert "Targets of issue 12 (memcached)" in text
    assert "memcached 1." in text  # the version in the machine line


def test_the_django_cache_benchmarks_run_and_report(tmp_path: Path) -> None:
    import shutil

    from services import require_service, unavailable

    require_service("Redis", "127.0.0.1", 6379)
    if shutil.which("memcached") is None:
        unavailable("memcached", "the memcached binary is not installed (apt install memcached)")
    # Django is configured by the benchmark (DJANGO_SETTINGS_MODULE=benchmarks.django_settings).
    text = quick_report(
        tmp_path,
        "django-redis-cache,django-pymemcache",
        unset=("TRIGGERS_BENCH_REDIS_URL", "DJANGO_SETTINGS_MODULE"),
    )
    assert "| django-redis-cache |" in text
    assert "| django-pymemcache |" in text
    assert "Targets of issue 13 (django-redis-cache)" in text
    assert "Targets of issue 13 (django-pymemcache)" in text
    assert "Redis " in text  # the version in the machine line


# -- the end-to-end Celery benchmark (issue 22) ------------------------------------------


def e2e_run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``python -m benchmarks.celery_e2e`` with ``args``; (exit status, its output)."""
    unset = ("DJANGO_SETTINGS_MODULE", "TRIGGERS_BENCH_MEMCACHED_URL")
    out = run_benchmark("celery_e2e", *args, unset=unset, env=env, timeout=600)
    return out.returncode, out.stdout + out.stderr


@pytest.mark.service
@pytest.mark.slow
def test_the_celery_benchmark_runs_checks_and_profiles(tmp_path: Path) -> None:
    """A Triggers variant and the floor (Celery alone) beside it, each checked exactly."""
    import shutil

    from services import require_service, unavailable

    require_service("Redis", "127.0.0.1", 6379)
    require_service("PostgreSQL", "127.0.0.1", 5432)
    if shutil.which("memcached") is None:
        unavailable("memcached", "the memcached binary is not installed (apt install memcached)")
    report = tmp_path / "report.md"
    profiles = tmp_path / "profiles"
    code, output = e2e_run(
        tmp_path,
        *("--variants", "redis-memcached,floor-redis", "--sessions", "12"),
        *("--modes", "saturated,paced", "--warmup", "2"),
        *("--profile", "6", "--profile-dir", str(profiles)),
        *("--output", str(report), "--keep", str(tmp_path / "run")),
    )
    assert code == 0, output[-6000:]
    text = report.read_text()
    assert "## End-to-end on Celery workers (issue 22)" in text
    lines = text.splitlines()

    def exactness(variant: str, mode: str) -> str:
        return next(x for x in lines if x.startswith(f"- {variant}, 12 sessions, {mode}:"))

    def costs(variant: str) -> list[str]:
        row = next(x for x in lines if x.startswith(f"| {variant} | 12 | saturated |") and "(" in x)
        return [c.strip() for c in row.strip("|").split("|")]

    for mode in ("saturated", "paced 80/s"):
        assert f"| Redis broker + `memcached://` | 12 | {mode} |" in text, mode
        assert f"| Celery alone, Redis broker | 12 | {mode} |" in text, mode
        # The exactness line of each run: every instance ran once.
        line = exactness("Redis broker + `memcached://`", mode)
        assert "12 sessions x 5 instances finished, 60 effect rows" in line, line
        assert "0 lost, 0 doubled; 60 task messages run; 0 message(s) left" in line, line
        line = exactness("Celery alone, Redis broker", mode)
        assert "12 sessions x 5 task instance names, 60 effect rows" in line, line
        assert "0 lost, 0 doubled; 60 task messages run; 0 message(s) left" in line, line
        # Triggers beside the floor, on the same broker, size and mode.
        beside = f"| Redis broker + `memcached://` | Celery alone, Redis broker | 12 | {mode} |"
        assert any(x.startswith(beside) for x in lines), mode
    # Counters were collected from every pool process and both producers.
    cells = costs("Redis broker + `memcached://`")
    assert float(cells[5].split()[0]) > 0, cells  # storage round trips per instance
    assert float(cells[7]) == pytest.approx(1.0), cells  # one message per instance
    cells = costs("Celery alone, Redis broker")
    assert cells[5].startswith("-"), cells  # no storage on the floor
    assert float(cells[7]) == pytest.approx(1.0), cells  # the same five messages per session
    written = sorted(p.name for p in profiles.iterdir())
    assert written == [
        "celery-e2e-redis-memcached-cpu.md",
        "celery-e2e-redis-memcached-wall.md",
    ], written
    for path in profiles.iterdir():
        summary = path.read_text()
        assert "Where a task's time goes" in summary
        assert "run_instance" in summary


def test_the_celery_benchmark_fails_loudly_when_a_server_is_missing(tmp_path: Path) -> None:
    code, output = e2e_run(
        tmp_path,
        *("--variants", "redis-memcached", "--sessions", "2", "--modes", "saturated"),
        env={"TRIGGERS_BENCH_E2E_REDIS_BROKER": "redis://127.0.0.1:1/11"},
    )
    assert code == 1, output
    assert "BENCHMARK FAILED" in output
    assert "Redis (broker) is not reachable at 127.0.0.1:1" in output


# The end-to-end benchmark's own checks, without servers: they must be able to fail.

E2E_NAMES = sorted(["t_createApplicant#0", "t_computeScore#0", "t_page#0", "t_page#1", "t_page#2"])


def _exact_outcome(uids: list[str]) -> tuple[dict[str, dict[str, str]], dict[tuple[str, str], int]]:
    statuses = {u: dict.fromkeys(E2E_NAMES, "finished") for u in uids}
    effects = {(u, n): 1 for u in uids for n in E2E_NAMES}
    return statuses, effects


@given(
    sessions=st.integers(1, 6),
    fault=st.sampled_from(
        ["none", "no row", "two rows", "stray row", "missing", "extra", "failed", "gone"]
    ),
    data=st.data(),
)
def test_the_exactness_check_fails_on_every_lost_or_doubled_instance(
    sessions: int, fault: str, data: st.DataObject
) -> None:
    from benchmarks.celery_e2e.verify import BenchmarkFailure, check_exact

    uids = [f"run.lbl.{n:05d}" for n in range(sessions)]
    statuses, effects = _exact_outcome(uids)
    uid = data.draw(st.sampled_from(uids))
    name = data.draw(st.sampled_from(E2E_NAMES))
    if fault == "no row":
        del effects[(uid, name)]
    elif fault == "two rows":
        effects[(uid, name)] = 2
    elif fault == "stray row":
        effects[(uid, "t_page#3")] = 1
    elif fault == "missing":
        del statuses[uid][name]
    elif fault == "extra":
        statuses[uid]["t_page#3"] = "finished"
    elif fault == "failed":
        statuses[uid][name] = data.draw(st.sampled_from(["failed", "scheduled", "running"]))
    elif fault == "gone":
        del statuses[uid]
    if fault == "none":
        exact = check_exact("lbl", uids, statuses, effects)
        assert (exact.sessions, exact.instances, exact.effect_rows) == (
            sessions,
            5 * sessions,
            5 * sessions,
        )
    else:
        with pytest.raises(BenchmarkFailure, match=uid.replace(".", r"\.")):
            check_exact("lbl", uids, statuses, effects)


@given(sessions=st.integers(1, 6), fault=st.sampled_from(["no row", "two rows", "stray row"]))
def test_the_floor_is_checked_on_its_effect_rows(sessions: int, fault: str) -> None:
    """Without a storage (Celery alone) a lost, doubled or stray task still fails the run."""
    from benchmarks.celery_e2e.verify import BenchmarkFailure, check_exact

    uids = [f"run.lbl.{n:05d}" for n in range(sessions)]
    _, effects = _exact_outcome(uids)
    assert check_exact("lbl", uids, None, effects).effect_rows == 5 * sessions
    uid = uids[-1]
    if fault == "no row":
        del effects[(uid, "t_computeScore#0")]
    elif fault == "two rows":
        effects[(uid, "t_page#1")] = 2
    else:
        effects[(uid, "t_page#3")] = 1
    with pytest.raises(BenchmarkFailure, match=uid.replace(".", r"\.")):
        check_exact("lbl", uids, None, effects)


def test_the_floor_publishes_the_instances_of_a_session_once() -> None:
    """Celery alone: 4 messages from the fires, the score from createApplicant's task."""
    from collections import Counter

    from benchmarks.celery_e2e import floor
    from benchmarks.celery_e2e.workload import EXPECTED_INSTANCES, session_fires

    published = Counter(
        floor.instance_for(f.trigger, f.kwargs) for f in session_fires("run.lbl.00000", 0)
    )
    assert published.pop(None) == 2  # startSession and sessionFinalized publish nothing
    assert published == Counter(EXPECTED_INSTANCES - {"t_computeScore#0"})
    assert floor.message("s", "t_page#0") == {
        "manager": "bench-e2e",
        "storage": "bench",
        "session": "s",
        "instance": "t_page#0",
    }


@given(sessions=st.integers(0, 40), producers=st.integers(1, 4), seed=st.integers(0, 99))
def test_the_plan_deals_every_fire_once(sessions: int, producers: int, seed: int) -> None:
    from collections import Counter

    from benchmarks.celery_e2e.workload import SESSION_TRIGGERS, plan

    uids = [f"run.lbl.{n:05d}" for n in range(sessions)]
    shares = plan(uids, producers, seed)
    assert len(shares) == producers
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    dealt = Counter((f.session, f.trigger) for share in shares for f in share)
    assert dealt == Counter((u, t) for u in uids for t in SESSION_TRIGGERS)
    assert plan(uids, producers, seed) == shares  # the seed fixes the order


def test_completion_latency_runs_from_the_last_fire_the_score_waits_for() -> None:
    from benchmarks.celery_e2e.verify import completion_latencies, percentile

    fires = [
        ("s1", "startSession", 10.0),
        ("s1", "pageReceived", 30.0),  # t_computeScore does not wait for pages
        ("s1", "sessionFinalized", 12.0),
        ("s1", "observationsReceived", 11.0),
    ]
    assert completion_latencies(fires, {"s1": 12.5}) == {"s1": 0.5}
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0


def test_the_timer_benchmark_runs_at_a_tiny_size() -> None:
    """``benchmarks.timers`` (issue 24): each round expires exactly the timers due (checked)."""
    from benchmarks import timers

    report = timers.main(["--sessions", "30", "--small", "10", "--due", "20", "--rounds", "3"])
    assert "| memory | 100 |" in report
    assert "| sqlite | 100 |" in report


def test_the_timer_benchmark_bulk_seeds_the_index_of_sql_and_key_value_stores() -> None:
    """``--bulk``: the large run's extra pending timers go straight into the due index
    (counted after seeding; each round still expires exactly the timers due)."""
    from services import require_service

    from benchmarks import timers

    require_service("Redis", "127.0.0.1", 6379)
    argv = ["--sessions", "40", "--small", "10", "--due", "20", "--rounds", "2", "--bulk"]
    report = timers.main([*argv, "--backends", "sqlite,django-redis-cache"])
    assert "| sqlite | 100 |" in report
    assert "| django-redis-cache | 100 |" in report
    assert report.count("| 400 |") == 2  # the large run: 400 pending, 300 of them bulk


def test_the_lease_benchmark_runs_and_reports() -> None:
    out = run_benchmark("leases", "--quick", "--backends", "memory,sqlite")
    assert out.returncode == 0, out.stdout + out.stderr
    for heading in ("a no-op task end to end", "A lease renewal", "A sweep over N sessions"):
        assert heading in out.stdout, out.stdout
    assert "| sqlite |" in out.stdout


def test_the_celery_lease_benchmark_runs_and_reports() -> None:
    from services import require_service

    require_service("Redis", "127.0.0.1", 6379)
    require_service("PostgreSQL", "127.0.0.1", 5432)
    out = run_benchmark("leases_celery", "--instances", "10", "--rounds", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| worker CPU ms per instance |" in out.stdout, out.stdout


def test_the_async_fire_benchmark_runs_and_reports() -> None:
    """``benchmarks.async_fire --quick`` (issue 27): every mode fires exactly (it asserts so)."""
    from services import require_service

    require_service("PostgreSQL", "127.0.0.1", 5432)
    from benchmarks import async_fire

    args = ["--sessions", "6", "--coroutines", "12", "--threads", "3", "--fires", "2"]
    got = {
        mode: async_fire.run_mode(mode, async_fire.PG, async_fire.parse(args))
        for mode in async_fire.MODES
    }
    assert {mode: g["fires"] for mode, g in got.items()} == dict.fromkeys(async_fire.MODES, 12)
    assert all(g["per_second"] > 0 and g["p99"] >= g["p50"] > 0 for g in got.values())


def test_path_cpu_counts_round_trips_per_instance() -> None:
    """``benchmarks.path_cpu --round-trips`` (issue 22) on memcached (a server it starts):
    counted round trips per fire and per instance; ``--cold`` reads at least as much."""
    import json

    found = {}
    args = ["--round-trips", "--sessions", "2", "--repeat", "1", "--backends", "memcached"]
    for cold in ([], ["--cold"]):
        out = run_benchmark("path_cpu", *args, *cold)
        assert out.returncode == 0, out.stdout + out.stderr
        line = next(x for x in out.stdout.splitlines() if x.startswith("{"))
        found[bool(cold)] = json.loads(line)
    warm, cold_run = found[False], found[True]
    # Mark running loads; the finish computes on the snapshot it left (nothing concurrent).
    assert warm["worker_load_per_instance"] == 1.0
    assert warm["worker_compare_and_swap_per_instance"] == 2.0
    assert warm["worker_conflicts"] == 0.0
    assert 0 < warm["worker_round_trips_per_instance"] < warm["round_trips_per_instance"]
    assert cold_run["worker_round_trips_per_load"] > warm["worker_round_trips_per_load"] >= 1


@pytest.mark.service
def test_producer_cpu_fires_through_a_real_celery_app_and_checks_what_it_sent() -> None:
    """``benchmarks.producer_cpu`` (issue 22): the benchmark's app on the Redis broker and
    its Django cache storage; every run checks the published messages, then reports."""
    import json

    from services import require_service

    require_service("Redis", "127.0.0.1", 6379)
    require_service("PostgreSQL", "127.0.0.1", 5432)
    unset = ("DJANGO_SETTINGS_MODULE", "TRIGGERS_BENCH_REDIS_URL")
    for extra in ([], ["--no-broker"]):
        args = ["--variants", "redis-django", "--sessions", "2", "--repeat", "1", *extra]
        out = run_benchmark("producer_cpu", *args, "--profile", "3", unset=unset)
        assert out.returncode == 0, out.stdout + out.stderr
        line = next(x for x in out.stdout.splitlines() if x.startswith("{"))
        found = json.loads(line)
        assert found["variant"] == "redis-django"
        assert found["broker"] is not bool(extra)
        assert found["cpu_ms_per_fire"] > 0
        assert "Ordered by: cumulative time" in out.stdout
