"""A small smoke run of the benchmarks (``nox -s bench``) so their code cannot rot.

Tiny sizes, in-process and SQLite backends only, and no timing assertion: the
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
        "Targets of issue 8",
    ):
        assert heading in text, heading
    for backend in ("| memory |", "| sqlite |", "| sqlite-normal |"):
        assert backend in text, backend
    assert "n/a (--quick sizes)" in text
