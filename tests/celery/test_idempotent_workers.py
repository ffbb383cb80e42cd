"""Idempotency with real ``celery worker`` processes (Redis and RabbitMQ, PostgreSQL storage).

A webhook delivered twice fires once; a completion delivered again (an instance an
operator forced back to ``scheduled``, then a redelivered message) finishes the
instance again on a worker without cascading a second time.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import workflow
from processes import WorkerProcess
from sessions import open_test_manager
from worker_app import CeleryTestManager

from triggers_celery import TaskMessage
from triggers_core import Status

pytestmark = [pytest.mark.service, pytest.mark.slow]

CASCADE = {
    "t_first": {"after": ["go"], "run": "triggers.PassThruTask"},
    "t_next": {"after": ["t_first"], "andEvery": "t_first", "run": "triggers.DevNullTask"},
}


def test_a_duplicate_fire_and_a_redelivered_completion_do_not_cascade_twice(
    sender: Any, workers: list[WorkerProcess]
) -> None:
    manager = open_test_manager(sender, "cascade-once")
    manager.update_configuration(CASCADE)
    first = manager.fire("go", {"delivery": 1}, idempotency_key="webhook-1")
    assert [i.name for i in first] == ["t_first#0"]
    workflow.settle(manager.storage)
    assert sorted(manager.storage.instances) == ["t_first#0", "t_next#0"]
    # The webhook is delivered again: nothing is sent, the first fire's instance returns.
    version = manager.storage.load().version
    again = manager.fire("go", {"delivery": 2}, idempotency_key="webhook-1")
    assert [(i.name, i.status) for i in again] == [("t_first#0", Status.FINISHED)]
    assert manager.storage.load().version == version
    # An operator forces t_first#0 back; its message is delivered again to a worker.
    manager.update_instance_status("t_first#0", Status.SCHEDULED)
    message = TaskMessage(
        manager=CeleryTestManager.registry_key,
        storage="default",
        session=manager.uid,
        instance="t_first#0",
    )
    sender.tasks["triggers.PassThruTask"].apply_async(kwargs=message.to_kwargs())
    expected = f"session {manager.uid!r}: t_first#0 finished again; its cascade (t_first)"
    deadline = time.monotonic() + 60
    while not any(expected in worker.log() for worker in workers):
        assert time.monotonic() < deadline, "the redelivered message was not run"
        time.sleep(0.05)
    workflow.settle(manager.storage)
    assert manager.storage["t_first#0"].status is Status.FINISHED
    assert sorted(manager.storage.instances) == ["t_first#0", "t_next#0"]  # no t_next#1
    assert manager.storage["t_first#0"].metadata["result"] == {"kwargs": {"go": {"delivery": 1}}}
