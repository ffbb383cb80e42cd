"""The one validation every stored value goes through: limits, key paths, no recursion.

SPEC section 2: values are JSON-compatible mappings with finite numbers,
bounded integers and bounded nesting depth; anything else is refused with an
error naming the key path before anything is stored.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triggers_core import InvalidKwargsError, Status, TriggerManager
from triggers_core.engine.names import name_problem
from triggers_core.engine.values import (
    MAX_DEPTH,
    MAX_INT,
    MIN_INT,
    deep_merge,
    to_json_mapping,
    to_json_value,
)
from triggers_core.runtime.storage import check_uid
from triggers_core.testing.assertions import assert_instance_finished
from triggers_core.testing.sample_tasks import PassThruTask

PASS = PassThruTask.name


def nested(depth: int, leaf: Any = 1) -> dict[str, Any]:
    """``{"k": {"k": ... leaf}}`` with ``depth`` mappings (built without recursion)."""
    value: Any = leaf
    for _ in range(depth):
        value = {"k": value}
    return value  # type: ignore[no-any-return]


def refused(value: Any) -> tuple[str, str]:
    with pytest.raises(InvalidKwargsError) as caught:
        to_json_mapping(value, "kw")
    return caught.value.path, caught.value.problem


def at_depth(frames: int, call: Callable[[], Any]) -> Any:
    """Run ``call`` below ``frames`` extra stack frames, as a deep caller would."""
    if frames == 0:
        return call()
    return at_depth(frames - 1, call)


# -- the limits ------------------------------------------------------------------------


def test_the_documented_limits() -> None:
    assert MAX_DEPTH == 64
    assert (MIN_INT, MAX_INT) == (-(2**63), 2**63 - 1)


def test_nesting_up_to_the_limit_is_accepted_and_one_more_is_refused() -> None:
    assert to_json_mapping(nested(MAX_DEPTH), "kw") == nested(MAX_DEPTH)
    path, problem = refused(nested(MAX_DEPTH + 1))
    assert path == "kw" + ".k" * MAX_DEPTH
    assert problem == "nested deeper than 64 levels of mappings and lists"
    # Lists count like mappings.
    deep_list: Any = 0
    for _ in range(MAX_DEPTH):
        deep_list = [deep_list]
    assert refused({"l": deep_list})[0] == "kw.l" + "[0]" * (MAX_DEPTH - 1)


def test_very_deep_values_are_refused_without_recursion() -> None:
    depth = sys.getrecursionlimit() * 5
    path, problem = refused(nested(depth))
    assert problem.startswith("nested deeper than 64")
    assert path.count(".k") == MAX_DEPTH


def test_reference_cycles_are_refused_with_their_path() -> None:
    loop: dict[str, Any] = {"a": [1]}
    loop["a"].append(loop)
    assert refused({"top": loop}) == (
        "kw.top.a[1]",
        "refers to itself (JSON values cannot be cyclic)",
    )
    selfish: dict[str, Any] = {}
    selfish["me"] = selfish
    assert refused(selfish) == ("kw.me", "refers to itself (JSON values cannot be cyclic)")


def test_a_value_shared_twice_is_no_cycle() -> None:
    shared = {"x": [1, 2]}
    copied = to_json_mapping({"a": shared, "b": [shared, shared]}, "kw")
    assert copied == {"a": {"x": [1, 2]}, "b": [{"x": [1, 2]}, {"x": [1, 2]}]}
    assert copied["a"] is not shared


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (2**63, "an integer of 64 bits is out of range"),
        (-(2**63) - 1, "an integer of 64 bits is out of range"),
        (10**5000, "an integer of 16610 bits is out of range"),
        (float("nan"), "nan is not representable in JSON"),
        (float("-inf"), "-inf is not representable in JSON"),
        ("a\udc80", "contains a lone surrogate ('\\udc80' at index 1)"),
        (b"bytes", "bytes is not JSON-serializable"),
        ({1, 2}, "set is not JSON-serializable"),
    ],
    ids=["2**63", "-2**63-1", "10**5000", "nan", "-inf", "surrogate", "bytes", "set"],
)
def test_each_kind_of_value_refused_names_its_path(value: Any, problem: str) -> None:
    path, found = refused({"a": {"b": [0, value]}})
    assert path == "kw.a.b[1]"
    assert found.startswith(problem)


def test_keys_are_checked_too() -> None:
    assert refused({"a": {3: 1}}) == ("kw.a[3]", "keys must be strings, got int")
    path, problem = refused({"ok": 1, "\udc80": 1})
    assert path == "kw['\\udc80']"
    assert problem.startswith("key contains a lone surrogate")


def test_integers_at_the_bounds_and_nul_in_strings_are_accepted() -> None:
    value = {"lo": MIN_INT, "hi": MAX_INT, "nul": "a\x00b", "key\x00": True, "u": "☃🎉"}
    assert to_json_mapping(value, "kw") == value


def test_subclasses_are_copied_as_plain_json_types() -> None:
    import enum

    class Colour(enum.IntEnum):
        RED = 1

    class Name(str, enum.Enum):  # noqa: UP042 - str() of this mixin is "Name.ADA"
        ADA = "ada"

    copied = to_json_value({"c": Colour.RED, "n": Name.ADA, "t": (1.5,)}, "kw")
    assert copied == {"c": 1, "n": "ada", "t": [1.5]}
    assert [type(copied["c"]), type(copied["n"])] == [int, str]


# -- an independent model of the rules --------------------------------------------------


def _allowed(value: Any, depth: int = 0, seen: tuple[int, ...] = ()) -> bool:
    """The documented rules, written plainly (recursively) as an oracle."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return MIN_INT <= value <= MAX_INT
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict | list | tuple):
        if depth + 1 > MAX_DEPTH or id(value) in seen:
            return False
        items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
        for key, item in items:
            if isinstance(value, dict) and not (isinstance(key, str) and _allowed(key)):
                return False
            if not _allowed(item, depth + 1, (*seen, id(value))):
                return False
        return True
    return False


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats()
    | st.text(max_size=4)
    | st.sampled_from(["\udc80", "a\ud800", "\x00", b"x", 10**4000])
)
keys = st.text(max_size=3) | st.sampled_from(["\udfff", 1, None])
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=3)
        | st.lists(children, max_size=2).map(tuple)
        | st.dictionaries(keys, children, max_size=3)
    ),
    max_leaves=12,
)
deep_values = st.builds(nested, st.integers(MAX_DEPTH - 3, MAX_DEPTH + 3), values)


