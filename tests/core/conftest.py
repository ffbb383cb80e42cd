"""Fixtures shared by the end-to-end behaviour suite (tests/core/test_manager_*.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from triggers_core import Storage, ThreadingTaskRunner, TriggerManager


@pytest.fixture
def runner() -> Iterator[ThreadingTaskRunner]:
    """A threading runner; teardown waits for its threads (and re-raises their errors)."""
    runner = ThreadingTaskRunner()
    yield runner
    runner.join_all()


@pytest.fixture
def manager(
    storage_factory: Callable[[str], Storage], session_uid: str, runner: ThreadingTaskRunner
) -> TriggerManager:
    """A manager on a fresh session of the parametrized storage backend."""
    return TriggerManager(storage_factory(session_uid), runners={"threading": runner})
