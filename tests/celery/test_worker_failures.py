"""Worker-side failures are visible, with real ``celery worker`` processes.

A worker that cannot build what a message needs (the manager class, the
trigger task) marks the instance ``failed`` with the error and a hint, so it
can be replayed once the worker is fixed; a worker that cannot reach the
storage the message names says why in its log. Nothing is silently left
``scheduled``. A trigger task that fails is reported as failed by Celery too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
import workflow
from processes import RUN_ID, WorkerProcess, queue_for
from sessions import open_test_manager, session_uid
from worker_app import CeleryTestManager, make_app

from triggers_celery import CeleryTaskRunner, open_manager
from triggers_core import Status, Storage, TaskContext, TriggerManager, TriggerTask, managers

pytestmark = [pytest.mark.service, pytest.mark.slow]


class WebOnlyManager(TriggerManager):
    """Registered in this (the "web") process only: the workers never import this module."""

    registry_key: ClassVar[str] = f"web-only-{RUN_ID}"
    default_runner = "celery"


managers.register(WebOnlyManager.registry_key, WebOnlyManager)


class WebOnlyTask(TriggerTask):
    """A trigger task the workers do not have."""

    name: ClassVar[str] = f"webonly.Task{RUN_ID}"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {}


def _wait_for_status(storage: Storage, name: str, status: Status, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while storage[name].status is not status:
        assert time.monotonic() < deadline, storage[name]
        time.sleep(0.05)


def _logs(workers: list[WorkerProcess]) -> str:
    return "".join(worker.log() for worker in workers)


def _wait_for_log(workers: list[WorkerProcess], text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in _logs(workers):
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{_logs(workers)[-4000:]}"
        time.sleep(0.05)


def test_a_manager_registered_only_in_the_web_process_fails_the_instance_with_a_hint(
    sender: Any, workers: list[WorkerProcess]
) -> None:
    manager = open_manager(
        session_uid("web-only-manager"),
        app=sender,
        manager=WebOnlyManager.registry_key,
        runners={"celery": CeleryTaskRunner(sender)},
    )
    manager.update_configuration({"t_a": {"after": ["go"], "run": "triggers.PassThruTask"}})
    manager.fire("go", {"x": 1})
    _wait_for_status(manager.storage, "t_a#0", Status.FAILED)
    failed = manager.storage["t_a#0"]
    assert failed.metadata["exceptionType"] == "triggers_celery.errors.WorkerSetupError"
    info = failed.metadata["exceptionInfo"]
    assert f"cannot build the trigger manager {WebOnlyManager.registry_key!r}" in info
    assert "register the manager class in a module this worker imports" in info
    assert failed.metadata["exceptionContext"]["worker"].split("@")[0] in {
        worker.name for worker in workers
    }
    _wait_for_log(workers, "raised expected: WorkerSetupError")
    # once a worker can build the manager, the instance replays and runs
    fixed = CeleryTestManager(manager.storage, runners={"celery": CeleryTaskRunner(sender)})
    fixed.replay_failed_instance("t_a#0")
    workflow.settle(fixed.storage)
    assert fixed.storage["t_a#1"].metadata["result"] == {"kwargs": {"go": {"x": 1}}}


def test_a_task_the_worker_has_not_bound_fails_the_instance_with_a_hint(
    sender: Any, workers: list[WorkerProcess]
) -> None:
    manager = open_test_manager(sender, "unbound-task")
    manager.update_configuration({"t_b": {"after": ["go"], "run": WebOnlyTask.name}})
    manager.fire("go")
    _wait_for_status(manager.storage, "t_b#0", Status.FAILED)
    failed = manager.storage["t_b#0"]
    assert failed.metadata["exceptionType"] == "triggers_celery.errors.WorkerSetupError"
    assert f"has no Celery task {WebOnlyTask.name!r}" in failed.metadata["exceptionInfo"]
    assert "bind it with triggers_celery.bind_tasks(app)" in failed.metadata["exceptionInfo"]
    _wait_for_log(workers, f"marked t_b#0 of session {manager.uid!r} failed")


def test_a_storage_the_worker_does_not_know_is_refused_and_logged_with_a_hint(
    broker: str, storages: dict[str, str], workers: list[WorkerProcess]
) -> None:
    # the sender knows one more storage name than the workers
    app = make_app(broker, queue_for(broker), {**storages, "archive": storages["default"]})
    try:
        manager = open_test_manager(app, "unknown-storage", storage="archive")
        manager.update_configuration({"t_c": {"after": ["go"], "run": "triggers.PassThruTask"}})
        manager.fire("go")
        _wait_for_log(
            workers,
            f"refused the message for t_c#0 of session {manager.uid!r}: refusing storage "
            "'archive': this process has no storage by that name",
        )
        assert "set the Celery setting 'triggers_storages'" in _logs(workers)
        # the worker cannot reach that storage, so the instance is left as it was
        assert manager.storage["t_c#0"].status is Status.SCHEDULED
    finally:
        app.close()


def test_a_failed_trigger_task_is_failed_in_the_workers_log_line(
    sender: Any, workers: list[WorkerProcess]
) -> None:
    manager = open_test_manager(sender, "failing")
    manager.update_configuration({"t_fail": {"after": ["go"], "run": "triggers.FailingTask"}})
    manager.fire("go")
    _wait_for_status(manager.storage, "t_fail#0", Status.FAILED)
    expected = re.compile(
        r"triggers\.FailingTask\[[-0-9a-f]+\] raised expected: InstanceFailedError\("
        + re.escape(f"\"t_fail#0 of session '{manager.uid}' failed with ")
        + r"(builtins\.)?RuntimeError"
    )
    deadline = time.monotonic() + 30
    while not expected.search(_logs(workers)):
        assert time.monotonic() < deadline, _logs(workers)[-4000:]
        time.sleep(0.05)
    succeeded = [
        line
        for line in _logs(workers).splitlines()
        if "triggers.FailingTask[" in line and "succeeded" in line
    ]
    assert succeeded == []
