"""Values and names in the storage contract: stored faithfully, kept apart, or refused.

Trigger kwargs of every kind (Hypothesis, plus the limits: depth, integer
range, lone surrogates, NUL) round-trip exactly or are refused before
anything is written; callers never share mutable values with the store;
kwargs and condition groups written through the manager read back as they
were; session UIDs (:data:`AWKWARD_UIDS`) round-trip and keep sessions
apart; and names no backend can store are refused without wedging the
session. The value test needs hypothesis.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import pytest

from triggers_core.engine.scopes import Scope
from triggers_core.engine.state import Status
from triggers_core.engine.values import MAX_DEPTH, MAX_INT, MIN_INT, to_json_mapping
from triggers_core.errors import ConfigurationError, InvalidKwargsError
from triggers_core.testing._storage_support import (
    CONFIG,
    StorageCase,
    header_json,
    make_state,
    sample_instance,
    writing,
)

__all__ = ["AWKWARD_UIDS", "ValuesAndNamesContract"]


#: UIDs that a backend must store faithfully and keep apart from one another.
AWKWARD_UIDS: tuple[str, ...] = (
    "plain",
    "with spaces  and  more ",
    " leading space",
    "PLAIN",
    "unicodé ☃ 日本語 🎉",
    "slash/and\\backslash",
    "percent %s %(x)s %% %2F",
    "quotes ' \" ` ;-- DROP TABLE",
    "new\nline\r\ttab",
    "colon:at@hash#question?amp&equals=",
    "x" * 300,
)


def _nested(depth: int, leaf: Any = 0) -> dict[str, Any]:
    """``depth`` nested mappings around ``leaf`` (built without recursion)."""
    value: Any = leaf
    for _ in range(depth):
        value = {"k": value}
    result: dict[str, Any] = value
    return result


def _value_strategy() -> Any:
    """Trigger kwargs, valid or not: every kind of value the validation must decide on."""
    from hypothesis import strategies as st  # noqa: PLC0415 - hypothesis is a test dependency

    leaves = (
        st.none()
        | st.booleans()
        | st.integers(min_value=MIN_INT - 2, max_value=MAX_INT + 2)
        | st.sampled_from([MIN_INT, MAX_INT, 2**53 + 1, -(2**53) - 1])
        | st.floats()
        | st.text(max_size=6)
        | st.text(st.characters(codec="utf-8"), max_size=4)
        | st.sampled_from(["\udc80", "a\ud800b", "\x00", "\u2028", b"bytes"])
    )
    keys = st.text(max_size=4) | st.sampled_from(["\x00", "\udfff", "", 7])
    values = st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=3)
            | st.lists(children, max_size=2).map(tuple)
            | st.dictionaries(keys, children, max_size=3)
        ),
        max_leaves=10,
    )
    deep = st.builds(_nested, st.integers(MAX_DEPTH - 3, MAX_DEPTH + 1), values)
    return st.dictionaries(st.text(max_size=4), values | deep, max_size=3)


class ValuesAndNamesContract(StorageCase):
    """What goes in comes back out, or is refused first (see the module docstring)."""

    #: Hypothesis examples for the value round trip (each one fires once).
    value_examples: ClassVar[int] = 40

    def test_values_round_trip_or_are_refused_before_anything_is_written(self) -> None:
        from hypothesis import HealthCheck, example, given, settings  # noqa: PLC0415

        config = {"t_alpha": {"after": ["a", "b"], "run": "contract_task"}}

        @settings(
            max_examples=self.value_examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(value=_value_strategy())
        @example(value={"deep": _nested(MAX_DEPTH - 1), "ints": [MIN_INT, MAX_INT]})
        @example(value={"text": "a\x00b \u2603 \U0001f389", "key\x00": ["\ud7ff\ue000"]})
        @example(value={"deep": _nested(MAX_DEPTH)})
        @example(value={"big": MAX_INT + 1})
        @example(value={"bad": "\udc80"})
        def check(value: dict[str, Any]) -> None:
            uid = f"contract-values-{uuid.uuid4().hex}"
            manager = self._manager(uid)[0]
            manager.update_configuration(config)
            before = manager.storage.load_full()
            try:
                expected = to_json_mapping(value, "trigger_kwargs")
            except InvalidKwargsError:
                expected = None
            try:
                manager.fire("a", value)
            except InvalidKwargsError:
                assert expected is None, "refused a value the validation accepts"
                after = self.make_storage(uid).load_full()
                assert after.version == before.version
                assert header_json(after.state) == header_json(before.state)
                assert dict(after.state.instances) == {}
                return
            assert expected is not None, "stored a value the validation refuses"
            reopened = self.make_storage(uid)
            assert reopened.latest_kwargs == {"a": expected}
            assert reopened["t_alpha#0"].kwargs == {"a": expected}
            assert [i.name for i in manager.fire("b")] == ["t_alpha#0"]
            scheduled = self.make_storage(uid)["t_alpha#0"]
            assert scheduled.kwargs == {"a": expected, "b": {}}

        check()

    def test_callers_never_share_mutable_values_with_the_store(self, uid: str) -> None:
        storage = self.make_storage(uid)
        instance = sample_instance("t_alpha#0", marker={"deep": [1]})
        state = make_state([instance], latest_kwargs={"a": {"deep": {"list": [1]}}})
        version = storage.compare_and_swap(None, state, writing(["t_alpha#0"]))
        # Mutating what was written...
        instance.metadata["marker"]["deep"].append(2)
        instance.kwargs["a"]["marker"]["deep"].append(2)
        state.latest_kwargs["a"]["deep"]["list"].append(2)
        # ... and what was loaded changes nothing stored.
        loaded = storage.load(Scope(names=frozenset({"t_alpha#0"}))).state
        loaded.instances["t_alpha#0"].metadata["marker"]["deep"].append(3)
        loaded.latest_kwargs["a"]["deep"]["list"].append(3)
        stored = storage.load_full()
        assert stored.version == version
        assert stored.state.instances["t_alpha#0"].metadata["marker"] == {"deep": [1]}
        assert stored.state.instances["t_alpha#0"].kwargs["a"]["marker"] == {"deep": [1]}
        assert stored.state.latest_kwargs == {"a": {"deep": {"list": [1]}}}

    def test_manager_round_trip(self, uid: str) -> None:
        manager, runner = self._manager(uid)
        manager.update_configuration(CONFIG)
        manager.fire("a", {"n": 1})
        manager.fire("b", {"n": 2})
        assert runner.dispatched == ["t_alpha#0", "t_beta#0"]
        reopened = self.make_storage(uid)
        assert reopened["t_beta#0"].kwargs == {"a": {"n": 1}, "b": {"n": 2}}
        assert reopened.latest_kwargs == {"a": {"n": 1}, "b": {"n": 2}}

    def test_condition_groups_round_trip(self, uid: str) -> None:
        manager, runner = self._manager(uid)
        after = [{"anyOf": ["x", {"atLeast": 2, "of": ["y", "z", "b"]}]}]
        unless = [{"anyOf": ["c", "w"]}]
        manager.update_configuration(
            {"t_gamma": {"after": after, "unless": unless, "run": "contract_task"}}
        )
        assert manager.fire("b", {"n": 1}) == []  # one member of two is not enough
        reopened = self.make_storage(uid)
        assert reopened.tasks["t_gamma"].to_json() == {
            "after": after,
            "unless": unless,
            "run": "contract_task",
        }
        assert reopened["t_gamma#0"].status is Status.UNSTARTED
        assert [i.name for i in manager.fire("z", {"n": 2})] == ["t_gamma#0"]
        assert self.make_storage(uid)["t_gamma#0"].kwargs == {"b": {"n": 1}, "z": {"n": 2}}
        assert runner.dispatched == ["t_gamma#0"]

    def test_names_no_backend_can_store_are_refused_and_nothing_is_wedged(self, uid: str) -> None:
        for bad in ("u\x00", "\udc80"):
            with pytest.raises(ValueError, match="session uid"):
                self.make_storage(f"{uid}{bad}")
        manager = self._manager(uid)[0]
        for name in ("t_\x00", "t_\udc80"):
            with pytest.raises(ConfigurationError):
                manager.update_configuration({name: {"after": ["a"], "run": "contract_task"}})
        with pytest.raises(ConfigurationError):
            manager.update_configuration(
                {"t_alpha": {"after": ["a\udc80"], "run": "contract_task"}}
            )
        assert manager.storage.load().version is None
        manager.update_configuration(CONFIG)
        for trigger in ("a\x00", "\udc80"):
            with pytest.raises(InvalidKwargsError, match="trigger_name"):
                manager.fire(trigger)
        assert manager.storage.load().version == 1
        assert [i.name for i in manager.fire("a")] == ["t_alpha#0"]
        assert self.make_storage(uid)["t_alpha#0"].status is Status.SCHEDULED

    def test_sessions_are_isolated_by_uid(self, uid: str) -> None:
        uids = [f"{uid}-{suffix}" for suffix in ("a", "A", "a ", "a\n", "a/b", "a%")]
        versions = {}
        for index, each in enumerate(uids):
            state = make_state([sample_instance("t_alpha#0", marker=index)])
            versions[each] = self.make_storage(each).compare_and_swap(
                None, state, writing(["t_alpha#0"])
            )
        for index, each in enumerate(uids):
            state = make_state([sample_instance("t_alpha#0", marker=index)])
            self.assert_stored(self.make_storage(each), state, versions[each])

    @pytest.mark.parametrize("awkward", AWKWARD_UIDS, ids=range(len(AWKWARD_UIDS)))
    def test_awkward_uid_round_trips(self, uid: str, awkward: str) -> None:
        session = f"{awkward}{uid}" if awkward[-1] != " " else f"{uid}{awkward}"
        storage = self.make_storage(session)
        assert storage.uid == session
        state = make_state([sample_instance("t_alpha#0", marker=session)])
        version = storage.compare_and_swap(None, state, writing(["t_alpha#0"]))
        reopened = self.make_storage(session)
        self.assert_stored(reopened, state, version)
        assert reopened["t_alpha#0"].metadata["marker"] == session
