"""The Python code blocks of a Markdown page, with the test directives written beside them.

Directives are HTML comments (invisible on GitHub and in rendered docs) on the
lines just before a fenced block; blank lines may separate them from it:

``<!-- docs-test: skip REASON -->``
    The block is deliberately not run (an excerpt of a file the reader owns, a
    hypothetical third-party package...). The test prints how many blocks are
    skipped, and why.
``<!-- docs-test: pytest -->``
    The block is a test module: it is written to a file and run with pytest,
    which must collect and pass at least one test.
``<!-- docs-test: setup`` ... ``-->``
    Hidden Python code run just before the block, in the same namespace: the
    fixture a reader already has (a session with a failed instance, a
    database with tables...).

A block whose first line is a comment naming a Python file (``# myproject/celery.py``)
is that file: it is written to the page's working directory before anything
runs, then imported, in page order. Every other ``python`` block runs in one
namespace per page, in order, like a reader pasting them into one session.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import attrs

__all__ = ["Block", "parse_blocks"]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^`\s]*)\s*$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>\w+)(?P<rest>.*?)(?P<end>-->)?\s*$")
_FILE_HEADER = re.compile(r"^#\s*(?P<path>[\w./-]+\.py)\s*$")


@attrs.frozen
class Block:
    """One fenced Python block and what the test does with it."""

    page: str  #: path relative to the repository root, e.g. ``docs/tasks.md``
    line: int  #: line number of the first code line in the page (1-based)
    code: str
    skip: str | None = None  #: the reason, for a block marked not runnable
    pytest: bool = False
    setup: str = ""  #: hidden code run first (same namespace)
    setup_line: int = 0

    @property
    def location(self) -> str:
        """``page:line`` for messages."""
        return f"{self.page}:{self.line}"

    @property
    def file_path(self) -> str | None:
        """The file this block *is*, when its first line names one (``# app/tasks.py``)."""
        first = self.code.splitlines()[0] if self.code else ""
        match = _FILE_HEADER.match(first)
        return match["path"] if match else None


def parse_blocks(path: Path, root: Path) -> list[Block]:
    """Every ``python`` block of the Markdown file ``path`` (``root``: the repository)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = path.relative_to(root).as_posix()
    blocks: list[Block] = []
    directives: dict[str, object] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = _DIRECTIVE.match(line)
        if directive:
            kind, rest = directive["kind"], directive["rest"].strip()
            if kind == "setup":
                if directive["end"]:
                    raise ValueError(f"{page}:{i + 1}: a setup directive needs code lines")
                start = i + 1
                i += 1
                while i < len(lines) and lines[i].strip() != "-->":
                    i += 1
                if i == len(lines):
                    raise ValueError(f"{page}:{start}: setup directive without a closing -->")
                directives["setup"] = textwrap.dedent("\n".join(lines[start:i]))
                directives["setup_line"] = start + 1
            elif kind == "skip":
                if not rest.removesuffix("-->").strip():
                    raise ValueError(f"{page}:{i + 1}: 'docs-test: skip' needs a reason")
                directives["skip"] = rest.removesuffix("-->").strip()
            elif kind == "pytest":
                directives["pytest"] = True
            else:
                raise ValueError(f"{page}:{i + 1}: unknown docs-test directive {kind!r}")
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            indent, info = fence["indent"], fence["info"]
            start = i + 1
            i += 1
            while i < len(lines) and not _FENCE.match(lines[i]):
                i += 1
            body = [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[start:i]]
            if info == "python":
                blocks.append(
                    Block(
                        page=page,
                        line=start + 1,
                        code="\n".join(body) + "\n",
                        skip=directives.get("skip"),  # type: ignore[arg-type]
                        pytest=bool(directives.get("pytest")),
                        setup=str(directives.get("setup", "")),
                        setup_line=int(directives.get("setup_line", 0)),  # type: ignore[call-overload]
                    )
                )
            elif directives:
                raise ValueError(f"{page}:{start}: docs-test directives before a {info} block")
            directives = {}
            i += 1
            continue
        if line.strip() and directives:
            raise ValueError(f"{page}:{i + 1}: text between docs-test directives and their block")
        i += 1
    if directives:
        raise ValueError(f"{page}: docs-test directives at the end, with no block")
    return blocks
