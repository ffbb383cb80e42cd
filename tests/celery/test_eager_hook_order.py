"""Cause before effect in Celery's eager mode, where ``dispatch`` runs the task itself.

The original framework's hook scenario (``targetAcquired`` -> ``t_alpha`` ->
``t_bravo``), repeated: the ``_post_fire`` of each operation must come before
the hooks of the cascade it caused, although eager dispatch runs the whole
cascade before ``fire`` returns.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from celery import Celery
from worker_app import CeleryTestManager, make_app

from triggers_celery import CeleryTaskRunner
from triggers_core import MemoryStorage, MemoryStore, Status, TaskInstance, managers
from triggers_core.testing.sample_tasks import DevNullTask

REPEATS = 200

CONFIG = {
    "t_alpha": {"after": ["targetAcquired"], "run": DevNullTask.name},
    "t_bravo": {"after": ["targetAcquired", "t_alpha"], "run": DevNullTask.name},
}
EXPECTED = [
    ("targetAcquired", ["t_alpha#0"]),
    ("t_alpha", ["t_bravo#0"]),
    ("t_bravo", []),
]

#: Calls per session UID: each eager task runs on a manager that the worker code
#: rebuilds from the registry key, so the calls cannot live on the caller's manager.
CALLS: dict[str, list[tuple[str, list[str]]]] = {}
_LOCK = threading.Lock()


class EagerOrderManager(CeleryTestManager):
    """Records ``_post_fire`` calls per session."""

    registry_key: ClassVar[str] = "celery-tests-hook-order"

    def _post_fire(self, trigger_name: str, scheduled_instances: list[TaskInstance]) -> None:
        with _LOCK:
            CALLS.setdefault(self.uid, []).append(
                (trigger_name, [i.name for i in scheduled_instances])
            )


managers.register(EagerOrderManager.registry_key, EagerOrderManager)


@pytest.fixture(scope="module")
def eager_app() -> Iterator[Celery]:
    app = make_app("memory://", f"eager-order-{uuid.uuid4().hex}", task_always_eager=True)
    yield app
    app.close()


def _scenario(app: Celery) -> list[tuple[str, list[str]]]:
    uid = f"eager-order-{uuid.uuid4().hex}"
    storage = MemoryStorage(uid, MemoryStore())
    manager: Any = EagerOrderManager(storage, runners={"celery": CeleryTaskRunner(app)})
    manager.update_configuration(CONFIG)
    returned = manager.fire("targetAcquired")
    # fire returns what it committed: a snapshot, although the instance already ran
    assert [(i.name, i.status) for i in returned] == [("t_alpha#0", Status.SCHEDULED)]
    assert storage["t_bravo#0"].status is Status.FINISHED
    with _LOCK:
        return CALLS.pop(uid)


def test_hooks_run_cause_before_effect_in_eager_mode(eager_app: Celery) -> None:
    orders = [_scenario(eager_app) for _ in range(REPEATS)]
    wrong = [calls for calls in orders if calls != EXPECTED]
    assert wrong == [], f"{len(wrong)} of {REPEATS} runs out of order, e.g. {wrong[0]}"
