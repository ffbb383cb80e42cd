"""How stored values are shown: JSON text cut to a bound, errors redacted, times and durations.

Everything here returns plain text; the templates escape it (Jinja2's
autoescape), so a stored ``<script>`` is shown, never run. Values are cut to
:data:`MAX_VALUE_CHARS` characters with their full size said, so one huge
result cannot make a page slow or unreadable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from triggers_core.runtime.redaction import redact

__all__ = [
    "LOST_EXCEPTION",
    "MAX_VALUE_CHARS",
    "Shown",
    "format_duration",
    "format_size",
    "parse_time",
    "shown_json",
    "shown_text",
]

#: The most characters of one value (kwargs, result, traceback) a page shows.
MAX_VALUE_CHARS = 20_000
#: ``exceptionType`` of an instance whose worker died (its lease expired).
LOST_EXCEPTION = "triggers_core.errors.WorkerLost"


@attrs.frozen
class Shown:
    """A value as shown: its text (maybe cut) and, if cut, the full size."""

    text: str
    #: Size of the whole value in bytes (UTF-8) when ``text`` is only its start; else None.
    cut_from: int | None = None

    @property
    def note(self) -> str:
        """``truncated: 20,000 of 1,234,567 characters shown (1.2 MB)`` or ""."""
        if self.cut_from is None:
            return ""
        return f"truncated: the first {len(self.text):,} characters of {format_size(self.cut_from)}"


def format_size(size: int) -> str:
    """``812 bytes``, ``14.2 KB``, ``3.1 MB`` (powers of 1000)."""
    if size < 1000:
        return f"{size:,} bytes"
    for unit in ("KB", "MB", "GB"):
        size_f = size / 1000
        if size_f < 1000 or unit == "GB":
            return f"{size_f:.1f} {unit}"
        size = int(size_f)
    raise AssertionError("unreachable")  # pragma: no cover


def shown_text(text: str, *, limit: int = MAX_VALUE_CHARS, redacted: bool = False) -> Shown:
    """``text`` cut to ``limit`` characters (redacted first if ``redacted``)."""
    if redacted:
        text = redact(text)
    if len(text) <= limit:
        return Shown(text)
    return Shown(text[:limit], len(text.encode("utf-8", "surrogatepass")))


def shown_json(value: Any, *, limit: int = MAX_VALUE_CHARS, redacted: bool = False) -> Shown:
    """A JSON value as indented JSON text, cut to ``limit`` characters."""
    try:
        text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):  # a stored value JSON cannot write: show its repr
        text = repr(value)
    return shown_text(text, limit=limit, redacted=redacted)


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time from metadata, or None (missing, not a string, naive or malformed)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def format_duration(span: timedelta | None) -> str:
    """``350 ms``, ``4.2 s``, ``3m 10s``, ``2h 5m``, ``3d 2h``; "" for None."""
    if span is None:
        return ""
    seconds = span.total_seconds()
    if seconds < 0:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    first = next(i for i, (n, _) in enumerate(parts) if n)
    return " ".join(f"{n}{unit}" for n, unit in parts[first : first + 2] if n)


def metadata_text(metadata: Mapping[str, Any], key: str) -> str:
    """``metadata[key]`` if it is a string, else ""."""
    value = metadata.get(key)
    return value if isinstance(value, str) else ""
