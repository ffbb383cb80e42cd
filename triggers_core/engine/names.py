"""Names the library stores: task names, trigger names, session UIDs.

Names follow :func:`name_problem`: non-empty, valid Unicode, and no NUL
character, because some backends keep names raw in keys and columns
(PostgreSQL text cannot hold NUL).
"""

from __future__ import annotations

__all__ = ["name_problem", "named_problem", "text_problem"]


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as a string by every backend, or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"contains a lone surrogate ({text[exc.start]!r} at index {exc.start}); "
            "strings must be valid Unicode"
        )
    return None


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a usable task name, trigger name or UID, or None.

    Names are non-empty strings of valid Unicode without NUL characters.
    """
    if not isinstance(name, str):
        return f"expected a non-empty string, got {type(name).__name__}"
    if not name:
        return "must not be empty"
    if "\x00" in name:
        return f"must not contain NUL ('\\x00' at index {name.index(chr(0))})"
    return text_problem(name)


def named_problem(name: str, what: str) -> str | None:
    """``name_problem`` of a string, phrased for a configuration problem, or None.

    ``"trigger name must not be empty"``, ``"trigger name 'a\\x00' must not
    contain NUL ..."`` (``what`` is ``"trigger name"`` there).
    """
    if not name:
        return f"{what} must not be empty"
    problem = name_problem(name)
    return None if problem is None else f"{what} {name!r} {problem}"
