"""Each page's own install lines install what its blocks need.

A reader who lands on one page runs its ``pip install`` line, then its blocks.
The executed-docs test cannot see a missing extra (its virtualenvs hold every
page's extras together), so this test reads, per page, what the runnable
blocks import and which storage URLs they open, and checks that the page's
install lines name the extra (or the tool) providing each. Only this project's
core (``triggers_core``, which needs ``attrs`` only) and the standard library
come without asking.
"""

from __future__ import annotations

import ast
import re
import shlex
import sys
from pathlib import Path

import pytest
from markdown_blocks import Block, parse_blocks
from shell_commands import TOOLS, commands, declared_extras

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Top-level (or dotted) modules and what installs them: ``extra:NAME`` or a tool of TOOLS.
MODULES = {
    "sqlalchemy": "extra:sqlalchemy",
    "triggers_backends.sqlalchemy": "extra:sqlalchemy",
    "triggers_backends.sqlalchemy_upgrade": "extra:sqlalchemy",
    "triggers_backends.sqlalchemy.asyncio": "extra:async",
    "aiosqlite": "extra:async",
    "asyncpg": "extra:async",
    "aiomysql": "extra:async",
    "psycopg": "extra:postgres",
    "pymysql": "extra:mysql",
    "pymemcache": "extra:memcached",
    "triggers_backends.memcached": "extra:memcached",
    "django": "extra:django",
    "triggers_backends.django_cache": "extra:django",
    "triggers_backends.original": "extra:django",
    "celery": "extra:celery",
    "kombu": "extra:celery",
    "triggers_celery": "extra:celery",
    "prometheus_client": "extra:metrics",
    "opentelemetry": "extra:otel",
    "opentelemetry.sdk": "opentelemetry-sdk",
    "click": "extra:cli",
    "triggers_core.cli": "extra:cli",
    "starlette": "extra:web",
    "uvicorn": "extra:web",
    "jinja2": "extra:web",
    "triggers_core.web": "extra:web",
    "hypothesis": "hypothesis",
    "triggers_core.testing.strategies": "hypothesis",
    "pytest": "pytest",
    "redis": "redis",
    "django_redis": "django-redis",
    "httpx": "httpx",
    "starlette.testclient": "httpx",
}
#: Storage URL schemes (with a driver, else the backend's) and the extra whose driver they open.
SCHEMES = {
    "sqlite+aiosqlite": "extra:async",
    "postgresql+asyncpg": "extra:async",
    "mysql+aiomysql": "extra:async",
    "mariadb+aiomysql": "extra:async",
    "sqlite": "extra:sqlalchemy",
    "postgresql": "extra:postgres",
    "postgres": "extra:postgres",
    "mysql": "extra:mysql",
    "mariadb": "extra:mysql",
    "memcached": "extra:memcached",
    "django-cache": "extra:django",
}
#: An extra that pulls in others (pyproject.toml's optional dependencies overlap).
IMPLIES = {
    "postgres": {"sqlalchemy"},
    "mysql": {"sqlalchemy"},
    "redis": {"celery"},
    "web": {"cli"},
    "async": {"sqlalchemy"},
}
_URL = re.compile(r"(?<![\w+.-])(?P<scheme>(?P<backend>[a-z][a-z0-9-]*)(?:\+[a-z0-9]+)?)://")


