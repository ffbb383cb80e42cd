"""The layout of docs/architecture.md, checked: no import circles, no oversized module,
the engine pure (import-linter), its log levels the standard ones.

The import graph is drawn from the source with :mod:`ast`, every import counted:
those under ``if TYPE_CHECKING:`` and those inside functions too, since a
circle a type checker or a late import hides is still two modules that need
each other.
"""

from __future__ import annotations

import ast
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from triggers_core.engine import levels

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("triggers_core", "triggers_backends", "triggers_celery", "benchmarks")
#: No source file outside tests/ may be longer than this.
MAX_LINES = 700


def _source_files() -> dict[str, Path]:
    """Module name -> file, for every package above plus the noxfile."""
    modules: dict[str, Path] = {"noxfile": ROOT / "noxfile.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of the tree that ``name`` imports (a name imported from a package
    counts as its submodule when it is one, else as the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                drop = node.level - 1 if is_package else node.level
                base = base[: len(base) - drop] if drop else base
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                found.add(candidate if candidate in known else module)
    return {m for m in found if m in known and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_checker_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_anywhere_in_the_source_tree() -> None:
    files = _source_files()
    known = set(files)
    graph = {name: _imports(name, path, known) for name, path in files.items()}
    assert _cycles(graph) == []


def test_no_source_file_over_the_limit() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in _source_files().values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_engine_levels_are_the_standard_ones() -> None:
    for name in ("NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        assert getattr(levels, name) == getattr(logging, name)
        assert levels.level_name(getattr(levels, name)) == name
    assert levels.level_name(35) == logging.getLevelName(35) == "Level 35"


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if command is None:
        pytest.fail("lint-imports is missing: install the test extra (import-linter)")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [command, "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_the_purity_contract_fails_when_the_engine_imports_logging(tmp_path: Path) -> None:
    """The import-linter contract is a test that can fail: add ``import logging`` to an
    engine module of a copy of the tree and it breaks, naming the import."""
    for package in ("triggers_core", "triggers_backends", "triggers_celery"):
        shutil.copytree(ROOT / package, tmp_path / package)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    kept = _lint_imports(tmp_path)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    fire = tmp_path / "triggers_core" / "engine" / "fire.py"
    fire.write_text(fire.read_text(encoding="utf-8") + "\nimport logging\n", encoding="utf-8")
    broken = _lint_imports(tmp_path)
    assert broken.returncode != 0
    assert "triggers_core.engine.fire -> logging" in broken.stdout
