"""Terminal safety: stored data reaches an operator's terminal as visible text, never as commands.

Session data is hostile: a task name, an error message or a kwargs value may
hold escape sequences (``ESC ] 0 ; title BEL``, ``ESC [ 2 J``), C1 controls,
NUL, line breaks that fake a line of output, or bidirectional overrides that
reorder what is shown. Every command prints through this module:

* :func:`visible` turns every such character into its escape, shown as text
  (``\\x1b``, ``\\x00``, ``\\n``, ``\\u202e``), so it is seen and never acted on.
* :func:`print_rows` lays out tables as plain columns (no markup language is
  interpreted anywhere: ``t[/x]`` and ``[link=...]`` print as written).
* :func:`json_text` keeps JSON exact: the characters above appear as JSON
  escapes (``\\u001b``), which decode to the same strings.
* :func:`echo` prints lines through :func:`visible`.

Cost: one pass over the text, O(length).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

import click

__all__ = ["cell_width", "echo", "json_text", "print_rows", "visible"]

# C0 controls, DEL, C1 controls; the line and paragraph separators; the bidirectional
# embeddings, overrides and isolates; lone surrogates (which no terminal can encode).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: object) -> str:
    """``text`` (made a string) with every control character shown as its escape.

    ``"a\\x1b[2Jb"`` -> ``"a\\\\x1b[2Jb"`` (backslash, ``x1b``): the sequence is
    printed, not performed. Ordinary text, markup-like brackets included, is
    unchanged.
    """
    string = text if isinstance(text, str) else str(text)
    return _UNSAFE.sub(_escape, string)


def echo(text: object = "", *, err: bool = False) -> None:
    """Print one line of output (stdout, or stderr with ``err``) through :func:`visible`."""
    click.echo(visible(text), err=err)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


# What json.dumps(ensure_ascii=False) leaves raw that a terminal may act on. Such
# characters only occur inside JSON strings, where \\uXXXX means the same character.
_JSON_UNSAFE = re.compile(
    "[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c\ud800-\udfff]"
)


def json_text(data: Any) -> str:
    """``data`` as indented JSON that is exact and safe to print on a terminal."""
    text = json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False)
    return _JSON_UNSAFE.sub(_json_escape, text)


def cell_width(text: str) -> int:
    """Terminal cells ``text`` takes: wide (East Asian) characters two, combining ones none."""
    if text.isascii():
        return len(text)
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def print_rows(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Print a table as columns two spaces apart, every cell through :func:`visible`.

    Linear in the number of cells: each cell is made visible and measured once.
    Trailing spaces are dropped; nothing wraps (pipe it to ``less -S`` if wide).
    """
    table = [list(headers), *([visible(cell) for cell in row] for row in rows)]
    widths = [0] * len(headers)
    measured = [[cell_width(cell) for cell in row] for row in table]
    for sizes in measured:
        for index, width in enumerate(sizes):
            widths[index] = max(widths[index], width)
    for row, sizes in zip(table, measured, strict=True):
        line = "  ".join(
            cell + " " * (widths[index] - size)
            for index, (cell, size) in enumerate(zip(row, sizes, strict=True))
        )
        click.echo(line.rstrip())
