"""The CLI tests share the demo directory of docs/cli.md (its tasks, configs and sessions)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))

from cli_transcript import prepare


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("demo")
    prepare(workdir)
    return workdir


@pytest.fixture
def demo(demo_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the demo directory (tests may change its sessions)."""
    target = tmp_path / "demo"
    shutil.copytree(demo_template, target)
    return target
