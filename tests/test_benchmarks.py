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


def test_the_benchmarks_run_and_report(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    env = {k: v for k, v in os.environ.items() if k != "TRIGGERS_STORAGE_URL"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--backends",
            "memory,sqlite,sqlite-normal",
            "--output",
            str(report),
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = report.read_text()
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
    report = tmp_path / "report.md"
    # The benchmark starts its own memcached unless told to use another one.
    skip = ("TRIGGERS_STORAGE_URL", "TRIGGERS_BENCH_MEMCACHED_URL")
    env = {k: v for k, v in os.environ.items() if k not in skip}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--backends",
            "memcached",
            "--output",
            str(report),
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = report.read_text()
    assert "| memcached |" in text
    assert "Targets of issue 12 (memcached)" in text
    assert "memcached 1." in text  # the version in the machine line


def test_the_django_cache_benchmarks_run_and_report(tmp_path: Path) -> None:
    import shutil

    from services import require_service, unavailable

    require_service("Redis", "127.0.0.1", 6379)
    if shutil.which("memcached") is None:
        unavailable("memcached", "the memcached binary is not installed (apt install memcached)")
    report = tmp_path / "report.md"
    # Django is configured by the benchmark (DJANGO_SETTINGS_MODULE=benchmarks.django_settings).
    skip = ("TRIGGERS_STORAGE_URL", "TRIGGERS_BENCH_REDIS_URL", "DJANGO_SETTINGS_MODULE")
    env = {k: v for k, v in os.environ.items() if k not in skip}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--backends",
            "django-redis-cache,django-pymemcache",
            "--output",
            str(report),
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = report.read_text()
    assert "| django-redis-cache |" in text
    assert "| django-pymemcache |" in text
    assert "Targets of issue 13 (django-redis-cache)" in text
    assert "Targets of issue 13 (django-pymemcache)" in text
    assert "Redis " in text  # the version in the machine line
