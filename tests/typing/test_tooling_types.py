"""Typing tests for the workflow tools (lint, explain, render, listing), for mypy --strict."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import assert_type

from triggers_core import MemoryStore, SessionState, Status, engine
from triggers_core.runtime.sessions import SessionFilter, SessionPage
from triggers_core.tools.explain import (
    InstanceExplanation,
    TaskExplanation,
    Waiting,
    WaitingGroup,
    WhatIf,
    explain,
    what_if,
)
from triggers_core.tools.lint import Finding, Severity, lint
from triggers_core.tools.listing import iter_sessions
from triggers_core.tools.render import GroupNode, group_nodes, to_dot, to_mermaid
from triggers_core.tools.requirements import Missing, Reference, missing_after, references

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = {"t_a": {"after": ["x"], "run": "r"}}


def test_tooling_types() -> None:
    findings = lint(CONFIG, task_registry=["r"])
    assert_type(findings, list[Finding])
    assert all(isinstance(f.severity, Severity) for f in findings)
    state = engine.fire(engine.update_configuration(SessionState(), CONFIG).state, "x", now=NOW)
    explained = explain(state.state, "t_a#0", now=NOW, stale_after=timedelta(hours=1))
    assert_type(explained, TaskExplanation | InstanceExplanation)
    scenario = what_if(state.state, "x", {"n": 1}, now=NOW)
    assert_type(scenario, WhatIf)
    assert_type(scenario.outcome, Mapping[str, Status])
    if isinstance(explained, InstanceExplanation):
        assert_type(explained.waiting_for, tuple[Waiting | WaitingGroup, ...])
        assert_type(explained.unless_missing, tuple[str | Missing, ...])
    task = state.state.tasks["t_a"]
    assert_type(missing_after(task, {}), tuple[str | Missing, ...])
    assert_type(references(task), list[Reference])
    assert_type(group_nodes(state.state.tasks), list[GroupNode])
    assert_type(to_mermaid(state.state.tasks), str)
    assert_type(to_dot(state.state.tasks, instances=state.state.instances.values()), str)
    page = MemoryStore().list_sessions(SessionFilter(failed=True), page_size=10)
    assert_type(page, SessionPage)
    assert_type(page.cursor, str | None)
    assert_type(iter_sessions(f"memory://typing-{id(page)}"), Iterator[str])
