"""pytest plugin (``pytest11`` entry point ``triggers``): fixtures for trigger workflows.

Fixtures:

``trigger_storage``
    A fresh :class:`~triggers_core.MemoryStorage` session per test. Override
    this fixture (in a ``conftest.py`` or a test module) to run the same tests
    on another backend.
``trigger_runner``
    A :class:`~triggers_core.ThreadingTaskRunner`; teardown waits for its task
    threads and re-raises any error they hit outside a task.
``trigger_manager``
    A :class:`~triggers_core.TriggerManager` on ``trigger_storage`` whose
    default runner is ``trigger_runner``. The sample tasks of
    :mod:`triggers_core.testing.sample_tasks` are registered.

The assertions (``assert_instance_finished(trigger_manager, "t_x#0")`` and
friends, re-exported here) live in :mod:`triggers_core.testing.assertions`;
like the unittest mixin, they wait for the runner first.

pytest imports this module in every run where Triggers is installed, so it
imports only the core (which needs ``attrs`` alone): never Hypothesis, a
database driver or Celery.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import triggers_core.testing.sample_tasks  # noqa: F401 - registers the sample tasks
from triggers_core.runtime.manager import TriggerManager
from triggers_core.runtime.memory import MemoryStorage, MemoryStore
from triggers_core.runtime.runners import ThreadingTaskRunner
from triggers_core.runtime.storage import Storage
from triggers_core.testing.assertions import (
    assert_instance_abandoned,
    assert_instance_expired,
    assert_instance_failed,
    assert_instance_finished,
    assert_instance_missing,
    assert_instance_replayed,
    assert_instance_skipped,
    assert_instance_unstarted,
    assert_unresolved_instances,
    assert_unresolved_tasks,
    wait_for_tasks,
)

__all__ = [
    "assert_instance_abandoned",
    "assert_instance_expired",
    "assert_instance_failed",
    "assert_instance_finished",
    "assert_instance_missing",
    "assert_instance_replayed",
    "assert_instance_skipped",
    "assert_instance_unstarted",
    "assert_unresolved_instances",
    "assert_unresolved_tasks",
    "trigger_manager",
    "trigger_runner",
    "trigger_storage",
    "wait_for_tasks",
]


@pytest.fixture
def trigger_storage() -> Storage:
    """A new session in a private :class:`~triggers_core.MemoryStorage`."""
    return MemoryStorage(f"test-{uuid.uuid4().hex}", MemoryStore())


@pytest.fixture
def trigger_runner() -> Iterator[ThreadingTaskRunner]:
    """A threading runner; teardown waits for its task threads (and their errors)."""
    runner = ThreadingTaskRunner()
    yield runner
    runner.join_all()


@pytest.fixture
def trigger_manager(
    trigger_storage: Storage, trigger_runner: ThreadingTaskRunner
) -> TriggerManager:
    """A manager on ``trigger_storage`` running every task on ``trigger_runner``."""
    name = trigger_runner.name
    return TriggerManager(trigger_storage, runners={name: trigger_runner}, default_runner=name)
