"""Package metadata a newcomer (and PyPI) reads: the distribution's name, URLs, docs index."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
DISTRIBUTION = "celery-triggers"
#: The original framework's repository: credited in the README, never this project's URL.
ORIGINAL_REPOSITORY = "github.com/eflglobal/triggers"
#: Tests that quote the wrong install lines on purpose, to refuse them.
CHECKERS = {"tests/docs/test_metadata.py", "tests/docs/test_documentation.py"}


def tracked_text_files() -> list[Path]:
    """Every file of the repository git knows, that is text (sources, docs, configuration)."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    files = []
    for name in filter(None, names):
        path = ROOT / name.decode()
        if path.suffix in {".py", ".md", ".toml", ".txt", ".cfg", ".ini", ".rst", ".yml", ".yaml"}:
            files.append(path)
    return files


def test_the_distribution_is_celery_triggers() -> None:
    # `triggers` on the package index is an unrelated project.
    project = PYPROJECT["project"]
    assert project["name"] == DISTRIBUTION
    dev = project["optional-dependencies"]["dev"]
    assert f"{DISTRIBUTION}[test]" in dev
    cli = (ROOT / "triggers_core" / "cli" / "_app.py").read_text(encoding="utf-8")
    assert f'version_option(package_name="{DISTRIBUTION}"' in cli
    # The command, the import packages and the entry point groups keep their names.
    assert project["scripts"] == {"triggers": "triggers_core.cli:main"}
    assert {"triggers.storages", "triggers.runners", "triggers.managers"} <= set(
        project["entry-points"]
    )


def test_no_install_line_names_the_unrelated_distribution() -> None:
    wrong = re.compile(r"pip install\s+(?:-\S+\s+)*['\"]?triggers(?:\[|['\"]?(?:\s|$|`))")
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in tracked_text_files()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if wrong.search(line) and path.relative_to(ROOT).as_posix() not in CHECKERS
    ]
    assert found == []


def test_install_hints_name_the_distribution() -> None:
    from triggers_core.runtime.registry import install_hint

    # Not on PyPI yet: the hint gives the checkout's command first, then the published one.
    assert install_hint("postgresql", "psycopg") == (
        "pip install -e '.[postgres]' in a checkout of celery-triggers "
        "(pip install 'celery-triggers[postgres]' once it is on PyPI)"
    )
    assert "celery-triggers[...]" in install_hint("unknown", None)


def test_project_urls_are_this_projects_own() -> None:
    urls = PYPROJECT["project"].get("urls", {})
    assert all(url.startswith("https://") for url in urls.values())
    assert not [url for url in urls.values() if ORIGINAL_REPOSITORY in url]


def test_the_readme_credits_the_original_design_and_does_not_claim_its_pypi_name() -> None:
    for page in ("README.md", "docs/migrating.md"):
        text = " ".join((ROOT / page).read_text(encoding="utf-8").split())
        assert "where the name `triggers` is the original framework" not in text
        assert "the original `triggers` package" not in text
        assert "`triggers` on the Python Package Index belongs to an unrelated project" in text or (
            "the name `triggers` there belongs to an unrelated project" in text
        ), page
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ORIGINAL_REPOSITORY in readme
    assert "follows the design of the original Triggers framework" in " ".join(readme.split())


def test_every_docs_page_is_linked_from_the_index() -> None:
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md") if p.name != "index.md")
    assert [page for page in pages if f"({page})" not in index] == []
