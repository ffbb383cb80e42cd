"""Executed documentation: every code block of README.md and docs/*.md runs as written.

Each page runs in a fresh interpreter in a fresh temporary directory, its
blocks in page order (``run_blocks.py``): Python blocks as written, in one
namespace; file blocks written and imported (``test_*.py`` files run with
pytest); shell blocks run, applied or checked (``shell_commands.py`` says
which: ``pip install`` lines are checked against ``pyproject.toml`` instead of
run, ``nox -s`` lines against ``noxfile.py``, ``export`` applies to the rest of
the page, a server command starts the server for the rest of the page,
anything else runs with bash). Nothing is substituted and nothing hidden runs
first: a block needs only what the page shows above it and the services
``docs/testing.md`` lists. ``console`` blocks are run by
``test_cli_transcript.py``; the README's first command, ``nox -s example``, by
``test_readme_first_screen.py``. A block can only be excused by a visible
first line ``# Not runnable: REASON``, and at most :data:`MAX_NOT_RUNNABLE`
blocks are; the terminal summary prints the counts.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SUMMARY
from markdown_blocks import Block, parse_blocks

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).resolve().parent / "run_blocks.py"
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS: dict[str, list[Block]] = {
    page.relative_to(ROOT).as_posix(): parse_blocks(page, ROOT) for page in PAGES
}
ALL = [block for blocks in BLOCKS.values() for block in blocks]
NOT_RUNNABLE = [b for b in ALL if b.not_runnable]
RUNNABLE = [b for b in ALL if not b.not_runnable]
#: At most this many blocks may be marked not runnable (issue 23).
MAX_NOT_RUNNABLE = 5
PAGE_BLOCKS = {
    page: [b for b in blocks if not b.not_runnable and b.language != "console"]
    for page, blocks in BLOCKS.items()
}
CODE_PAGES = sorted(page for page, blocks in PAGE_BLOCKS.items() if blocks)

SUMMARY.update(
    total=len(ALL),
    pages=len(BLOCKS),
    runnable=len(RUNNABLE),
    python=sum(1 for b in RUNNABLE if b.language == "python" and not b.is_test_file),
    test_files=sum(1 for b in RUNNABLE if b.is_test_file),
    shell=sum(1 for b in RUNNABLE if b.language == "shell"),
    console=sum(1 for b in RUNNABLE if b.language == "console"),
    not_runnable=[(b.location, b.not_runnable) for b in NOT_RUNNABLE],
)

#: A page gets this long; the slowest run a few seconds.
TIMEOUT = 300


def environment() -> dict[str, str]:
    """This environment minus anything that would choose a storage or Django settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"TRIGGERS_STORAGE_URL", "DJANGO_SETTINGS_MODULE"}
    }
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


def test_the_pages_have_code_blocks_and_few_are_not_runnable() -> None:
    print(
        f"{len(RUNNABLE)} runnable blocks, {len(NOT_RUNNABLE)} marked not runnable: "
        + ", ".join(f"{b.location} ({b.not_runnable})" for b in NOT_RUNNABLE)
    )
    assert BLOCKS["README.md"], "the README snippet was not found"
    assert len(RUNNABLE) >= 50
    assert all(b.code.strip() for b in ALL)
    assert len(NOT_RUNNABLE) <= MAX_NOT_RUNNABLE, [b.location for b in NOT_RUNNABLE]


def run_page(page: str, tmp_path: Path, python: str, env: dict[str, str]) -> None:
    """Run ``page``'s blocks with ``python`` in a fresh directory; fail with the output."""
    blocks = PAGE_BLOCKS[page]
    spec = {
        "root": str(ROOT),
        "blocks": [
            {
                "page": b.page,
                "line": b.line,
                "language": b.language,
                "code": b.code,
                "file": b.file_path,
                "test_file": b.is_test_file,
            }
            for b in blocks
        ],
    }
    spec_path = tmp_path / "blocks.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [python, str(RUNNER), str(spec_path)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    ran = [
        line.removeprefix("ran ") for line in done.stdout.splitlines() if line.startswith("ran ")
    ]
    report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert ran == [b.location for b in blocks], report


@pytest.mark.parametrize("page", CODE_PAGES)
def test_page_runs(page: str, tmp_path: Path) -> None:
    run_page(page, tmp_path, sys.executable, environment())


