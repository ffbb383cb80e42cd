"""A small run of the console's benchmark (``python -m benchmarks.web``) so it cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_web_benchmark_runs_and_reports() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRIGGERS_STORAGE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.web", "--quick"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| session page | 200 |" in done.stdout
    assert "| UID prefix search | 2,000 |" in done.stdout
