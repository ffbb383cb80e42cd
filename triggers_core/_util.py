"""Small helpers shared by the core: JSON validation, deep merge, suggestions."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from triggers_core.errors import InvalidKwargsError

JSONMapping = Mapping[str, Any]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` (or a list of known names) for error messages."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    if known:
        return f"; known: {', '.join(repr(k) for k in known)}"
    return ""


def to_json_value(value: object, path: str) -> Any:
    """Return a JSON-compatible copy of ``value`` (tuples become lists).

    Raises :class:`InvalidKwargsError` naming the key path of the first value that
    JSON cannot represent faithfully.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidKwargsError(path, f"{value!r} is not representable in JSON")
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidKwargsError(
                    f"{path}[{key!r}]", f"keys must be strings, got {type(key).__name__}"
                )
            out[key] = to_json_value(item, f"{path}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [to_json_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise InvalidKwargsError(path, f"{type(value).__name__} is not JSON-serializable")


def to_json_mapping(value: object, path: str) -> dict[str, Any]:
    """Like :func:`to_json_value` but the top level must be a mapping (None -> {})."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidKwargsError(path, f"expected a mapping, got {type(value).__name__}")
    result: dict[str, Any] = to_json_value(value, path)
    return result


def deep_merge(base: JSONMapping, override: JSONMapping) -> dict[str, Any]:
    """Merge ``override`` over ``base``: nested mappings merge, ``override`` wins at leaves."""
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged
