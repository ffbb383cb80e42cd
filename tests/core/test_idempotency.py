"""Idempotency keys in the pure core: keys, the engine's duplicate rule, the cascade guard,
the scopes that load records, and a Hypothesis property over interleaved fires."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triggers_core import InvalidKwargsError, SessionState, Status, TriggerManager
from triggers_core import engine as pure
from triggers_core.engine.effects import DuplicateFire, TriggerFired
from triggers_core.engine.idempotency import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    FireKey,
    cascade_key,
    check_idempotency_key,
    fire_key,
)
from triggers_core.engine.scopes import Scope, fire_scope, instance_scope, narrowed
from triggers_core.runtime.memory import MemoryStorage, MemoryStore
from triggers_core.testing.storage_contract import RecordingRunner

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
CONFIG = {
    "t_every": {"after": ["tick"], "andEvery": "tick", "run": "contract_task"},
    "t_pair": {"after": ["tick", "tock"], "run": "contract_task"},
    "t_stop": {"after": ["go"], "unless": ["tick"], "run": "contract_task"},
}


def configured() -> SessionState:
    return pure.update_configuration(SessionState(), CONFIG).state


# -- keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "must not be empty"),
        ("a\x00b", "NUL"),
        ("a\udc80", "lone surrogate"),
        (7, "expected a non-empty string, got int"),
        (b"bytes", "got bytes"),
        ("k" * (MAX_IDEMPOTENCY_KEY_LENGTH + 1), "257 characters long, more than the 256"),
    ],
)
def test_bad_keys_are_refused_naming_idempotency_key(key: Any, problem: str) -> None:
    with pytest.raises(InvalidKwargsError) as caught:
        check_idempotency_key(key)
    assert caught.value.path == "idempotency_key"
    assert problem in str(caught.value)
    if isinstance(key, str) and len(key) > 20:
        assert key not in str(caught.value)  # a long key is not quoted whole


def test_keys_up_to_the_limit_of_any_unicode_are_fine() -> None:
    for key in ("k" * MAX_IDEMPOTENCY_KEY_LENGTH, "☃ webhook 7/ü", " spaces ", "#"):
        assert check_idempotency_key(key) == key


def test_a_fire_key_is_a_digest_of_trigger_and_key_and_hides_the_key() -> None:
    key = fire_key("paid", "stripe-evt-42")
    assert key == FireKey("paid", hashlib.sha256(b"paid\x00stripe-evt-42").hexdigest())
    assert "stripe-evt-42" not in repr(key)
    assert "paid" in repr(key)
    assert fire_key("paid", "k") != fire_key("other", "k")  # per trigger
    assert cascade_key("t_a", "t_a#0") != fire_key("t_a", "t_a#0")
    assert cascade_key("t_a", "t_a#0") != cascade_key("t_a", "t_a#1")


def test_bad_keys_are_refused_before_any_io() -> None:
    class Untouchable(MemoryStorage):
        def load(self, scope: Any = None) -> Any:
            raise AssertionError("loaded")

        def check_fire_keys(self) -> None:
            raise AssertionError("asked the storage")

    manager = TriggerManager(Untouchable("s", MemoryStore()))
    for bad in ("", "x" * 300, "\x00"):
        with pytest.raises(InvalidKwargsError, match="idempotency_key"):
            manager.fire("tick", idempotency_key=bad)
    with pytest.raises(InvalidKwargsError, match="trigger_name"):
        manager.fire("tick\x00", idempotency_key="fine")
    with pytest.raises(InvalidKwargsError, match="trigger_kwargs"):
        manager.fire("tick", {"x": float("nan")}, idempotency_key="fine")


# -- the engine -----------------------------------------------------------------------


def test_a_keyed_fire_creates_its_record_with_what_it_scheduled() -> None:
    transition = pure.fire(configured(), "tick", {"n": 1}, now=NOW, idempotency_key="k")
    key = fire_key("tick", "k")
    assert transition.scheduled == ("t_every#0",)
    assert dict(transition.fire_records) == {key: ("t_every#0",)}
    assert dict(transition.changes.fire_records) == {key: ("t_every#0",)}
    assert dict(transition.state.fire_records) == {key: ("t_every#0",)}
    assert transition.commit
    assert transition.duplicate is None
    plain = pure.fire(configured(), "tick", {"n": 1}, now=NOW)
    assert dict(plain.fire_records) == {}
    assert dict(plain.changes.fire_records) == {}


def test_a_duplicate_changes_nothing_and_says_what_the_first_scheduled() -> None:
    first = pure.fire(configured(), "tick", {"n": 1}, now=NOW, idempotency_key="k")
    state = first.state
    again = pure.fire(state, "tick", {"n": 2}, now=NOW, idempotency_key="k")
    assert again.state is state
    assert again.effects == (DuplicateFire("tick", ("t_every#0",)),)
    assert again.duplicate == DuplicateFire("tick", ("t_every#0",))
    assert not again.commit
    assert (again.changed, again.created) == (frozenset(), frozenset())
    assert dict(again.fire_records) == {}
    assert again.scheduled == ()
    # The same key on another trigger, and another key, are other fires.
    other = pure.fire(state, "tock", now=NOW, idempotency_key="k")
    assert other.commit
    assert other.scheduled == ("t_pair#0",)
    assert pure.fire(state, "tick", now=NOW, idempotency_key="k2").scheduled == ("t_every#1",)


def test_a_duplicate_still_checks_its_inputs() -> None:
    state = pure.fire(configured(), "tick", now=NOW, idempotency_key="k").state
    with pytest.raises(ValueError, match="timezone-aware"):
        pure.fire(state, "tick", now=datetime(2024, 1, 1), idempotency_key="k")
    with pytest.raises(InvalidKwargsError, match="idempotency_key"):
        pure.fire(state, "tick", now=NOW, idempotency_key="")


def test_a_guarded_finish_records_its_cascade_and_the_second_does_not_cascade() -> None:
    state = pure.fire(configured(), "tick", now=NOW).state
    state = pure.mark_running(state, "t_every#0", now=NOW).state
    done = pure.finish(state, "t_every#0", {"r": 1}, now=NOW, guard_cascade=True)
    key = cascade_key("t_every", "t_every#0")
    assert dict(done.fire_records) == {key: ()}  # the cascade scheduled nothing
    assert any(isinstance(e, TriggerFired) for e in done.effects)
    # Forced back to running, it finishes again: finished, but no second cascade.
    forced = pure.update_status(done.state, "t_every#0", Status.RUNNING, now=NOW).state
    again = pure.finish(forced, "t_every#0", {"r": 2}, now=NOW, guard_cascade=True)
    assert again.state.instances["t_every#0"].status is Status.FINISHED
    assert again.state.instances["t_every#0"].metadata["result"] == {"r": 2}
    assert again.effects == (DuplicateFire("t_every", (), "t_every#0"),)
    assert again.commit
    assert dict(again.fire_records) == {}
    assert again.state.latest_kwargs == done.state.latest_kwargs  # t_every did not fire
    # Unguarded (a storage that keeps no records), it cascades as it always did.
    unguarded = pure.finish(forced, "t_every#0", {"r": 2}, now=NOW)
    assert unguarded.state.latest_kwargs["t_every"] == {"r": 2}


# -- scopes ---------------------------------------------------------------------------


def test_scopes_name_the_records_an_operation_needs() -> None:
    state = pure.fire(configured(), "tick", now=NOW, idempotency_key="k").state
    key = fire_key("tick", "k")
    header = attrs.evolve(state, instances={}, fire_records={})
    assert fire_scope("tick")(header).fire_keys == frozenset()
    keyed = fire_scope("tick", key)(header)
    assert keyed.fire_keys == {key}
    assert (keyed.names, keyed.unstarted_of) == (
        fire_scope("tick")(header).names,
        fire_scope("tick")(header).unstarted_of,
    )
    guard = cascade_key("t_every", "t_every#0")
    assert instance_scope("t_every#0", cascade=True, guard=guard)(header).fire_keys == {guard}
    assert instance_scope("t_every#0", cascade=False)(header).fire_keys == frozenset()
    assert dict(narrowed(state, fire_scope("tick", key)).fire_records) == {key: ("t_every#0",)}
    assert dict(narrowed(state, fire_scope("tick")).fire_records) == {}
    assert (Scope(fire_keys={key}) | Scope(names={"x"})).fire_keys == {key}


# -- the property ---------------------------------------------------------------------

Step = tuple[str, int, str | None]
steps = st.lists(
    st.tuples(
        st.sampled_from(["tick", "tock", "go"]),
        st.integers(0, 3),
        st.sampled_from([None, "a", "b", "c"]),
    ),
    max_size=25,
)


def _fixed() -> datetime:
    return NOW


def _run(fires: list[Step], *, keyed: bool) -> tuple[dict[str, Any], list[list[str]]]:
    manager = TriggerManager(
        MemoryStorage("prop", MemoryStore()),
        runners={"rec": RecordingRunner()},
        default_runner="rec",
        clock=_fixed,
    )
    manager.update_configuration(CONFIG)
    returned = []
    for trigger, n, key in fires:
        fired = manager.fire(trigger, {"n": n}, idempotency_key=key if keyed else None)
        returned.append([i.name for i in fired])
    state = manager.storage.load_full().state
    instances = {
        name: (i.status, i.kwargs, i.unless_fired, i.metadata)
        for name, i in state.instances.items()
    }
    return {"instances": instances, "latest": state.latest_kwargs}, returned


@settings(max_examples=80, deadline=None)
@given(steps)
def test_each_key_applies_exactly_one_fire_however_often_and_interleaved(
    fires: list[Step],
) -> None:
    """Property: firing with idempotency keys, each (trigger, key) repeated any number of
    times among other keyed and unkeyed fires, ends in exactly the session that the same
    sequence without its repeats (each keyed fire's first occurrence kept) ends in; every
    repeat returns the instances the first occurrence scheduled."""
    seen: dict[tuple[str, str], int] = {}
    firsts: list[Step] = []
    first_of: list[int | None] = []
    for index, (trigger, n, key) in enumerate(fires):
        if key is not None and (trigger, key) in seen:
            first_of.append(seen[(trigger, key)])
            continue
        if key is not None:
            seen[(trigger, key)] = index
        first_of.append(None)
        firsts.append((trigger, n, key))
    keyed_outcome, returned = _run(fires, keyed=True)
    expected_outcome, _ = _run(firsts, keyed=False)
    assert keyed_outcome == expected_outcome
    for index, first in enumerate(first_of):
        if first is not None:  # a repeat: the first occurrence's instances
            assert returned[index] == returned[first]


@settings(max_examples=40, deadline=None)
@given(steps)
def test_the_engine_on_narrowed_states_agrees_with_the_full_state(fires: list[Step]) -> None:
    """Property: a keyed fire computed on the working set its scope names (header, the
    instances a fire needs, its key's record) gives the same transition as on the whole
    session, records included."""
    state = configured()
    for trigger, n, key in fires:
        scope: Callable[[SessionState], Scope] = fire_scope(
            trigger, None if key is None else fire_key(trigger, key)
        )
        full = pure.fire(state, trigger, {"n": n}, now=NOW, idempotency_key=key)
        narrow = pure.fire(narrowed(state, scope), trigger, {"n": n}, now=NOW, idempotency_key=key)
        assert narrow.effects == full.effects
        assert narrow.commit == full.commit
        assert dict(narrow.fire_records) == dict(full.fire_records)
        for name in narrow.changed:
            assert narrow.state.instances[name] == full.state.instances[name]
        state = full.state
