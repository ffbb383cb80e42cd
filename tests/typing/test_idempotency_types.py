"""Typing tests for idempotent fires (keys, records, duplicates): checked by mypy --strict."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import assert_type

from triggers_core import MemoryStorage, SessionState, TaskInstance, TriggerManager, engine
from triggers_core.engine.effects import DuplicateFire
from triggers_core.engine.idempotency import FireKey, cascade_key, check_idempotency_key, fire_key
from triggers_core.engine.scopes import Scope, Selector, fire_scope, instance_scope

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_idempotency_types() -> None:
    key = fire_key("x", "delivery-1")
    assert_type(key, FireKey)
    assert_type(key.digest, str)
    assert_type(cascade_key("t_a", "t_a#0"), FireKey)
    assert_type(check_idempotency_key("delivery-1"), str)
    state = engine.update_configuration(SessionState(), {"t_a": {"after": ["x"], "run": "r"}})
    transition = engine.fire(state.state, "x", {}, now=NOW, idempotency_key="delivery-1")
    assert_type(transition.fire_records, Mapping[FireKey, tuple[str, ...]])
    assert_type(transition.state.fire_records, Mapping[FireKey, tuple[str, ...]])
    assert_type(transition.changes.fire_records, Mapping[FireKey, tuple[str, ...]])
    assert_type(transition.commit, bool)
    again = engine.fire(transition.state, "x", {}, now=NOW, idempotency_key="delivery-1")
    assert_type(again.duplicate, DuplicateFire | None)
    selector = fire_scope("x", key)
    assert_type(selector, Selector)
    assert_type(selector(state.state).fire_keys, frozenset[FireKey])
    assert_type(instance_scope("t_a#0", cascade=True, guard=key), Selector)
    assert_type(Scope(fire_keys=frozenset({key})), Scope)
    manager = TriggerManager(MemoryStorage("typing-idempotency"))
    assert_type(manager.fire("x", idempotency_key="delivery-1"), list[TaskInstance])
    assert again.duplicate is not None
    assert again.duplicate.scheduled == ("t_a#0",)
