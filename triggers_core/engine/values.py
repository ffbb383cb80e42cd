"""JSON values: the one walk that checks and copies every value the library stores.

Every value the library stores (trigger kwargs, ``withParams``, results,
metadata, extras) goes through :func:`to_json_value`, one iterative walk that
copies the value and refuses, with the key path, anything that every backend
could not store and read back unchanged. The limits (SPEC section 2):

* mappings with string keys, lists (tuples become lists), strings, booleans,
  ``None``, integers from :data:`MIN_INT` to :data:`MAX_INT`, finite floats;
* at most :data:`MAX_DEPTH` nested containers, the outermost one included;
* no container inside itself (a reference cycle);
* strings (keys included) are valid Unicode: no lone surrogates.

Nothing here recurses, so neither a deep value nor a deep caller stack can
raise :class:`RecursionError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from triggers_core.engine.names import text_problem
from triggers_core.errors import InvalidKwargsError

__all__ = [
    "MAX_DEPTH",
    "MAX_INT",
    "MIN_INT",
    "JSONMapping",
    "copy_json",
    "copy_json_sorted",
    "deep_merge",
    "to_json_mapping",
    "to_json_value",
]

JSONMapping = Mapping[str, Any]

#: The deepest nesting of mappings and lists a value may have (the outermost counts).
MAX_DEPTH = 64
#: The smallest and largest integers a value may hold (a signed 64-bit integer).
MIN_INT = -(2**63)
MAX_INT = 2**63 - 1


class _Refused(Exception):
    """Internal: a value was refused; ``segments`` lead from the top value to it."""

    def __init__(self, segments: list[str], problem: str) -> None:
        super().__init__(problem)
        self.segments = segments
        self.problem = problem


def _leaf(value: object) -> object:
    """A JSON scalar, copied as its plain type; raises ``_Refused([], problem)``."""
    kind = type(value)
    if value is None or kind is bool:
        return value
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            raise _Refused([], problem)
        return value if kind is str else str.__str__(value)
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            # never format the number itself: str() refuses over 4300 digits
            raise _Refused(
                [],
                f"an integer of {value.bit_length()} bits is out of range "
                f"(integers must lie between -2**63 and 2**63 - 1)",
            )
        return value if kind is int else int.__int__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused([], f"{value!r} is not representable in JSON")
        return value if kind is float else float.__float__(value)
    raise _Refused([], f"{kind.__name__} is not JSON-serializable")


def _is_container(value: object) -> bool:
    kind = type(value)
    if kind is dict or kind is list or kind is tuple:
        return True
    return isinstance(value, Mapping | list | tuple)


def _entries(value: object) -> Iterator[tuple[Any, Any]]:
    """``(key, item)`` for a mapping (keys checked), or ``(index, item)`` for a list/tuple."""
    if type(value) is dict or isinstance(value, Mapping):
        for key, item in value.items():
            if type(key) is str and key.isascii():  # the common case, checked in full
                yield key, item
                continue
            if not isinstance(key, str):
                raise _Refused([f"[{key!r}]"], f"keys must be strings, got {type(key).__name__}")
            problem = text_problem(key)
            if problem is not None:
                raise _Refused([f"[{key!r}]"], f"key {problem}")
            yield key if type(key) is str else str.__str__(key), item
    else:
        assert isinstance(value, list | tuple)
        yield from enumerate(value)


def _segment(key: object) -> str:
    """The path segment of an entry: ``.key`` in a mapping, ``[index]`` in a list."""
    return f"[{key}]" if type(key) is int else f".{key}"


def _copy(value: object) -> Any:
    """The walk behind :func:`to_json_value`, iterative with an explicit stack.

    Leaves of the plain built-in types are checked inline (what :func:`_leaf` checks,
    without a call); anything else goes through :func:`_leaf`. Path segments are
    formatted only for a refusal.
    """
    if not _is_container(value):
        return _leaf(value)
    root: Any = {} if isinstance(value, Mapping) else []
    # One frame per open container: (entries, copy, key that reached it, id).
    stack: list[tuple[Iterator[tuple[Any, Any]], Any, Any, int]] = [
        (_entries(value), root, None, id(value))
    ]
    open_ids = {id(value)}
    while stack:
        entries, out, _, ident = stack[-1]
        key: Any = None
        try:
            for key, item in entries:
                kind = type(item)
                if kind is str:
                    copied = item if item.isascii() else _leaf(item)
                elif kind is int:
                    copied = item if MIN_INT <= item <= MAX_INT else _leaf(item)
                elif item is None or kind is bool:
                    copied = item
                elif kind is float:
                    copied = item if math.isfinite(item) else _leaf(item)
                elif not _is_container(item):
                    copied = _leaf(item)
                else:
                    if id(item) in open_ids:
                        raise _Refused(
                            [_segment(key)], "refers to itself (JSON values cannot be cyclic)"
                        )
                    if len(stack) >= MAX_DEPTH:
                        raise _Refused(
                            [_segment(key)],
                            f"nested deeper than {MAX_DEPTH} levels of mappings and lists",
                        )
                    child: Any = {} if kind is dict or isinstance(item, Mapping) else []
                    if type(out) is list:
                        out.append(child)
                    else:
                        out[key] = child
                    stack.append((_entries(item), child, key, id(item)))
                    open_ids.add(id(item))
                    break
                if type(out) is list:
                    out.append(copied)
                else:
                    out[key] = copied
            else:
                stack.pop()
                open_ids.discard(ident)
        except _Refused as refused:
            # A leaf refusal has no segment yet; a key or container refusal has its own.
            leaf_segment = [_segment(key)] if not refused.segments else []
            refused.segments = [_segment(f[2]) for f in stack[1:]] + leaf_segment + refused.segments
            raise
    return root


def to_json_value(value: object, path: str) -> Any:
    """Return a JSON-compatible copy of ``value`` (tuples become lists).

    Raises :class:`InvalidKwargsError` naming the key path of the first value
    that JSON (or a backend) cannot represent faithfully; see the module
    docstring for the limits.
    """
    try:
        return _copy(value)
    except _Refused as refused:
        raise InvalidKwargsError(path + "".join(refused.segments), refused.problem) from None


def to_json_mapping(value: object, path: str) -> dict[str, Any]:
    """Like :func:`to_json_value` but the top level must be a mapping (None -> {})."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidKwargsError(path, f"expected a mapping, got {type(value).__name__}")
    result: dict[str, Any] = to_json_value(value, path)
    return result


