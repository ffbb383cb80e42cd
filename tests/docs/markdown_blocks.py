"""The code blocks of a Markdown page, classified the way a reader sees them.

Nothing a block needs is hidden from the reader: there are no directives in
HTML comments (they are refused), and everything the test does with a block
follows from what the page shows.

* ``python`` blocks run as written, in page order, in one namespace per page,
  like a reader pasting them into one session. A block whose first line is a
  comment naming a Python file (``# myproject/celery.py``) *is* that file: it is
  written to the page's working directory at its place in the page and
  imported; a file named ``test_*.py`` is run with pytest there instead.
* ``bash`` (or ``sh``/``shell``) blocks are commands, run at their place in the
  page (see ``shell_commands.py`` for which run and which are checked).
* ``console`` blocks are transcripts: each follows ``<!-- cli-transcript -->``
  (a marker, not setup) and ``test_cli_transcript.py`` runs them.
* A ``python`` or shell block whose first line is ``# Not runnable: REASON`` is
  visibly not runnable (an excerpt of a file the reader owns, a hypothetical
  package...); the test counts and lists these.

Other languages (``json``, ``text``, ``toml``, ``mermaid``) are not code to
run. A fence without a language is refused, so no block escapes the count.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

__all__ = ["RUNNABLE_LANGUAGES", "Block", "parse_blocks"]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^`\s]*)\s*$")
_FILE_HEADER = re.compile(r"^#\s*(?P<path>[\w./-]+\.py)\s*$")
_NOT_RUNNABLE = re.compile(r"^#\s*Not runnable:\s*(?P<reason>\S.*?)\s*$", re.IGNORECASE)
_COMMENT = re.compile(r"<!--(?P<body>.*?)-->", re.DOTALL)
_TRANSCRIPT_MARKER = "<!-- cli-transcript -->"

#: Block languages and what they are: Python, shell commands, a CLI transcript.
RUNNABLE_LANGUAGES = {
    "python": "python",
    "bash": "shell",
    "sh": "shell",
    "shell": "shell",
    "console": "console",
}
#: Languages that are data or pictures, never run.
OTHER_LANGUAGES = {"json", "text", "toml", "mermaid", "yaml", "ini"}


@attrs.frozen
class Block:
    """One fenced code block of a page."""

    page: str  #: path relative to the repository root, e.g. ``docs/tasks.md``
    line: int  #: line number of the first code line in the page (1-based)
    language: str  #: ``python``, ``shell`` or ``console``
    code: str

    @property
    def location(self) -> str:
        """``page:line`` for messages."""
        return f"{self.page}:{self.line}"

    @property
    def not_runnable(self) -> str | None:
        """The reason given on the block's first line (``# Not runnable: ...``), if any."""
        first = self.code.splitlines()[0] if self.code else ""
        match = _NOT_RUNNABLE.match(first)
        return match["reason"] if match else None

    @property
    def file_path(self) -> str | None:
        """The file this Python block *is*, when its first line names one (``# app/tasks.py``)."""
        if self.language != "python":
            return None
        first = self.code.splitlines()[0] if self.code else ""
        match = _FILE_HEADER.match(first)
        return match["path"] if match else None

    @property
    def is_test_file(self) -> bool:
        """A file block named ``test_*.py``: run with pytest."""
        path = self.file_path
        return path is not None and Path(path).name.startswith("test_")


def parse_blocks(path: Path, root: Path) -> list[Block]:
    """Every ``python``, shell and ``console`` block of the Markdown file ``path``.

    ``root`` is the repository. Raises :class:`ValueError` for an HTML comment
    that tries to direct the test, a fence without a language, a console
    block that is no marked transcript, or an unterminated fence.
    """
    text = path.read_text(encoding="utf-8")
    page = path.relative_to(root).as_posix()
    for comment in _COMMENT.finditer(text):
        if comment.group(0) != _TRANSCRIPT_MARKER:
            line = text.count("\n", 0, comment.start()) + 1
            raise ValueError(
                f"{page}:{line}: an HTML comment the reader cannot see: anything a block "
                "needs must be visible on the page (use a visible '# Not runnable: REASON' "
                "first line for a block that cannot run)"
            )
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, info = fence["indent"], fence["info"]
        start = i + 1
        i += 1
        while i < len(lines) and not _FENCE.match(lines[i]):
            i += 1
        if i == len(lines):
            raise ValueError(f"{page}:{start}: a code block that never ends")
        if not info:
            raise ValueError(f"{page}:{start}: a code block without a language")
        language = RUNNABLE_LANGUAGES.get(info)
        if language is None:
            if info not in OTHER_LANGUAGES:
                raise ValueError(f"{page}:{start}: unknown code block language {info!r}")
            i += 1
            continue
        body = [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[start:i]]
        previous = next((ln.strip() for ln in reversed(lines[: start - 1]) if ln.strip()), "")
        if language == "console" and previous != _TRANSCRIPT_MARKER:
            raise ValueError(f"{page}:{start}: a console block must be a marked transcript")
        blocks.append(Block(page, start + 1, language, "\n".join(body) + "\n"))
        i += 1
    return blocks
