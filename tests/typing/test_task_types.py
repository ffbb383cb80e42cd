"""Typing tests for task bodies: sync and ``async def`` ``_run`` overrides type-check.

Checked by ``mypy --strict`` (a needed ``type: ignore`` proves an error is
reported, since unused ignores are errors) and run by pytest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar, assert_type

from triggers_core import (
    MemoryStorage,
    Status,
    TaskContext,
    TaskInstance,
    ThreadingTaskRunner,
    TriggerManager,
    TriggerTask,
)
from triggers_core.runtime.tasks import TaskResult


class SyncBody(TriggerTask):
    name: ClassVar[str] = "typing.SyncBody"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {"sync": True}


class SyncNone(TriggerTask):
    name: ClassVar[str] = "typing.SyncNone"

    def _run(self, context: TaskContext) -> None:
        return None


class AsyncBody(TriggerTask):
    name: ClassVar[str] = "typing.AsyncBody"

    async def _run(self, context: TaskContext) -> Mapping[str, Any]:
        fired = await context.afire("nobody-listens", {"n": 1})
        assert_type(fired, list[TaskInstance])
        await asyncio.sleep(0)
        return {"async": True, "fired": len(fired)}


class AsyncNone(TriggerTask):
    name: ClassVar[str] = "typing.AsyncNone"

    async def _run(self, context: TaskContext) -> None:
        await asyncio.sleep(0)


class AsyncBadResult(TriggerTask):
    name: ClassVar[str] = "typing.AsyncBadResult"

    async def _run(self, context: TaskContext) -> list[int]:  # type: ignore[override]
        return [1]


def test_run_returns_a_task_result() -> None:
    manager = TriggerManager(MemoryStorage("typing-tasks"))
    context = TaskContext(manager, {}, "t_a#0")
    assert_type(SyncBody().run(context), TaskResult)
    body = AsyncBody().run(context)
    assert_type(body, TaskResult)
    assert asyncio.iscoroutine(body)  # the runner awaits it
    body.close()
    assert SyncBody().run(context) == {"sync": True}


def test_sync_and_async_bodies_run() -> None:
    runner = ThreadingTaskRunner()
    manager = TriggerManager(MemoryStorage("typing-bodies"), runners={"threading": runner})
    manager.update_configuration(
        {
            name: {"after": ["go"], "run": task.name}
            for name, task in {
                "t_sync": SyncBody,
                "t_none": SyncNone,
                "t_async": AsyncBody,
                "t_anone": AsyncNone,
                "t_bad": AsyncBadResult,
            }.items()
        }
    )
    manager.fire("go")
    runner.join_all()
    statuses = {name: i.status for name, i in manager.storage.instances.items()}
    assert statuses == {
        "t_sync#0": Status.FINISHED,
        "t_none#0": Status.FINISHED,
        "t_async#0": Status.FINISHED,
        "t_anone#0": Status.FINISHED,
        "t_bad#0": Status.FAILED,
    }
    assert manager.storage["t_async#0"].metadata["result"] == {"async": True, "fired": 0}
