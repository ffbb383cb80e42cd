"""The transcript in docs/cli.md, run for real: ``python tests/docs/cli_transcript.py [--write]``.

The page's two Python blocks (the application's ``survey_tasks.py`` and the
script that stores the demo sessions) set up a fresh directory; then every
``$ triggers ...`` line of each ``console`` block marked ``<!-- cli-transcript -->``
runs there through the installed console script, and its output (stdout and
stderr, then ``[exit code N]`` unless 0) replaces what the page shows.
``export NAME=VALUE`` lines set the environment of the commands after them.
Without ``--write`` it prints the differences and exits 1 if there are any.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PAGE = ROOT / "docs" / "cli.md"
sys.path.insert(0, str(HERE))

from markdown_blocks import parse_blocks  # noqa: E402 - after the path is set

TRIGGERS = Path(sys.executable).parent / "triggers"
_BLOCK = re.compile(r"(<!-- cli-transcript -->\n```console\n)(.*?)(```)", re.DOTALL)
TIMEOUT = 120


def environment() -> dict[str, str]:
    """What the commands run with: this environment minus a storage URL, no colours."""
    env = {k: v for k, v in os.environ.items() if k != "TRIGGERS_STORAGE_URL"}
    env.update(PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1", TERM="dumb")
    return env


def prepare(workdir: Path) -> None:
    """Write the page's file blocks and run its other Python blocks, in order, in ``workdir``."""
    blocks = [b for b in parse_blocks(PAGE, ROOT) if b.language == "python"]
    for block in blocks:
        if block.file_path:
            (workdir / block.file_path).write_text(block.code, encoding="utf-8")
    for n, block in enumerate(b for b in blocks if not b.file_path):
        script = workdir / f"setup_{n}.py"
        script.write_text(block.code, encoding="utf-8")
        done = subprocess.run(
            [sys.executable, script.name],
            cwd=workdir,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{block.location} failed:\n{done.stdout}\n{done.stderr}")


def run_block(body: str, workdir: Path, env: dict[str, str]) -> str:
    """The block with each command's real output."""
    out: list[str] = []
    for line in body.splitlines():
        if not line.startswith("$ "):
            continue  # old output
        out.append(line)
        command = line[2:]
        if command.startswith("export "):
            name, _, value = command.removeprefix("export ").partition("=")
            env[name] = value
            continue
        argv = shlex.split(command)
        assert argv[0] == "triggers", line
        done = subprocess.run(
            [str(TRIGGERS), *argv[1:]],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        out.extend(done.stdout.rstrip("\n").splitlines())
        if done.returncode:
            out.append(f"[exit code {done.returncode}]")
    return "\n".join(out) + "\n"


def regenerate(page_text: str, workdir: Path) -> str:
    """The page with every transcript block's output as it is now."""
    prepare(workdir)
    env = environment()
    return _BLOCK.sub(lambda m: m[1] + run_block(m[2], workdir, env) + m[3], page_text)


def main(argv: list[str]) -> int:
    text = PAGE.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="cli-transcript-") as workdir:
        fresh = regenerate(text, Path(workdir))
    if "--write" in argv:
        PAGE.write_text(fresh, encoding="utf-8")
        return 0
    diff = list(difflib.unified_diff(text.splitlines(), fresh.splitlines(), lineterm=""))
    print("\n".join(diff))
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
