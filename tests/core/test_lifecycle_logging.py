"""One log record per lifecycle event, with the session and instance as ``extra`` fields.

And one traceback per failure, whether or not the task used its logger context.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest

from triggers_core import (
    LIFECYCLE_LOGGER,
    MemoryStorage,
    MemoryStore,
    TaskContext,
    ThreadingTaskRunner,
    TriggerManager,
    TriggerTask,
)
from triggers_core.testing.sample_tasks import (
    DevNullTask,
    FailingTask,
    SelfRetryingTask,
    SelfSkippingTask,
)


class FailsInsideLoggerContext(TriggerTask):
    name: ClassVar[str] = "tests.lifecycle.FailsInsideLoggerContext"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        with context.get_logger_context({"step": "outer"}), context.get_logger_context() as log:
            log.info("about to fail")
            raise ValueError("bad row")


@pytest.fixture
def runner() -> Iterator[ThreadingTaskRunner]:
    runner = ThreadingTaskRunner()
    yield runner
    runner.join_all()


@pytest.fixture
def manager(runner: ThreadingTaskRunner) -> TriggerManager:
    storage = MemoryStorage(f"log-{uuid.uuid4().hex}", MemoryStore())
    return TriggerManager(storage, runners={"threading": runner})


def lifecycle_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LIFECYCLE_LOGGER]


def events(records: list[logging.LogRecord]) -> list[tuple[str, str | None, str | None]]:
    """(level, instance, status) per record; fire records give (level, trigger, None)."""
    out: list[tuple[str, str | None, str | None]] = []
    for record in records:
        if hasattr(record, "trigger"):
            out.append((record.levelname, f"fired {record.trigger}", None))
        else:
            out.append((record.levelname, record.instance, record.status))
    return out


def test_a_cascade_logs_one_record_per_event(
    manager: TriggerManager, runner: ThreadingTaskRunner, caplog: pytest.LogCaptureFixture
) -> None:
    manager.update_configuration(
        {
            "t_a": {"after": ["x"], "run": DevNullTask.name},
            "t_b": {"after": ["t_a"], "run": DevNullTask.name},
        }
    )
    with caplog.at_level(logging.DEBUG, logger=LIFECYCLE_LOGGER):
        manager.fire("x", {"n": 1})
        runner.join_all()
    records = lifecycle_records(caplog)
    assert events(records) == [
        ("INFO", "fired x", None),
        ("DEBUG", "t_a#0", "scheduled"),
        ("INFO", "t_a#0", "running"),
        ("INFO", "t_a#0", "finished"),
        ("INFO", "fired t_a", None),
        ("DEBUG", "t_b#0", "scheduled"),
        ("INFO", "t_b#0", "running"),
        ("INFO", "t_b#0", "finished"),
        ("INFO", "fired t_b", None),
    ]
    assert all(r.session == manager.uid for r in records)
    fired = records[0]
    assert fired.scheduled == ["t_a#0"]
    assert fired.getMessage() == f"session {manager.uid!r}: x fired, scheduled t_a#0"
    assert records[-1].getMessage().endswith("t_b fired, scheduled nothing")


def test_nothing_is_logged_above_debug_for_a_fire_nobody_listens_to(
    manager: TriggerManager, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=LIFECYCLE_LOGGER):
        manager.fire("nobody")
    assert events(lifecycle_records(caplog)) == [("INFO", "fired nobody", None)]


def test_a_failure_logs_one_record_with_one_traceback(
    manager: TriggerManager, runner: ThreadingTaskRunner, caplog: pytest.LogCaptureFixture
) -> None:
    manager.update_configuration({"t_f": {"after": ["x"], "run": FailingTask.name}})
    with caplog.at_level(logging.DEBUG):
        manager.fire("x")
        runner.join_all()
    failed = [r for r in lifecycle_records(caplog) if getattr(r, "status", None) == "failed"]
    assert len(failed) == 1
    assert failed[0].levelname == "ERROR"
    assert failed[0].instance == "t_f#0"
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert with_traceback == failed
    assert "RuntimeError: t_f#0 failed on purpose" in failed[0].getMessage()


def test_a_failure_inside_the_logger_context_is_logged_with_its_traceback_once(
    manager: TriggerManager, runner: ThreadingTaskRunner, caplog: pytest.LogCaptureFixture
) -> None:
    manager.update_configuration({"t_f": {"after": ["x"], "run": FailsInsideLoggerContext.name}})
    with caplog.at_level(logging.DEBUG):
        manager.fire("x")
        runner.join_all()
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert len(with_traceback) == 1
    task_record = with_traceback[0]
    assert task_record.name == f"triggers.tasks.{FailsInsideLoggerContext.name}"
    assert (task_record.session, task_record.instance) == (manager.uid, "t_f#0")
    assert task_record.context == {"instance": "t_f#0"}  # the innermost block's context
    failed = [r for r in lifecycle_records(caplog) if getattr(r, "status", None) == "failed"]
    assert len(failed) == 1
    assert not failed[0].exc_info
    assert "traceback logged by the task's logger" in failed[0].getMessage()
    info = next(r for r in caplog.records if r.getMessage() == "about to fail")
    assert (info.session, info.instance) == (manager.uid, "t_f#0")


def test_skips_replays_retries_and_abandons_are_logged(
    manager: TriggerManager, runner: ThreadingTaskRunner, caplog: pytest.LogCaptureFixture
) -> None:
    manager.update_configuration(
        {
            "t_skip": {"after": ["x"], "run": SelfSkippingTask.name},
            "t_retry": {
                "after": ["x"],
                "run": SelfRetryingTask.name,
                "withParams": {"retries": {"max": 1}},
            },
            "t_stop": {"after": ["y", "w"], "unless": ["x"], "run": DevNullTask.name},
            "t_fail": {"after": ["z"], "run": FailingTask.name},
        }
    )
    manager.fire("y")
    with caplog.at_level(logging.INFO, logger=LIFECYCLE_LOGGER):
        manager.fire("x")
        manager.fire("z")
        runner.join_all()
        manager.replay_failed_instance("t_fail#0")
        runner.join_all()
        manager.skip_failed_instance("t_fail#1")
    by_instance = {
        (r.instance, r.status) for r in lifecycle_records(caplog) if hasattr(r, "status")
    }
    assert {
        ("t_stop#0", "abandoned"),
        ("t_skip#0", "skipped"),
        ("t_retry#0", "replayed"),
        ("t_retry#1", "finished"),
        ("t_fail#0", "failed"),
        ("t_fail#0", "replayed"),
        ("t_fail#1", "failed"),
        ("t_fail#1", "skipped"),
    } <= by_instance
    retried = next(
        r
        for r in lifecycle_records(caplog)
        if getattr(r, "instance", None) == "t_retry#0" and r.status == "replayed"
    )
    assert retried.clone == "t_retry#1"
    assert retried.getMessage().endswith("t_retry#0 replayed as t_retry#1")
