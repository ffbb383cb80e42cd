"""Encoded sizes: the bound on one stored value, checked before anything is written.

Trigger kwargs, a task's ``withParams``, a result and every metadata mapping
(``skip``/``retry`` metadata, replacement kwargs, ``with_context()`` data,
an operator's metadata or cascade kwargs) are each at most
``max_value_bytes`` long once encoded (:data:`DEFAULT_MAX_VALUE_BYTES`, 1 MiB,
unless the storage says otherwise). A storage writes values as compact JSON
(:func:`triggers_core.engine.serialization.dumps`: no spaces, non-ASCII as
``\\uXXXX``), so a value's size is the length of that text, which is what
:func:`encoded_size` measures, with the same encoder settings (keys unsorted:
sorting never changes the length). One call encodes the value once, in C; the
callers (the manager, the outcome of a task) measure each value once, before
the commit loop, so retries of a commit never measure again.

A value over the bound raises :class:`~triggers_core.errors.InvalidKwargsError`
naming its path and both sizes. Traceback text (``exceptionInfo``) is never
refused: :func:`clip_text` keeps its beginning and end within the bound, so a
task that raised with a huge message still ends ``failed`` with a readable
reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from triggers_core.engine.config import TaskConfig
from triggers_core.engine.values import to_json_mapping
from triggers_core.errors import ConfigurationError, InvalidKwargsError

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "MAX_VALUE_BYTES_LIMIT",
    "MIN_VALUE_BYTES_LIMIT",
    "bounded_mapping",
    "check_size",
    "check_task_sizes",
    "check_task_timers",
    "check_value_limit",
    "clip_text",
    "encoded_size",
    "parse_value_limit",
]

#: The default bound on one value's encoded size: 1 MiB.
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024
#: The range a storage's ``max_value_bytes`` may take (1 KiB to 1 GiB).
MIN_VALUE_BYTES_LIMIT = 1024
MAX_VALUE_BYTES_LIMIT = 1024**3

# The storages' encoder (serialization.dumps) minus sort_keys, which costs time and no bytes.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _c_encoder() -> Callable[[Any], int] | None:
    """The C encoder behind ``_ENCODER``, called directly (half the cost on small values).

    ``JSONEncoder.encode`` builds it anew on every call. It is CPython's private
    ``json.encoder.c_make_encoder``: used only if it exists and encodes a probe
    exactly as ``_ENCODER`` does; otherwise :func:`encoded_size` uses ``_ENCODER``.
    No cycle check (``markers=None``): values are checked acyclic before.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        encode = make(
            None,
            _ENCODER.default,
            json.encoder.encode_basestring_ascii,
            None,
            ":",
            ",",
            False,
            False,
            False,
        )
        probe = {"a": [1, 2.5, None, True, "\u00e9\U0001f600"], "b": {"c": -(2**63)}}
        if "".join(encode(probe, 0)) != _ENCODER.encode(probe):
            return None
    except Exception:  # another signature: use the public encoder
        return None
    return lambda value: sum(map(len, encode(value, 0)))


_C_SIZE = _c_encoder()


def encoded_size(value: Any) -> int:
    """Bytes of ``value`` as storages write it (compact JSON, ASCII with ``\\u`` escapes).

    ``value`` must be JSON-compatible (checked by :mod:`~triggers_core.engine.values`
    first). O(size of the value), one pass in C.
    """
    if _C_SIZE is not None:
        return _C_SIZE(value)
    return len(_ENCODER.encode(value))


def check_size(value: Any, path: str, limit: int) -> int:
    """Return ``value``'s encoded size; raise :class:`InvalidKwargsError` if over ``limit``.

    The error's path is the deepest part of ``value`` that is over the limit on
    its own (``trigger_kwargs.document.pages``), or ``path`` itself when only
    the whole is; the message gives the sizes.
    """
    size = encoded_size(value)
    if size <= limit:
        return size
    where, part = _largest_part(value, path, limit)
    whole = "" if where == path else f" (all of {path}: {size:,} bytes)"
    raise InvalidKwargsError(
        where,
        f"{part or size:,} bytes encoded as JSON{whole}, over the limit of {limit:,} bytes "
        "per value (the storage's max_value_bytes; see docs/limits.md)",
    )


