"""Typing tests for ``triggers_celery``: checked by ``mypy --strict`` and run by pytest.

Celery ships no type information, so the adapter's own signatures are what
users' type checkers see; these pin the ones applications call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, assert_type

from triggers_celery import (
    CeleryTaskRunner,
    InstanceFailedError,
    StorageUnavailableError,
    StorageURLs,
    TaskMessage,
    configured_storages,
    open_configured_storage,
    storage_retry_countdown,
    trigger_task,
)
from triggers_core import Storage, StorageError, TaskContext, TriggerTask, redact
from triggers_core.runtime.tasks import TaskResult


def test_message_and_settings_types() -> None:
    message = TaskMessage(manager="default", storage="default", session="s", instance="t_a#0")
    assert_type(message.instance, str)
    assert_type(message.to_kwargs(), dict[str, str])
    assert_type(TaskMessage.from_kwargs(message.to_kwargs()), TaskMessage)
    assert_type(
        configured_storages({"triggers_storages": {"db": "sqlite:///x.db"}}), dict[str, str]
    )
    delay = storage_retry_countdown({"triggers_storage_retry_backoff": 0.5}, 3)
    assert_type(delay, float)
    assert 0 < delay <= 60.0


def test_error_and_decorator_types() -> None:
    error = StorageUnavailableError(
        StorageError("down", backend="sqlalchemy/postgresql", session="s"), instance="t_a#0"
    )
    assert_type(error.instance, str)
    assert_type(error.session, str)
    assert isinstance(error, StorageError)
    decorate = trigger_task(name="typing.noop")
    assert_type(decorate, Callable[[Callable[..., TaskResult]], type[TriggerTask]])

    def noop(context: TaskContext) -> Mapping[str, Any] | None:
        return None

    async def anoop(context: TaskContext) -> Mapping[str, Any] | None:
        return None

    if TYPE_CHECKING:  # checked by mypy; not run, so no task is registered process-wide
        assert_type(decorate(noop), type[TriggerTask])
        assert_type(decorate(anoop), type[TriggerTask])
    assert_type(CeleryTaskRunner.name, str)


def test_storage_trust_and_redaction_types(tmp_path: Any) -> None:
    urls = StorageURLs({"db": "sqlite:///x.db"})
    assert_type(urls.as_dict(), dict[str, str])
    assert_type(urls.names(), list[str])
    conf = {"triggers_storages": {"db": f"sqlite:///{tmp_path}/x.db"}}
    assert_type(open_configured_storage(conf, "db", "s", for_message=False), Storage)
    assert_type(redact("postgresql://u:pw@db/x", secrets=["pw"]), str)
    failed = InstanceFailedError("t_a#0", "s", "builtins.RuntimeError")
    assert_type(failed.exception_type, str)
