"""The README's first command, as a newcomer runs it: ``pip install nox && nox -s example``.

In a fresh virtualenv, in a fresh copy of the checkout (the files git knows,
so nothing of this worktree's build or ``.nox`` leaks in), the first command
line of the README's first shell block runs verbatim with bash. It needs the
package index (pip installs nox, then nox installs the project with its
``sqlalchemy`` extra), so it is marked ``slow``; it must print the example's
real results: every instance's final status and result, and the closing line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_blocks import parse_blocks
from shell_commands import commands

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 900


def first_command_line() -> str:
    """The README's first command line (``a && b`` kept together, as a reader pastes it)."""
    block = next(b for b in parse_blocks(ROOT / "README.md", ROOT) if b.language == "shell")
    line = next(
        ln.strip()
        for ln in block.code.splitlines()
        if ln.strip() and not ln.strip().startswith("#")
    )
    assert commands(line) == ["pip install nox", "nox -s example"], line
    return line


def copy_checkout(target: Path) -> None:
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, names):
        source = ROOT / name.decode()
        if source.is_file():
            destination = target / name.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


@pytest.mark.slow
def test_the_first_command_of_the_readme_prints_real_results(tmp_path: Path) -> None:
    line = first_command_line()
    checkout = tmp_path / "checkout"
    copy_checkout(checkout)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=TIMEOUT)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "VIRTUAL_ENV", "TRIGGERS_STORAGE_URL", "PYTHONHOME"}
    }
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(venv)
    done = subprocess.run(
        ["bash", "-c", line],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    report = f"$ {line}\nexit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    out = done.stdout
    assert "the workflow ended as expected" in out, report
    assert "t_computeScore#0       finished   {'applicantId': 'A-17'" in out, report
    assert "t_sendReport#1         finished   {'channel': 'email'" in out, report
    assert "t_sendReminder#0       abandoned" in out, report
    assert "Session example was successful" in done.stderr, report
