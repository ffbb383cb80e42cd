"""Typing tests: checked by ``mypy --strict`` (nox -s typecheck) and run by pytest.

They pin the public API's types so a refactor that loosens them fails CI.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, assert_type

from triggers_core import (
    FireResult,
    MemoryStorage,
    SessionState,
    Status,
    TaskConfig,
    TaskInstance,
    Transition,
    TriggerManager,
    engine,
    parse_configuration,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_engine_types() -> None:
    config = parse_configuration({"t_a": {"after": ["x"], "run": "r"}})
    assert_type(config, dict[str, TaskConfig])
    state = engine.update_configuration(SessionState(), config).state
    assert_type(state, SessionState)
    transition = engine.fire(state, "x", {"k": 1}, now=NOW)
    assert_type(transition, Transition)
    assert_type(transition.scheduled, tuple[str, ...])
    instance = transition.state.instances["t_a#0"]
    assert_type(instance, TaskInstance)
    assert_type(instance.status, Status)
    assert_type(instance.kwargs, Mapping[str, Mapping[str, Any]])
    assert instance.status is Status.SCHEDULED


def test_manager_types() -> None:
    manager = TriggerManager(MemoryStorage("typing-session"))
    assert_type(manager.fire("nobody-listens"), list[TaskInstance])
    assert_type(manager.storage.get_unresolved_instances(), list[TaskInstance])
    assert_type(manager.storage.tasks, Mapping[str, TaskConfig])


def test_fire_result_types() -> None:
    manager = TriggerManager(MemoryStorage("typing-fire-result"))
    result = manager.fire_result("x", {"a": 1}, idempotency_key="k", strict=False)
    assert_type(result, FireResult)
    assert_type(result.scheduled, list[TaskInstance])
    assert_type(result.duplicate, bool)
    assert_type(manager.fire("x", strict=False), list[TaskInstance])


def test_transactional_fire_types(tmp_path: Path) -> None:
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    from triggers_backends.sqlalchemy import SQLAlchemyStorage, SQLTransaction, transaction

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'typing.db'}")
    manager = TriggerManager(SQLAlchemyStorage("typing-tx", engine, create_schema=True))
    with Session(engine) as session:
        assert_type(manager.fire("x", session=session), list[TaskInstance])
        session.commit()
    with transaction(engine) as tx:
        assert_type(tx, SQLTransaction)
        assert_type(manager.fire_result("x", session=tx), FireResult)
    engine.dispose()
