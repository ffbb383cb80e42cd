"""Durations in a configuration: ``"90s"``, ``"15m"``, ``"24h"``, ``"7d"`` or ISO 8601 ``"PT24H"``.

A :class:`Duration` keeps the text the user wrote (so the configuration reads
back as written) and the :class:`~datetime.timedelta` it means. Durations of
``within`` and ``delay`` are positive and at most :data:`MAX_DURATION`.
"""

from __future__ import annotations

import re
from datetime import timedelta

import attrs

__all__ = ["MAX_DURATION", "Duration", "format_timedelta", "parse_duration"]

#: The longest ``within`` or ``delay`` (ten years of 365 days).
MAX_DURATION = timedelta(days=3650)

_SHORT = re.compile(r"(\d{1,9})(s|m|h|d)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_ISO = re.compile(
    r"P(?:(?P<w>\d{1,9})W)?(?:(?P<d>\d{1,9})D)?"
    r"(?:T(?:(?P<h>\d{1,9})H)?(?:(?P<m>\d{1,9})M)?(?:(?P<s>\d{1,9}(?:\.\d{1,6})?)S)?)?"
)
_EXAMPLES = '"90s", "15m", "24h", "7d" or ISO 8601 like "PT24H", "P1DT12H"'


@attrs.frozen
class Duration:
    """A duration as written (``text``) and what it means (``delta``)."""

    text: str
    delta: timedelta

    @property
    def seconds(self) -> float:
        """The duration in seconds."""
        return self.delta.total_seconds()


def _hint(text: str) -> str:
    """A "did you mean" for the usual slips (``24hr``, ``15 min``, ``pt24h``)."""
    compact = text.strip().replace(" ", "").lower()
    for long, unit in (
        ("seconds", "s"),
        ("second", "s"),
        ("secs", "s"),
        ("sec", "s"),
        ("minutes", "m"),
        ("minute", "m"),
        ("mins", "m"),
        ("min", "m"),
        ("hours", "h"),
        ("hour", "h"),
        ("hrs", "h"),
        ("hr", "h"),
        ("days", "d"),
        ("day", "d"),
    ):
        if compact.endswith(long) and compact[: -len(long)].isdigit():
            return f"; did you mean {compact[: -len(long)] + unit!r}?"
    if compact.upper() != text and _ISO.fullmatch(compact.upper()) and compact.upper() != "P":
        return f"; did you mean {compact.upper()!r}?"
    return ""


def parse_duration(value: object) -> Duration:
    """``value`` as a :class:`Duration`, or :class:`ValueError` saying what is wrong.

    Accepts ``"<n>s"``, ``"<n>m"``, ``"<n>h"``, ``"<n>d"`` and ISO 8601
    durations without years or months (``"PT24H"``, ``"P1DT12H"``, ``"P2W"``):
    a year or a month has no fixed length. Positive, at most :data:`MAX_DURATION`.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like {_EXAMPLES}, got {type(value).__name__}")
    text = value
    delta: timedelta | None = None
    short = _SHORT.fullmatch(text)
    if short is not None:
        delta = timedelta(seconds=int(short.group(1)) * _UNITS[short.group(2)])
    else:
        iso = _ISO.fullmatch(text)
        if iso is not None and text not in ("P", "PT") and not text.endswith("T"):
            parts = iso.groupdict()
            delta = timedelta(
                weeks=int(parts["w"] or 0),
                days=int(parts["d"] or 0),
                hours=int(parts["h"] or 0),
                minutes=int(parts["m"] or 0),
                seconds=float(parts["s"] or 0),
            )
    if delta is None:
        raise ValueError(f"not a duration: {text!r}{_hint(text)} (use {_EXAMPLES})")
    if delta <= timedelta(0):
        raise ValueError(f"{text!r}: a duration must be positive")
    if delta > MAX_DURATION:
        raise ValueError(f"{text!r}: longer than the longest allowed ({MAX_DURATION.days}d)")
    return Duration(text, delta)


def format_timedelta(delta: timedelta) -> str:
    """A short human form: ``"3 h 12 min"``, ``"45 s"``, ``"2 d 1 h"`` (two largest units)."""
    total = int(max(delta.total_seconds(), 0))
    parts = []
    for size, unit in ((86_400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if total >= size:
            parts.append(f"{total // size} {unit}")
            total %= size
    return " ".join(parts[:2]) or "0 s"