def requirement_of_module(module: str) -> str | None:
    """What installs ``module`` (longest dotted prefix of :data:`MODULES`), or None."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        found = MODULES.get(".".join(parts[:end]))
        if found is not None:
            return found
    return None


def opened_urls(tree: ast.AST) -> list[str]:
    """The strings (f-strings' literal parts too) given straight to a call: what a block
    opens (``TriggerManager("sqlite:///x.db")``), not a URL it only shows, lists or
    refuses (``for url in [...]``) nor a setting it stores."""
    found = []
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        for arg in [*call.args, *(k.value for k in call.keywords)]:
            parts = arg.values if isinstance(arg, ast.JoinedStr) else [arg]
            found.extend(
                p.value for p in parts if isinstance(p, ast.Constant) and isinstance(p.value, str)
            )
    return found


def needs(block: Block) -> dict[str, str]:
    """``{requirement: why}`` for one runnable block."""
    found: dict[str, str] = {}
    code = block.code
    if block.language == "python":
        for node in ast.walk(ast.parse(code)):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for name in names:
                requirement = requirement_of_module(name)
                if requirement is not None:
                    found.setdefault(requirement, f"imports {name}")
        texts = opened_urls(ast.parse(code))
    else:
        texts = [line for line in code.splitlines() if not line.lstrip().startswith("#")]
        lines = [ln.removeprefix("$ ") for ln in code.splitlines() if ln.startswith("$ ")]
        if block.language == "console" and any(ln.startswith("triggers ") for ln in lines):
            found.setdefault("extra:cli", "runs the triggers command")
    for text in texts:
        for match in _URL.finditer(text):
            scheme = match["scheme"]
            requirement = SCHEMES.get(scheme, SCHEMES.get(match["backend"]))
            if requirement is not None:
                found.setdefault(requirement, f"opens {scheme}:// storage")
    return found


def installed_by(blocks: list[Block]) -> set[str]:
    """What the page's ``pip install`` lines install: ``extra:NAME`` entries and tools."""
    got: set[str] = set()
    for block in blocks:
        if block.language != "shell":
            continue
        for command in commands(block.code):
            argv = shlex.split(command, comments=True)
            if argv[:2] != ["pip", "install"]:
                continue
            for arg in argv[2:]:
                name, _, rest = arg.partition("[")
                if name in TOOLS:
                    got.add(name)
                for extra in filter(None, (e.strip() for e in rest.rstrip("]").split(","))):
                    got.add(f"extra:{extra}")
                    got.update(f"extra:{implied}" for implied in IMPLIES.get(extra, ()))
    return got


def runnable(page: Path) -> list[Block]:
    return [b for b in parse_blocks(page, ROOT) if not b.not_runnable]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_page_installs_what_its_blocks_need(page: Path) -> None:
    blocks = runnable(page)
    got = installed_by(blocks)
    missing = {}
    for block in blocks:
        for requirement, why in needs(block).items():
            if requirement not in got:
                missing.setdefault(requirement, f"{block.location} {why}")
    assert not missing, (
        f"{page.name}: its install lines ({sorted(got) or 'none'}) lack "
        + "; ".join(f"{req} ({why})" for req, why in sorted(missing.items()))
    )


def test_the_maps_name_real_extras_and_tools() -> None:
    named = {*MODULES.values(), *SCHEMES.values()}
    extras = {r.removeprefix("extra:") for r in named if r.startswith("extra:")}
    assert extras <= declared_extras()
    assert {r for r in named if not r.startswith("extra:")} <= TOOLS
    assert set(IMPLIES) | {e for v in IMPLIES.values() for e in v} <= declared_extras()
    assert not {m.split(".")[0] for m in MODULES} & set(sys.stdlib_module_names)


def test_a_missing_extra_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\npip install -e '.[metrics]'\n```\n\n"
        "```python\nfrom celery import Celery\nimport prometheus_client\n"
        'open_storage("sqlite:///x.db", "u")\nAsyncManager(storage=f"sqlite+aiosqlite:///{x}")\n'
        'for url in ["memcached://127.0.0.1", "django-cache://default"]:\n    refused(url)\n'
        "```\n\n"
        "```bash\npip install -e '.[postgres]'\n```\n",
        encoding="utf-8",
    )
    blocks = parse_blocks(page, tmp_path)
    assert installed_by(blocks) == {"extra:metrics", "extra:postgres", "extra:sqlalchemy"}
    assert needs(blocks[1]) == {
        "extra:async": "opens sqlite+aiosqlite:// storage",
        "extra:celery": "imports celery",
        "extra:metrics": "imports prometheus_client",
        "extra:sqlalchemy": "opens sqlite:// storage",
    }