def docs_requirements() -> list[str]:
    """What the docs' ``pip install`` lines install, together, for this checkout."""
    from shell_commands import TOOLS, commands

    extras: set[str] = set()
    packages: set[str] = set()
    for block in RUNNABLE:
        if block.language != "shell":
            continue
        for command in commands(block.code):
            argv = shlex.split(command, comments=True)
            if argv[:2] != ["pip", "install"]:
                continue
            for arg in argv[2:]:
                name, _, rest = arg.partition("[")
                if name in TOOLS:
                    packages.add(name)
                elif rest:
                    extras.update(e.strip() for e in rest.rstrip("]").split(","))
    return [f"{ROOT}[{','.join(sorted(extras))}]", *sorted(packages)]


@pytest.fixture(scope="session")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A new virtualenv with only what the docs say to install (needs the package index)."""
    venv = tmp_path_factory.mktemp("docs-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=TIMEOUT)
    python = str(venv / "bin" / "python")
    done = subprocess.run(
        [python, "-m", "pip", "install", "-q", *docs_requirements()],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return python


@pytest.mark.slow
@pytest.mark.parametrize("page", CODE_PAGES)
def test_page_runs_in_a_fresh_virtualenv(page: str, tmp_path: Path, fresh_python: str) -> None:
    # The installed copy, not this checkout: no PYTHONPATH.
    env = {k: v for k, v in environment().items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    run_page(page, tmp_path, fresh_python, env)


def test_the_readme_snippet_runs_as_a_script_and_prints_finished(tmp_path: Path) -> None:
    snippet = next(b for b in BLOCKS["README.md"] if b.language == "python")
    script = tmp_path / "snippet.py"
    script.write_text(snippet.code, encoding="utf-8")
    first = run([sys.executable, str(script)], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1].startswith("finished {'score': 3}"), first.stdout
    again = run([sys.executable, str(script)], cwd=tmp_path)  # the session is in triggers.db
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1].startswith("finished {'score': 3}"), again.stdout


def test_blocks_are_classified_by_what_the_reader_sees(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "\n".join(
            [
                "```python",
                "# Not runnable: an excerpt of your settings.py",
                "import missing",
                "```",
                "  ```python",
                "  print(1)",
                "  ```",
                "```python",
                "# test_app.py",
                "def test_x(): pass",
                "```",
                "```python",
                "# app/tasks.py",
                "X = 1",
                "```",
                "```bash",
                "pip install 'celery-triggers[cli]'",
                "```",
                "<!-- cli-transcript -->",
                "```console",
                "$ triggers --help",
                "```",
                "```json",
                "{}",
                "```",
            ]
        )
    )
    excerpt, indented, test_file, file_block, shell, console = parse_blocks(page, tmp_path)
    assert (excerpt.not_runnable, excerpt.line) == ("an excerpt of your settings.py", 2)
    assert (indented.code, indented.language, indented.not_runnable) == (
        "print(1)\n",
        "python",
        None,
    )
    assert test_file.is_test_file
    assert (file_block.file_path, file_block.is_test_file) == ("app/tasks.py", False)
    assert (shell.language, console.language) == ("shell", "console")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<!-- docs-test: setup\nx = 1\n-->\n```python\nprint(x)\n```\n", "cannot see"),
        ("<!-- docs-test: skip why -->\n```python\npass\n```\n", "cannot see"),
        ("```\npip install x\n```\n", "without a language"),
        ("```console\n$ triggers\n```\n", "marked transcript"),
        ("```python\npass\n", "never ends"),
    ],
)
def test_hidden_setup_and_unlabelled_blocks_are_refused(
    tmp_path: Path, text: str, problem: str
) -> None:
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(ValueError, match=problem):
        parse_blocks(page, tmp_path)


def test_install_and_nox_lines_are_checked_against_the_project() -> None:
    from shell_commands import check_nox, check_pip_install, commands

    assert commands("pip install nox && nox -s example  # comment\n# note\nls \\\n  -l\n") == [
        "pip install nox",
        "nox -s example  # comment",
        "ls    -l",
    ]
    assert check_pip_install("pip install -e '.[postgres,celery]'").startswith("checked")
    assert check_pip_install("pip install -e '.[sqlalchemy]'  # in a checkout").startswith("check")
    assert check_pip_install("pip install -e . pytest hypothesis").startswith("checked")
    assert check_nox("nox -s lint typecheck").startswith("checked")
    for wrong, problem in [
        ("pip install 'triggers[cli]'", "is not this project"),
        ("pip install triggers", "is not this project"),
        ("pip install -e '.[clii]'", "declares no extra"),
        ("pip install 'celery-triggers[postgres,celery]'", "not on PyPI yet"),
        ("pip install '.[cli]'", "with -e"),
        ("pip install --pre celery-triggers", "does not know the option"),
    ]:
        with pytest.raises(ValueError, match=problem):
            check_pip_install(wrong)
    with pytest.raises(ValueError, match="no session"):
        check_nox("nox -s exmaple")
