"""Typing tests for the storage port (scopes, changes, task table): checked by mypy --strict."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import assert_type

from triggers_core import MemoryStorage, SessionState, Snapshot, engine
from triggers_core.engine.scopes import Changes, Scope, Selector, fire_scope, instance_scope
from triggers_core.engine.task_table import TaskTable

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_port_types() -> None:
    state = engine.update_configuration(SessionState(), {"t_a": {"after": ["x"], "run": "r"}})
    assert_type(state.state.tasks, TaskTable)
    assert_type(state.state.tasks.using("x"), tuple[str, ...])
    assert_type(state.state.tasks.renewed_by("x"), frozenset[str])
    assert_type(state.state.settled, Mapping[str, frozenset[str]])
    transition = engine.fire(state.state, "x", {}, now=NOW)
    assert_type(transition.changes, Changes)
    assert_type(transition.created, frozenset[str])
    selector = fire_scope("x")
    assert_type(selector, Selector)
    assert_type(selector(state.state), Scope)
    assert_type(instance_scope("t_a#0", cascade=True)(state.state), Scope)
    storage = MemoryStorage("typing-port")
    assert_type(
        storage.compare_and_swap(None, transition.state, transition.changes), int | str | bytes
    )
    assert_type(storage.load(selector), Snapshot)
    assert_type(storage.load(Scope(names=frozenset({"t_a#0"}))), Snapshot)
    assert transition.changes.created == {"t_a#0"}
