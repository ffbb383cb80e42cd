"""The value walk's inline leaf checks against the plain walk they replaced.

:func:`~triggers_core.engine.values.to_json_value` checks leaves of the plain
built-in types without a call and formats path segments only for a refusal.
Here a straightforward walk (one call per leaf, a segment per entry) is the
oracle: on any value, both copy the same (leaf types included) or refuse with
the same path and problem.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator, Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from triggers_core import InvalidKwargsError
from triggers_core.engine.names import text_problem

# The leaf check and the refusal are the walk's own (unchanged): the oracle is the walk
# around them, one call per leaf and a segment per entry, as it was.
from triggers_core.engine.values import MAX_DEPTH, MAX_INT, MIN_INT, _leaf, _Refused, to_json_value


def _container(value: object) -> bool:
    return isinstance(value, Mapping | list | tuple)


def _entries(value: object) -> Iterator[tuple[object, object, str]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Refused([f"[{key!r}]"], f"keys must be strings, got {type(key).__name__}")
            problem = text_problem(key)
            if problem is not None:
                raise _Refused([f"[{key!r}]"], f"key {problem}")
            yield key if type(key) is str else str.__str__(key), item, f".{key}"
    else:
        assert isinstance(value, list | tuple)
        for index, item in enumerate(value):
            yield index, item, f"[{index}]"


def oracle(value: object, path: str) -> Any:
    """The plain walk (recursive: the values here are shallow)."""

    def walk(item: object, segments: list[str], open_ids: set[int]) -> Any:
        if not _container(item):
            try:
                return _leaf(item)
            except _Refused as refused:
                raise _Refused(segments + refused.segments, refused.problem) from None
        out: Any = {} if isinstance(item, Mapping) else []
        try:
            for key, child, segment in _entries(item):
                if _container(child):
                    if id(child) in open_ids:
                        raise _Refused(
                            [*segments, segment], "refers to itself (JSON values cannot be cyclic)"
                        )
                    if len(segments) + 1 >= MAX_DEPTH:
                        raise _Refused(
                            [*segments, segment],
                            f"nested deeper than {MAX_DEPTH} levels of mappings and lists",
                        )
                copied = walk(child, [*segments, segment], open_ids | {id(child)})
                if isinstance(out, list):
                    out.append(copied)
                else:
                    out[key] = copied
        except _Refused as refused:
            if refused.segments[: len(segments)] == segments and len(refused.segments) > len(
                segments
            ):
                raise
            raise _Refused(segments + refused.segments, refused.problem) from None
        return out

    try:
        return walk(value, [], {id(value)})
    except _Refused as refused:
        raise InvalidKwargsError(path + "".join(refused.segments), refused.problem) from None


class Color(enum.IntEnum):
    RED = 1


class Label(str):
    pass


class Ratio(float):
    pass


LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=MIN_INT - 2, max_value=MAX_INT + 2),
    st.sampled_from([MIN_INT, MAX_INT, MIN_INT - 1, MAX_INT + 1, 2**200, 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["\udcff", "é", "a\udc80b", Label("lab"), Label("\udcff"), Color.RED]),
    st.sampled_from([Ratio(0.5), Ratio(math.inf), b"bytes", object(), {1, 2}]),
)
KEYS = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["\udcff", "ké", Label("lk"), 3, None, ("t",)]),
)
VALUES = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(KEYS, children, max_size=4),
    ),
    max_leaves=25,
)


def outcome(call: Any, value: Any) -> Any:
    try:
        copied = call(value, "v")
    except InvalidKwargsError as exc:
        return ("refused", exc.path, exc.problem)
    return ("copied", copied, shape(copied))


def shape(value: Any) -> Any:
    """The types of everything in a copy (a subclass must come back as the plain type)."""
    if isinstance(value, dict):
        return ("dict", [(type(k), k, shape(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [shape(v) for v in value])
    return type(value)


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_the_walk_copies_and_refuses_as_the_plain_walk(value: Any) -> None:
    expected = outcome(oracle, value)
    got = outcome(to_json_value, value)
    if expected[0] == "copied" and got[0] == "copied":
        # NaN never equals itself: compare shapes, and the copies through repr.
        assert got[2] == expected[2]
        assert repr(got[1]) == repr(expected[1])
    else:
        assert got == expected


def test_cycles_and_depth_refused_with_their_path_as_the_plain_walk() -> None:
    loop: dict[str, Any] = {"a": [1, {}]}
    loop["a"][1]["back"] = loop
    deep: Any = [1]
    for _ in range(MAX_DEPTH):
        deep = {"k": [deep]}
    for value in (loop, deep, {"x": [{"y": 2**70}]}, [{"ok": 1}, {"bad": math.nan}]):
        assert outcome(to_json_value, value) == outcome(oracle, value)
