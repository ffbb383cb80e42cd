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

ROOT = Path(__file__).resolve().parents[1]


def quick_report(tmp_path: Path, backends: str, *, unset: tuple[str, ...] = ()) -> str:
    """Run ``benchmarks.run --quick`` on ``backends`` in a subprocess; return its report.

    ``TRIGGERS_STORAGE_URL`` and the variables in ``unset`` are removed from its
    environment, so the benchmark sets up what it needs itself.
    """
    report = tmp_path / "report.md"
    skip = ("TRIGGERS_STORAGE_URL", *unset)
    env = {k: v for k, v in os.environ.items() if k not in skip}
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--backends", backends]
    out = subprocess.run(
        [*command, "--output", str(report)],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=300,
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