def _largest_part(value: Any, path: str, limit: int) -> tuple[str, int]:
    """The path and size of the deepest part of ``value`` over ``limit`` on its own.

    Only on the error path: each level encodes its entries once, and the walk
    goes down one entry per level (values nest at most 64 deep).
    """
    where, found = path, 0
    while isinstance(value, dict | list):
        entries = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in entries:
            size = encoded_size(item)
            if size > limit:
                where += f".{key}" if isinstance(value, dict) else f"[{key}]"
                value, found = item, size
                break
        else:
            break
    return where, found


def bounded_mapping(value: object, path: str, limit: int) -> dict[str, Any]:
    """:func:`~triggers_core.engine.values.to_json_mapping`, then :func:`check_size`."""
    mapping = to_json_mapping(value, path)
    check_size(mapping, path, limit)
    return mapping


def check_task_sizes(tasks: Mapping[str, TaskConfig], limit: int) -> None:
    """Refuse a task whose ``withParams`` is over ``limit`` (path ``t_x.withParams``)."""
    for name, task in tasks.items():
        if task.with_params:
            params = {trigger: dict(values) for trigger, values in task.with_params.items()}
            check_size(params, f"{name}.withParams", limit)


def check_task_timers(
    tasks: Mapping[str, TaskConfig], limit: float | None, why: str = "the storage's limit"
) -> None:
    """Refuse ``within``/``delay`` longer than ``limit`` seconds (None: no limit), with paths."""
    if limit is None:
        return
    problems = [
        f"{name}.{key}: {duration.text!r} is longer than {why} ({limit:g} seconds): "
        "the session could expire before its timer fires"
        for name, task in tasks.items()
        for key, duration in (("within", task.within), ("delay", task.delay))
        if duration is not None and duration.seconds > limit
    ]
    if problems:
        raise ConfigurationError(problems)


def clip_text(text: str, limit: int) -> str:
    """``text`` if it encodes within ``limit`` bytes, else its beginning and end within it.

    A character encodes to at most 12 bytes (a ``\\uXXXX`` pair beyond the BMP),
    so the kept parts, about ``limit / 24`` characters each, always fit.
    """
    if 12 * len(text) + 2 <= limit or encoded_size(text) <= limit:
        return text
    keep = max(0, (limit - 200) // 24)
    cut = len(text) - 2 * keep
    return (
        f"{text[:keep]}\n[... {cut:,} characters cut: the text was over the limit of "
        f"{limit:,} bytes per value ...]\n{text[len(text) - keep :]}"
    )


def check_value_limit(limit: object, what: str = "max_value_bytes") -> int:
    """``limit`` if it is an integer from 1 KiB to 1 GiB, else a ValueError naming ``what``."""
    if (
        not isinstance(limit, int)
        or isinstance(limit, bool)
        or not MIN_VALUE_BYTES_LIMIT <= limit <= MAX_VALUE_BYTES_LIMIT
    ):
        raise ValueError(
            f"{what} must be an integer number of bytes from {MIN_VALUE_BYTES_LIMIT:,} "
            f"to {MAX_VALUE_BYTES_LIMIT:,}, got {limit!r}"
        )
    return limit


def parse_value_limit(text: str, what: str) -> int:
    """A URL option's text (``4194304``) as a value limit; :class:`ValueError` naming ``what``."""
    stripped = text.strip()
    if not stripped.isascii() or not stripped.isdigit() or len(stripped) > 12:
        raise ValueError(
            f"{what} must be an integer number of bytes from {MIN_VALUE_BYTES_LIMIT:,} "
            f"to {MAX_VALUE_BYTES_LIMIT:,}, got {text[:40]!r}"
        )
    return check_value_limit(int(stripped), what)