def deep_merge(base: JSONMapping, override: JSONMapping) -> dict[str, Any]:
    """Merge ``override`` over ``base``: nested mappings merge, ``override`` wins at leaves.

    Iterative, so the depth of the values never matters.
    """
    merged: dict[str, Any] = dict(base)
    pending: list[tuple[dict[str, Any], JSONMapping]] = [(merged, override)]
    while pending:
        target, source = pending.pop()
        for key, value in source.items():
            current = target.get(key)
            if isinstance(current, Mapping) and isinstance(value, Mapping):
                target[key] = nested = dict(current)
                pending.append((nested, value))
            else:
                target[key] = value
    return merged


def copy_json(value: Any) -> Any:
    """A copy of a JSON-compatible value: mappings and lists are copied, scalars shared.

    Much cheaper than a JSON round trip or :func:`copy.deepcopy`; used where a
    store must not share mutable values with its callers.
    """
    kind = type(value)
    if kind is dict:
        out = value.copy()  # C speed; then replace the nested containers (rarely many)
        for key, item in value.items():
            if type(item) not in _SCALARS:
                out[key] = copy_json(item)
        return out
    if kind is list:
        return [v if type(v) in _SCALARS else copy_json(v) for v in value]
    if kind in _SCALARS:
        return value
    if isinstance(value, Mapping):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [copy_json(v) for v in value]
    return value


def copy_json_sorted(value: Any) -> Any:
    """Like :func:`copy_json`, with mapping keys in sorted order (as JSON storages return them)."""
    kind = type(value)
    if kind is dict or (kind not in _SCALARS and isinstance(value, Mapping)):
        out = {}
        for key in sorted(value):
            item = value[key]
            out[key] = item if type(item) in _SCALARS else copy_json_sorted(item)
        return out
    if kind is list or kind is tuple:
        return [v if type(v) in _SCALARS else copy_json_sorted(v) for v in value]
    return value


_SCALARS = frozenset({str, int, float, bool, type(None)})