@given(st.dictionaries(st.text(max_size=3), values | deep_values, max_size=3))
def test_validation_accepts_exactly_what_the_rules_allow(value: dict[str, Any]) -> None:
    if _allowed(value):
        assert to_json_mapping(value, "kw") == _plain(value)
    else:
        with pytest.raises(InvalidKwargsError):
            to_json_mapping(value, "kw")


# -- merge and names -----------------------------------------------------------------------


def test_deep_merge_needs_no_recursion() -> None:
    depth = sys.getrecursionlimit() * 3
    merged = deep_merge(nested(depth, {"a": 1}), nested(depth, {"b": 2}))
    for _ in range(depth):
        merged = merged["k"]
    assert merged == {"a": 1, "b": 2}


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "must not be empty"),
        (3, "expected a non-empty string, got int"),
        ("a\x00", "must not contain NUL ('\\x00' at index 1)"),
        (
            "\udc80",
            "contains a lone surrogate ('\\udc80' at index 0); strings must be valid Unicode",
        ),
        ("ok ☃ #1/%s", None),
    ],
)
def test_name_rules(name: Any, problem: str | None) -> None:
    assert name_problem(name) == problem


@pytest.mark.parametrize("uid", ["u\x00", "\udc80", ""])
def test_uids_no_backend_can_store_are_refused(uid: str) -> None:
    with pytest.raises(ValueError, match="session uid") as caught:
        check_uid(uid)
    assert repr(uid) in str(caught.value)
    with pytest.raises(ValueError, match="session uid"):
        TriggerManager("memory://", uid=uid)


# -- through the manager (memory and SQLite) ----------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "path", "problem"),
    [
        (nested(5000), "trigger_kwargs" + ".k" * 64, "nested deeper than 64"),
        ({"n": 10**5000}, "trigger_kwargs.n", "an integer of 16610 bits is out of range"),
        ({"s": "\udc80"}, "trigger_kwargs.s", "contains a lone surrogate"),
    ],
    ids=["deep", "huge-int", "surrogate"],
)
def test_fire_refuses_values_beyond_the_limits_before_writing(
    manager: TriggerManager, kwargs: Any, path: str, problem: str
) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "run": PASS}})
    before = manager.storage.load().version
    with pytest.raises(InvalidKwargsError) as caught:
        manager.fire("x", kwargs)
    assert caught.value.path == path
    assert caught.value.problem.startswith(problem)
    assert manager.storage.load().version == before
    assert manager.storage.latest_kwargs == {}


def test_fire_refuses_a_self_referencing_mapping(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "run": PASS}})
    loop: dict[str, Any] = {}
    loop["again"] = loop
    with pytest.raises(InvalidKwargsError, match=r"trigger_kwargs\.again: refers to itself"):
        manager.fire("x", loop)
    assert manager.storage.load().version == 1


@pytest.mark.parametrize("trigger", ["x\x00", "\udc80"])
def test_fire_refuses_trigger_names_no_backend_can_store(
    manager: TriggerManager, trigger: str
) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "run": PASS}})
    with pytest.raises(InvalidKwargsError) as caught:
        manager.fire(trigger)
    assert caught.value.path == "trigger_name"
    assert repr(trigger) in caught.value.problem
    assert manager.storage.load().version == 1
    manager.fire("x")  # the session is not wedged
    assert_instance_finished(manager, "t_a#0", {"kwargs": {"x": {}}})


def test_values_at_the_depth_limit_load_from_a_deep_call_stack(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x", "y"], "run": PASS}})
    # PassThruTask returns {"kwargs": {"x": ...}}: two more levels, exactly at the limit.
    manager.fire("x", nested(MAX_DEPTH - 2))
    # A worker or web request may already be a few hundred frames deep when it loads.
    instance = at_depth(600, lambda: manager.storage["t_a#0"])
    assert instance.status is Status.UNSTARTED
    assert instance.kwargs["x"] == nested(MAX_DEPTH - 2)
    manager.fire("y")
    at_depth(600, lambda: assert_instance_finished(manager, "t_a#0"))
