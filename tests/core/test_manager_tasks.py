"""End-to-end behaviour: what tasks see and how their outcomes are recorded."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, ClassVar

import pytest

from triggers_core import (
    InvalidKwargsError,
    MaxRetriesExceeded,
    Storage,
    TaskContext,
    ThreadingTaskRunner,
    TriggerManager,
    TriggerTask,
    UnknownTaskError,
    with_context,
)
from triggers_core.testing.assertions import (
    assert_instance_failed,
    assert_instance_finished,
    assert_instance_missing,
    assert_instance_replayed,
    assert_instance_skipped,
    assert_instance_unstarted,
    assert_unresolved_instances,
)
from triggers_core.testing.clock import FakeClock
from triggers_core.testing.sample_tasks import (
    PassThruTask,
    SelfRetryingTask,
    SelfSkippingTask,
)

PASS = PassThruTask.name


class ReportingError(Exception):
    """A project-specific exception (recorded as ``module.Name``)."""


class ContextReportTask(TriggerTask):
    """Returns what its context holds."""

    name: ClassVar[str] = "tests.core.tasks.ContextReport"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {
            "instance": context.instance_name,
            "retries": context.retries,
            "kwargs": dict(context.trigger_kwargs),
            "same_manager": context.manager.uid,
        }


class ContextFailureTask(TriggerTask):
    """Raises an exception carrying a context dict."""

    name: ClassVar[str] = "tests.core.tasks.ContextFailure"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        raise with_context(ReportingError("row 3 is broken"), {"row": 3, "file": "a.csv"})


class NotAMappingTask(TriggerTask):
    """Returns a list, which cannot cascade."""

    name: ClassVar[str] = "tests.core.tasks.NotAMapping"

    def _run(self, context: TaskContext) -> Any:
        return [1, 2, 3]


class NotJsonTask(TriggerTask):
    """Returns a mapping that JSON cannot hold."""

    name: ClassVar[str] = "tests.core.tasks.NotJson"

    def _run(self, context: TaskContext) -> Any:
        return {"when": object()}


class ReturnsNoneTask(TriggerTask):
    """Returns None, which means ``{}``."""

    name: ClassVar[str] = "tests.core.tasks.ReturnsNone"

    def _run(self, context: TaskContext) -> None:
        return None


class LoggingTask(TriggerTask):
    """Logs at the level named in its kwargs, inside a logger context."""

    name: ClassVar[str] = "tests.core.tasks.Logging"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        level = context.trigger_kwargs["x"]["level"]
        with context.get_logger_context({"step": "score"}) as log:
            log.info("starting")
            log.log(logging.getLevelName(level), "at %s", level)
        return {}


class LoggedFailureTask(TriggerTask):
    """Raises inside a logger context (which logs the exception)."""

    name: ClassVar[str] = "tests.core.tasks.LoggedFailure"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        with context.get_logger_context({"step": "load"}):
            raise KeyError("missing column")


class RetryWithDetailsTask(TriggerTask):
    """Retries once with an exception, metadata, replacement kwargs and a cooldown."""

    name: ClassVar[str] = "tests.core.tasks.RetryWithDetails"
    max_retries: ClassVar[int] = 1

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        if context.retries == 0:
            self.retry(
                exc=with_context(TimeoutError("model timed out"), {"attempt": 1}),
                metadata={"note": "first try"},
                replacement_kwargs={"x": {"fallback": True}},
                cooldown=30,
            )
        return {"kwargs": dict(context.trigger_kwargs), "retries": context.retries}


def configure(manager: TriggerManager, run: str, **directives: Any) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": run, **directives}, "t_b": {"after": ["t_a"], "run": PASS}}
    )


# -- the context ----------------------------------------------------------------------------


def test_task_context_attributes(manager: TriggerManager) -> None:
    configure(manager, ContextReportTask.name, withParams={"p": {"q": 1}})
    manager.fire("x", {"n": 1})
    assert_instance_finished(
        manager,
        "t_a#0",
        {
            "instance": "t_a#0",
            "retries": 0,
            "kwargs": {"x": {"n": 1}, "p": {"q": 1}},
            "same_manager": manager.uid,
        },
    )


def test_task_returning_none_finishes_with_an_empty_result(manager: TriggerManager) -> None:
    configure(manager, ReturnsNoneTask.name)
    manager.fire("x")
    assert_instance_finished(manager, "t_a#0", {})
    assert_instance_finished(manager, "t_b#0", {"kwargs": {"t_a": {}}})


# -- failures ---------------------------------------------------------------------------------


def test_failure_records_type_traceback_and_level(manager: TriggerManager) -> None:
    configure(manager, "triggers.FailingTask")
    manager.fire("x")
    failed = assert_instance_failed(manager, "t_a#0", RuntimeError)
    metadata = failed.metadata
    assert metadata["exceptionType"] == "builtins.RuntimeError"
    assert metadata["exceptionInfo"].startswith("Traceback (most recent call last):")
    assert metadata["exceptionInfo"].rstrip().endswith("RuntimeError: t_a#0 failed on purpose")
    assert metadata["exceptionContext"] == {}
    assert metadata["logLevel"] == logging.ERROR
    assert (failed.log_level, failed.log_level_name) == (logging.ERROR, "ERROR")
    assert_instance_missing(manager, "t_b#0")


def test_failure_with_context_and_module_qualified_type(manager: TriggerManager) -> None:
    configure(manager, ContextFailureTask.name)
    manager.fire("x")
    failed = assert_instance_failed(manager, "t_a#0", ReportingError)
    assert failed.metadata["exceptionType"] == f"{__name__}.ReportingError"
    assert failed.metadata["exceptionContext"] == {"row": 3, "file": "a.csv"}
    assert "row 3 is broken" in failed.metadata["exceptionInfo"]


def test_non_mapping_result_is_a_failure(manager: TriggerManager) -> None:
    configure(manager, NotAMappingTask.name)
    manager.fire("x")
    failed = assert_instance_failed(manager, "t_a#0", InvalidKwargsError)
    assert "must return a mapping or None, got list" in failed.metadata["exceptionInfo"]
    assert "result" not in failed.metadata
    assert_instance_missing(manager, "t_b#0")


def test_non_json_result_is_a_failure(manager: TriggerManager) -> None:
    configure(manager, NotJsonTask.name)
    manager.fire("x")
    failed = assert_instance_failed(manager, "t_a#0", InvalidKwargsError)
    assert "result.when: object is not JSON-serializable" in failed.metadata["exceptionInfo"]
    assert_instance_missing(manager, "t_b#0")


def test_unregistered_task_name_is_a_failure(manager: TriggerManager) -> None:
    configure(manager, "myapp.tasks.DoesNotExist")
    manager.fire("x")
    failed = assert_instance_failed(manager, "t_a#0", UnknownTaskError)
    assert (
        "no trigger task registered under 'myapp.tasks.DoesNotExist'"
        in (failed.metadata["exceptionInfo"])
    )


# -- skip and retry from inside the task --------------------------------------------------------


def test_self_skipping_task(manager: TriggerManager) -> None:
    configure(manager, SelfSkippingTask.name, withParams={"p": {"q": 1}})
    manager.fire("x", {"n": 1})
    skipped = assert_instance_skipped(manager, "t_a#0")
    assert skipped.metadata["kwargs"] == {"x": {"n": 1}, "p": {"q": 1}}
    assert "result" not in skipped.metadata
    assert_instance_missing(manager, "t_b#0")
    assert "t_a" not in manager.storage.latest_kwargs
    assert_unresolved_instances(manager, [])


def test_self_retrying_task_up_to_its_limit(manager: TriggerManager) -> None:
    configure(manager, SelfRetryingTask.name, withParams={"retries": {"max": 2}})
    manager.fire("x")
    for n in range(2):
        replayed = assert_instance_replayed(manager, f"t_a#{n}")
        assert replayed.retries == n
        assert replayed.metadata["replayedAs"] == f"t_a#{n + 1}"
        assert replayed.metadata["exceptionType"] == "triggers_core.tasks.RetryTask"
    final = assert_instance_finished(manager, "t_a#2", {"count": 2})
    assert final.retries == 2
    assert (final.metadata["parent"], final.metadata["depth"]) == ("t_a#1", 2)
    assert_instance_finished(manager, "t_b#0", {"kwargs": {"t_a": {"count": 2}}})
    assert_unresolved_instances(manager, [])


def test_self_retrying_task_defaults_to_max_retries(manager: TriggerManager) -> None:
    assert SelfRetryingTask.max_retries == 3
    configure(manager, SelfRetryingTask.name)
    manager.fire("x")
    for n in range(3):
        assert_instance_replayed(manager, f"t_a#{n}")
    assert_instance_finished(manager, "t_a#3", {"count": 3})
    assert_instance_missing(manager, "t_a#4")


def test_self_retrying_task_beyond_max_retries(manager: TriggerManager) -> None:
    configure(manager, SelfRetryingTask.name, withParams={"retries": {"max": 5}})
    manager.fire("x")
    for n in range(3):
        assert_instance_replayed(manager, f"t_a#{n}")
    failed = assert_instance_failed(manager, "t_a#3", MaxRetriesExceeded)
    assert failed.metadata["exceptionType"] == "triggers_core.errors.MaxRetriesExceeded"
    assert (
        "t_a#3 asked to retry after 3 retries (max_retries=3)" in (failed.metadata["exceptionInfo"])
    )
    assert failed.retries == 3
    assert failed.can_replay
    assert_instance_missing(manager, "t_a#4")
    assert_instance_missing(manager, "t_b#0")
    assert_unresolved_instances(manager, ["t_a#3"])


def test_retry_with_exception_metadata_replacement_kwargs_and_cooldown(
    storage_factory: Callable[[str], Storage], session_uid: str, runner: ThreadingTaskRunner
) -> None:
    clock = FakeClock()
    manager = TriggerManager(
        storage_factory(session_uid), runners={"threading": runner}, clock=clock
    )
    configure(manager, RetryWithDetailsTask.name)
    manager.fire("x", {"n": 1})
    first = assert_instance_replayed(manager, "t_a#0")
    assert first.metadata["exceptionType"] == "builtins.TimeoutError"
    assert first.metadata["exceptionContext"] == {"attempt": 1}
    assert first.metadata["note"] == "first try"
    assert "TimeoutError: model timed out" in first.metadata["exceptionInfo"]
    # The cooldown is a timer in the storage: the clone waits, unstarted, until it is due.
    waiting = assert_instance_unstarted(manager, "t_a#1")
    assert waiting.metadata["delayedUntil"] == (clock.now + timedelta(seconds=30)).isoformat()
    assert waiting.metadata["retryCooldown"] == 30
    clock.advance("29s")
    assert_instance_unstarted(manager, "t_a#1")
    clock.advance("1s")
    second = assert_instance_finished(
        manager, "t_a#1", {"kwargs": {"x": {"fallback": True}}, "retries": 1}
    )
    assert second.kwargs == {"x": {"fallback": True}}


# -- logging -------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
def test_logger_context_records_the_highest_level(
    manager: TriggerManager, caplog: pytest.LogCaptureFixture, level: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="triggers.tasks")
    configure(manager, LoggingTask.name)
    manager.fire("x", {"level": level})
    finished = assert_instance_finished(manager, "t_a#0", {})
    expected = max(logging.INFO, logging.getLevelName(level))
    assert (finished.log_level, finished.log_level_name) == (
        expected,
        logging.getLevelName(expected),
    )
    assert finished.logs_resolved is (expected < logging.ERROR)
    records = [r for r in caplog.records if r.name == f"triggers.tasks.{LoggingTask.name}"]
    assert [r.getMessage() for r in records] == ["starting", f"at {level}"]
    assert all(r.context == {"instance": "t_a#0", "step": "score"} for r in records)  # type: ignore[attr-defined]


def test_log_level_is_notset_without_logging(manager: TriggerManager) -> None:
    configure(manager, PASS)
    manager.fire("x")
    finished = assert_instance_finished(manager, "t_a#0")
    assert (finished.log_level, finished.log_level_name) == (logging.NOTSET, "NOTSET")
    assert finished.logs_resolved


def test_logger_context_logs_exceptions_raised_inside(
    manager: TriggerManager, caplog: pytest.LogCaptureFixture
) -> None:
    configure(manager, LoggedFailureTask.name)
    manager.fire("x")
    failed = assert_instance_failed(manager, "t_a#0", KeyError)
    assert failed.metadata["logLevel"] == logging.ERROR
    logged = [
        r
        for r in caplog.records
        if r.name == f"triggers.tasks.{LoggedFailureTask.name}" and r.exc_info
    ]
    assert logged, "the exception raised inside the logger context was not logged"
    first = logged[0]
    assert first.getMessage() == "t_a#0 raised KeyError: 'missing column'"
    assert first.context == {"instance": "t_a#0", "step": "load"}  # type: ignore[attr-defined]
    assert [i.name for i in manager.storage.get_instances_with_unresolved_logs()] == ["t_a#0"]
