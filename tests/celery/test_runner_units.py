"""The adapter's pieces without a broker server: messages, storage names, binding, routing.

Routing and countdowns are checked on kombu's in-memory transport, which
publishes real messages inside this process.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from celery import Celery, signals
from kombu import Connection
from worker_app import CeleryTestManager, make_app

import triggers_celery
from triggers_celery import (
    BindingError,
    CeleryTaskRunner,
    MessageError,
    StorageResolutionError,
    TaskMessage,
    bind_tasks,
    configured_storages,
    execute_message,
    trigger_task,
)
from triggers_celery.message import has_password
from triggers_celery.storages import message_storage, open_message_storage
from triggers_celery.worker import worker_default_runner
from triggers_core import (
    DispatchError,
    MemoryStorage,
    MemoryStore,
    ScheduleInstance,
    Status,
    Storage,
    TaskContext,
    ThreadingTaskRunner,
    TriggerManager,
    TriggerTask,
    runners,
)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'units.db'}?triggers_create_schema=true"


@pytest.fixture
def memory_app(sqlite_url: str) -> Iterator[Celery]:
    """An app on kombu's in-process transport; each test gets its own virtual host."""
    app = make_app(f"memory://localhost/{uuid.uuid4().hex}", "units", {"default": sqlite_url})
    yield app
    app.close()


def _read(app: Celery, queue: str) -> Any:
    with Connection(app.conf.broker_url) as conn:
        raw = conn.default_channel.basic_get(queue, no_ack=True)
    assert raw is not None, f"nothing in {queue}"
    return raw


def test_the_celery_runner_is_registered() -> None:
    assert runners.load("celery") is CeleryTaskRunner
    assert "celery" in runners.names()


def test_a_message_never_carries_a_password() -> None:
    assert has_password("postgresql://u:pw@db/x")
    assert not has_password("postgresql://u@db/x")
    assert not has_password("default")
    with pytest.raises(MessageError, match="password"):
        TaskMessage("default", "postgresql://u:pw@db/x", "s", "t#0")
    with pytest.raises(MessageError, match="'instance' must be a non-empty string"):
        TaskMessage("default", "default", "s", "")
    message = TaskMessage("default", "default", "s", "t#0")
    assert TaskMessage.from_kwargs(message.to_kwargs()) == message
    with pytest.raises(MessageError, match=r"unexpected \['kwargs'\]"):
        TaskMessage.from_kwargs({**message.to_kwargs(), "kwargs": {}})


def test_configured_storages_come_from_the_setting_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRIGGERS_STORAGE_URL", "sqlite:///env.db")
    assert configured_storages({"triggers_storages": {"a": "memory://a"}}) == {
        "a": "memory://a",
        "default": "sqlite:///env.db",
    }
    assert configured_storages({"triggers_storages": {"default": "memory://x"}}) == {
        "default": "memory://x"
    }
    with pytest.raises(StorageResolutionError, match="not a storage URL"):
        configured_storages({"triggers_storages": {"a": "nope"}})


def test_storage_names_references_and_resolution(sqlite_url: str) -> None:
    conf = {"triggers_storages": {"main": sqlite_url}}
    opened = open_message_storage(conf, "main", "s1")
    assert message_storage(opened, conf) == "main"  # opened under a name
    direct = open_message_storage({}, sqlite_url, "s1")
    assert message_storage(direct, conf) == "main"  # same reference as a configured one
    reference = direct.reference()
    assert message_storage(direct, {}) == reference  # nothing configured: the reference
    assert message_storage(open_message_storage(conf, reference, "s1"), {}) == "main"
    with pytest.raises(StorageResolutionError, match="no storage named 'mian'; did you mean"):
        open_message_storage(conf, "mian", "s1")

    class Opaque(MemoryStorage):
        def reference(self) -> None:  # type: ignore[override]
            return None

    with pytest.raises(StorageResolutionError, match="no reference"):
        message_storage(Opaque("s1", MemoryStore()), conf)


