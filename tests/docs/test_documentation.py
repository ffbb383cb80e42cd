"""Executed documentation: every Python block of README.md and docs/*.md runs, as written.

Each page runs in a fresh interpreter in a temporary directory (its blocks in
order, in one namespace; see ``markdown_blocks.py`` for the directives).
Blocks that need a service run against the real one (``conftest.py``). Blocks
marked ``docs-test: skip`` are counted and listed in the terminal summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SUMMARY, Services
from markdown_blocks import Block, parse_blocks

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).resolve().parent / "run_blocks.py"
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS: dict[str, list[Block]] = {
    page.relative_to(ROOT).as_posix(): parse_blocks(page, ROOT) for page in PAGES
}
ALL = [block for blocks in BLOCKS.values() for block in blocks]
CODE_PAGES = sorted(
    page for page, blocks in BLOCKS.items() if any(not b.skip and not b.pytest for b in blocks)
)
PYTEST_BLOCKS = [b for b in ALL if b.pytest and not b.skip]

SUMMARY.update(
    total=len(ALL),
    pages=len(BLOCKS),
    run=sum(1 for b in ALL if not b.skip and not b.pytest),
    pytest=len(PYTEST_BLOCKS),
    skipped=[(b.location, b.skip) for b in ALL if b.skip],
)

#: A page (or pytest block) gets this long; the slowest run a few seconds.
TIMEOUT = 300


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRIGGERS_STORAGE_URL"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_the_pages_have_python_blocks() -> None:
    assert BLOCKS["README.md"], "the README snippet was not found"
    assert len(ALL) >= 20
    assert all(b.code.strip() for b in ALL)


@pytest.mark.parametrize("page", CODE_PAGES)
def test_page_runs(page: str, tmp_path: Path, doc_services: Services) -> None:
    blocks = [b for b in BLOCKS[page] if not b.skip and not b.pytest]
    spec = {
        "root": str(ROOT),
        "blocks": [
            {
                "page": b.page,
                "line": b.line,
                "code": doc_services.substitute(b.code),
                "setup": doc_services.substitute(b.setup),
                "setup_line": b.setup_line,
                "file": b.file_path,
            }
            for b in blocks
        ],
    }
    spec_path = tmp_path / "blocks.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    done = run([sys.executable, str(RUNNER), str(spec_path)], cwd=work)
    ran = [
        line.removeprefix("ran ") for line in done.stdout.splitlines() if line.startswith("ran ")
    ]
    report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert ran == [b.location for b in blocks], report


@pytest.mark.parametrize("block", PYTEST_BLOCKS, ids=[b.location for b in PYTEST_BLOCKS])
def test_pytest_block_passes(block: Block, tmp_path: Path, doc_services: Services) -> None:
    module = tmp_path / "test_documented_example.py"
    module.write_text(doc_services.substitute(block.setup + "\n" + block.code), encoding="utf-8")
    done = run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            module.name,
        ],
        cwd=tmp_path,
    )
    report = f"{block.location}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert " passed" in done.stdout, report
    assert "skipped" not in done.stdout, report


def test_the_readme_snippet_runs_as_a_script_and_prints_finished(tmp_path: Path) -> None:
    snippet = BLOCKS["README.md"][0]
    script = tmp_path / "snippet.py"
    script.write_text(snippet.code, encoding="utf-8")
    first = run([sys.executable, str(script)], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1].startswith("finished {'score': 3}"), first.stdout
    again = run([sys.executable, str(script)], cwd=tmp_path)  # the session is in triggers.db
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1].startswith("finished {'score': 3}"), again.stdout


def test_directives_are_parsed(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "\n".join(
            [
                "<!-- docs-test: skip an excerpt -->",
                "```python",
                "import missing",
                "```",
                "<!-- docs-test: setup",
                "x = 1",
                "-->",
                "",
                "  ```python",
                "  print(x)",
                "  ```",
                "<!-- docs-test: pytest -->",
                "```python",
                "def test_x(): pass",
                "```",
                "```python",
                "# app/tasks.py",
                "X = 1",
                "```",
                "```json",
                "{}",
                "```",
            ]
        )
    )
    skipped, indented, tested, file_block = parse_blocks(page, tmp_path)
    assert (skipped.skip, skipped.line) == ("an excerpt", 3)
    assert (indented.code, indented.setup, indented.setup_line) == ("print(x)\n", "x = 1", 6)
    assert tested.pytest
    assert not tested.skip
    assert file_block.file_path == "app/tasks.py"
    bad = tmp_path / "bad.md"
    bad.write_text("<!-- docs-test: skip -->\n```python\npass\n```\n")
    with pytest.raises(ValueError, match="needs a reason"):
        parse_blocks(bad, tmp_path)