def test_routing_by_task_name_json_and_countdown(memory_app: Celery, sqlite_url: str) -> None:
    memory_app.conf.task_routes = {"triggers.PassThruTask": {"queue": "routed"}}
    manager = CeleryTestManager(
        sqlite_url, f"units-{uuid.uuid4().hex}", runners={"celery": CeleryTaskRunner(memory_app)}
    )
    manager.update_configuration({"t_a": {"after": ["go"], "run": "triggers.PassThruTask"}})
    manager.fire("go")
    raw = _read(memory_app, "routed")
    assert raw.content_type == "application/json"
    assert raw.headers["task"] == "triggers.PassThruTask"
    assert raw.headers["eta"] is None
    assert json.loads(raw.body)[1] == {
        "manager": "celery-tests",
        "storage": "default",
        "session": manager.uid,
        "instance": "t_a#0",
    }
    effect = ScheduleInstance("t_a#0", "t_a", "triggers.DevNullTask", "celery", {}, cooldown=30)
    CeleryTaskRunner(memory_app).dispatch(manager, effect)
    assert _read(memory_app, "units").headers["eta"] is not None  # countdown = cooldown


def test_an_unbound_task_is_sent_by_name(memory_app: Celery, sqlite_url: str) -> None:
    manager = CeleryTestManager(
        sqlite_url, f"units-{uuid.uuid4().hex}", runners={"celery": CeleryTaskRunner(memory_app)}
    )
    manager.update_configuration({"t_x": {"after": ["go"], "run": "elsewhere.Task"}})
    manager.fire("go")
    assert _read(memory_app, "units").headers["task"] == "elsewhere.Task"


def test_memory_storage_is_refused_outside_eager_mode(memory_app: Celery) -> None:
    manager = CeleryTestManager(
        MemoryStorage("s", MemoryStore()), runners={"celery": CeleryTaskRunner(memory_app)}
    )
    manager.update_configuration({"t_a": {"after": ["go"], "run": "triggers.PassThruTask"}})
    with pytest.raises(DispatchError, match="memory:// storage lives in this process"):
        manager.fire("go")
    failed = manager.storage["t_a#0"]
    assert failed.status is Status.FAILED
    assert failed.metadata["exceptionType"] == "triggers_celery.errors.StorageResolutionError"


def test_a_manager_subclass_without_its_own_registry_key_is_refused(
    memory_app: Celery, sqlite_url: str
) -> None:
    class Unregistered(TriggerManager):
        default_runner = "celery"

    manager = Unregistered(
        sqlite_url, f"units-{uuid.uuid4().hex}", runners={"celery": CeleryTaskRunner(memory_app)}
    )
    manager.update_configuration({"t_a": {"after": ["go"], "run": "triggers.PassThruTask"}})
    with pytest.raises(DispatchError, match="registry_key is 'default'"):
        manager.fire("go")
    assert manager.storage["t_a#0"].status is Status.FAILED


def test_workers_default_to_celery_for_what_they_schedule() -> None:
    assert worker_default_runner(TriggerManager) == "celery"

    class Custom(TriggerManager):
        default_runner = "priority"

    assert worker_default_runner(Custom) == "priority"


def test_binding_is_idempotent_and_refuses_conflicts_and_celery_retries(
    memory_app: Celery,
) -> None:
    first = memory_app.tasks["triggers.PassThruTask"]
    assert bind_tasks(memory_app)["triggers.PassThruTask"] is first  # no duplicate warning
    assert first.acks_late is True
    assert first.serializer == "json"
    with pytest.raises(BindingError, match="autoretry_for"):
        bind_tasks(memory_app, "triggers.DevNullTask", autoretry_for=(Exception,))

    other = Celery("units-conflict", set_as_current=False)
    other.conf.broker_url = "memory://"

    @other.task(name="triggers.DevNullTask", shared=False)
    def imposter() -> None:
        """A plain Celery task squatting on a trigger task's name."""

    with pytest.raises(BindingError, match="already has another task"):
        bind_tasks(other, "triggers.DevNullTask")
    other.close()


class RateLimited(TriggerTask):
    """Class style with per-task Celery options."""

    name: ClassVar[str] = "units.RateLimited"
    celery_options: ClassVar[Mapping[str, Any]] = {"rate_limit": "5/s", "soft_time_limit": 20}

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {}


def test_class_options_and_the_decorator_style(memory_app: Celery) -> None:
    fresh = Celery("units-options", set_as_current=False)
    bound = bind_tasks(fresh, RateLimited, time_limit=30)["units.RateLimited"]
    assert (bound.rate_limit, bound.soft_time_limit, bound.time_limit) == ("5/s", 20, 30)
    assert bind_tasks(fresh, RateLimited, time_limit=30)["units.RateLimited"] is bound
    with pytest.raises(BindingError, match=r"without the options \['time_limit'\]"):
        bind_tasks(fresh, RateLimited, time_limit=60)
    fresh.close()

    @trigger_task(memory_app, name="units.greet", rate_limit="1/s", max_retries=7)
    def greet(context: TaskContext) -> Mapping[str, Any]:
        """Says hello."""
        return {"greeting": f"hello {context.trigger_kwargs['person']['name']}"}

    assert issubclass(greet, TriggerTask)
    assert greet.max_retries == 7
    assert memory_app.tasks["units.greet"].rate_limit == "1/s"
    # the generated class runs unchanged under the threading runner
    runner = ThreadingTaskRunner()
    manager = TriggerManager(
        MemoryStorage("s", MemoryStore()), runners={"threading": runner}, default_runner="threading"
    )
    manager.update_configuration({"t_greet": {"after": ["person"], "run": "units.greet"}})
    manager.fire("person", {"name": "Ada"})
    runner.join_all()
    assert manager.storage["t_greet#0"].metadata["result"] == {"greeting": "hello Ada"}


def test_tasks_registered_after_binding_are_bound_when_the_worker_starts(
    memory_app: Celery,
) -> None:
    class Late(TriggerTask):
        name: ClassVar[str] = f"units.Late{uuid.uuid4().hex}"

        def _run(self, context: TaskContext) -> None:
            return None

    assert Late.name not in memory_app.tasks

    class FakeWorker:
        app = memory_app

    signals.worker_init.send(sender=FakeWorker())
    assert memory_app.tasks[Late.name].trigger_task_name == Late.name


def test_a_message_for_an_instance_that_is_not_scheduled_is_ignored(
    memory_app: Celery, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    memory_app.conf.task_always_eager = True
    manager = CeleryTestManager(
        sqlite_url, f"units-{uuid.uuid4().hex}", runners={"celery": CeleryTaskRunner(memory_app)}
    )
    manager.update_configuration({"t_a": {"after": ["go"], "run": "triggers.DevNullTask"}})
    manager.fire("go")
    finished = manager.storage["t_a#0"]
    assert finished.status is Status.FINISHED
    message = TaskMessage("celery-tests", "default", manager.uid, "t_a#0")
    with caplog.at_level(logging.INFO):
        summary = execute_message(memory_app, message)
    assert summary == {"session": manager.uid, "instance": "t_a#0", "status": "ignored"}
    assert manager.storage["t_a#0"] == finished
    assert "not running t_a#0" in caplog.text
    assert "ignored the message for t_a#0" in caplog.text
    missing = TaskMessage("celery-tests", "default", manager.uid, "t_a#9")
    with pytest.raises(KeyError, match="t_a#9"):
        execute_message(memory_app, missing)
    assert "does this worker's storage setting point at the database" in caplog.text


def test_the_package_exports_what_it_documents() -> None:
    for name in triggers_celery.__all__:
        assert getattr(triggers_celery, name).__doc__ or name.isupper(), name
    assert isinstance(triggers_celery.DEFAULT_RETRY_POLICY["max_retries"], int)
    assert issubclass(StorageResolutionError, LookupError)
    assert isinstance(MemoryStorage("s"), Storage)
