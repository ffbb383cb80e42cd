"""The adapter's pieces without a broker server: messages, storage names, binding, routing.

Routing and countdowns are checked on kombu's in-memory transport, which
publishes real messages inside this process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from celery import Celery, signals
from celery.exceptions import Retry
from kombu import Connection
from worker_app import CeleryTestManager, make_app

import triggers_celery
from triggers_celery import (
    BindingError,
    CeleryTaskRunner,
    MessageError,
    StorageResolutionError,
    StorageUnavailableError,
    TaskMessage,
    TriggersCeleryError,
    bind_tasks,
    configured_storages,
    execute_message,
    storage_retry_countdown,
    trigger_task,
)
from triggers_celery.message import MESSAGE_FIELDS, has_secret
from triggers_celery.storages import message_storage, open_configured_storage
from triggers_celery.worker import (
    is_transient_storage_error,
    storage_retry_max,
    worker_default_runner,
)
from triggers_core import (
    DispatchError,
    MemoryStorage,
    MemoryStore,
    ScheduleInstance,
    SchemaMissingError,
    SerializationError,
    Status,
    Storage,
    StorageError,
    TaskContext,
    ThreadingTaskRunner,
    TriggerManager,
    TriggerTask,
    UnknownInstanceError,
    open_storage,
    runners,
)
from triggers_core.testing.sample_tasks import DevNullTask


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
    assert has_secret("postgresql://u:pw@db/x")
    assert has_secret("postgresql://u@db/x?sslpassword=pw")
    assert not has_secret("postgresql://u@db/x")
    assert not has_secret("default")
    for storage in ["postgresql://u:hunter2@db/x", "postgresql://u@db/x?PASSWORD=hunter2"]:
        with pytest.raises(MessageError, match="password") as caught:
            TaskMessage("default", storage, "s", "t#0")
        assert "hunter2" not in str(caught.value)
    # session UIDs are arbitrary text: an e-mail-like UID is not mistaken for a secret
    assert TaskMessage("default", "default", "user:alice@example.com", "t#0")
    with pytest.raises(MessageError, match="'instance' must be a non-empty string"):
        TaskMessage("default", "default", "s", "")
    message = TaskMessage("default", "default", "s", "t#0")
    assert TaskMessage.from_kwargs(message.to_kwargs()) == message
    assert list(message.to_kwargs().items()) == list(
        zip(MESSAGE_FIELDS, ("default", "default", "s", "t#0"), strict=True)
    )
    with pytest.raises(MessageError, match=r"unexpected \['kwargs'\]"):
        TaskMessage.from_kwargs({**message.to_kwargs(), "kwargs": {}})


@pytest.mark.parametrize("padding", [0, 600])  # remembered answers, then long texts
def test_the_secret_check_of_a_storage_field_gives_the_same_answer_every_time(
    padding: int,
) -> None:
    pad = "x" * padding
    clean = [f"default{pad}", f"postgresql://u@db/x{pad}", f"django-cache://redis{pad}"]
    secret = [f"postgresql://u:hunter2@db/x{pad}", f"postgresql://u@db/x?password=hunter2{pad}"]
    for _ in range(3):  # asked again, a remembered answer must be the same
        for text in clean:
            assert not has_secret(text), text
            assert TaskMessage("default", text, "s", "t#0").storage == text
        for text in secret:
            assert has_secret(text), text
            with pytest.raises(MessageError, match="password"):
                TaskMessage("default", text, "s", "t#0")


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
    opened = open_configured_storage(conf, "main", "s1")
    assert message_storage(opened, conf) == "main"  # opened under a name
    direct = open_storage(sqlite_url, "s1")
    assert message_storage(direct, conf) == "main"  # same reference as a configured one
    reference = direct.reference()
    assert reference is not None
    assert message_storage(direct, {}) == reference  # nothing configured: the reference
    # a worker accepts a reference only as the key of one of its configured storages
    assert message_storage(open_configured_storage(conf, reference, "s1"), {}) == "main"
    with pytest.raises(StorageResolutionError, match="refusing storage reference"):
        open_configured_storage({}, reference, "s1")
    with pytest.raises(StorageResolutionError, match="no storage by that name; did you mean"):
        open_configured_storage(conf, "mian", "s1")

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
    effect = ScheduleInstance("t_a#0", "t_a", "triggers.DevNullTask", "celery", {}, depth=1)
    runner = CeleryTaskRunner(memory_app)
    options = runner.publish_options(effect)
    assert "countdown" not in options
    assert "eta" not in options
    runner.dispatch(manager, effect)
    # A retry's clone too is sent for now: its cooldown was a timer in the storage.
    assert _read(memory_app, "units").headers["eta"] is None


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


# -- transient storage errors on workers -----------------------------------------------


def _dead_postgres_url() -> str:
    with socket.socket() as sock:  # a port nothing listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"


def _run_as_worker(task: Any, message: TaskMessage, retries: int) -> Any:
    """Run ``task`` as a worker runs a received message (a non-eager request)."""
    kwargs = message.to_kwargs()
    task.push_request(
        id=f"req-{uuid.uuid4().hex[:8]}",
        args=[],
        kwargs=kwargs,
        retries=retries,
        is_eager=False,
        called_directly=False,
    )
    try:
        return task.run(**kwargs)
    finally:
        task.pop_request()


def _nothing_in(app: Celery, queue: str) -> bool:
    with Connection(app.conf.broker_url) as conn:
        return conn.default_channel.basic_get(queue, no_ack=True) is None


def test_a_transient_storage_error_before_the_start_retries_the_message(
    memory_app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    memory_app.conf.update(
        triggers_storages={"dead": _dead_postgres_url()},
        triggers_storage_retry_max=5,
        triggers_storage_retry_backoff=0.5,
        triggers_storage_retry_backoff_max=0.5,
    )
    task = memory_app.tasks[DevNullTask.name]
    message = TaskMessage("celery-tests", "dead", "units-outage", "t_a#0")
    before = datetime.now(UTC)
    with caplog.at_level(logging.WARNING), pytest.raises(Retry) as caught:
        _run_as_worker(task, message, retries=2)
    assert isinstance(caught.value.exc, StorageUnavailableError)
    assert isinstance(caught.value.exc, StorageError)  # still a storage error for callers
    assert caught.value.exc.instance == "t_a#0"
    assert caught.value.exc.session == "units-outage"
    assert "t_a#0 was not started" in str(caught.value.exc)
    # the same message went back to the broker, one retry further, with a delay
    raw = _read(memory_app, "units")
    assert raw.headers["task"] == DevNullTask.name
    assert raw.headers["retries"] == 3
    args, kwargs, _embed = json.loads(raw.body)
    assert (args, kwargs) == ([], message.to_kwargs())
    delay = (datetime.fromisoformat(raw.headers["eta"]) - before).total_seconds()
    assert 0.2 <= delay <= 1.0, delay
    [record] = [r for r in caplog.records if "retrying the message" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "t_a#0 of session 'units-outage'" in record.getMessage()
    assert "(retry 3 of 5)" in record.getMessage()
    context = record.context  # type: ignore[attr-defined]
    assert context["session"] == "units-outage"
    assert context["instance"] == "t_a#0"


def test_retries_stop_at_the_configured_maximum(
    memory_app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    memory_app.conf.update(
        triggers_storages={"dead": _dead_postgres_url()}, triggers_storage_retry_max=2
    )
    task = memory_app.tasks[DevNullTask.name]
    message = TaskMessage("celery-tests", "dead", "units-outage", "t_a#0")
    with caplog.at_level(logging.WARNING), pytest.raises(StorageUnavailableError):
        _run_as_worker(task, message, retries=2)
    assert _nothing_in(memory_app, "units")
    assert "giving up on t_a#0 of session 'units-outage' after 2 retries" in caplog.text


def _corrupt_header(sqlite_url: str, uid: str) -> None:
    import sqlite3

    path = sqlite_url.removeprefix("sqlite:///").split("?")[0]
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        changed = conn.execute(
            "UPDATE triggers_sessions SET header = '{not json' WHERE uid = ?", (uid,)
        ).rowcount
    assert changed == 1


@pytest.mark.parametrize("problem", ["unknown instance", "schema missing", "corrupt document"])
def test_a_non_transient_error_is_not_retried(
    memory_app: Celery, sqlite_url: str, tmp_path: Path, problem: str
) -> None:
    uid = f"units-{uuid.uuid4().hex}"
    storage, instance = "default", "t_a#0"
    manager = CeleryTestManager(sqlite_url, uid, runners={"celery": CeleryTaskRunner(memory_app)})
    manager.update_configuration({"t_a": {"after": ["go"], "run": DevNullTask.name}})
    manager.fire("go")  # scheduled; its message waits in the in-memory queue
    assert _read(memory_app, "units").headers["task"] == DevNullTask.name
    expected: type[Exception]
    if problem == "unknown instance":
        instance, expected = "t_a#9", UnknownInstanceError
    elif problem == "schema missing":
        empty = f"sqlite:///{tmp_path / 'empty.db'}?triggers_create_schema=false"
        memory_app.conf.triggers_storages = {
            **memory_app.conf.triggers_storages.as_dict(),  # sealed by bind_tasks
            "empty": empty,
        }
        storage, expected = "empty", SchemaMissingError
    else:
        _corrupt_header(sqlite_url, uid)
        expected = SerializationError
    task = memory_app.tasks[DevNullTask.name]
    message = TaskMessage("celery-tests", storage, uid, instance)
    with pytest.raises(expected) as caught:
        _run_as_worker(task, message, retries=0)
    assert not isinstance(caught.value, StorageUnavailableError)
    assert not is_transient_storage_error(caught.value)
    assert _nothing_in(memory_app, "units")  # no retry was published


def test_tables_without_fire_keys_run_unguarded_and_say_so(
    memory_app: Celery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Tables of an earlier version (no fire_keys): the worker still runs the instance
    (protected by its status, as before) and warns that cascades are not recorded."""
    old = tmp_path / "old.db"
    sqlite_url = f"sqlite:///{old}"
    memory_app.conf.triggers_storages = {
        **memory_app.conf.triggers_storages.as_dict(),  # sealed by bind_tasks
        "old": sqlite_url,
    }
    uid = f"units-{uuid.uuid4().hex}"
    manager = CeleryTestManager(sqlite_url, uid, runners={"celery": CeleryTaskRunner(memory_app)})
    manager.update_configuration({"t_a": {"after": ["go"], "run": DevNullTask.name}})
    manager.fire("go")
    assert _read(memory_app, "units").headers["task"] == DevNullTask.name
    with contextlib.closing(sqlite3.connect(old)) as conn, conn:
        conn.execute("DROP TABLE triggers_fire_keys")
    task = memory_app.tasks[DevNullTask.name]
    with caplog.at_level(logging.WARNING):
        _run_as_worker(task, TaskMessage("celery-tests", "old", uid, "t_a#0"), retries=0)
    assert manager.storage["t_a#0"].status is Status.FINISHED
    assert "cascades of finished instances are not recorded" in caplog.text
    assert "fire_keys" in caplog.text


def test_storage_retry_backoff_is_exponential_jittered_and_capped() -> None:
    conf = {"triggers_storage_retry_backoff": 1.0, "triggers_storage_retry_backoff_max": 10.0}
    for retries, ceiling in [(0, 1.0), (1, 2.0), (3, 8.0), (4, 10.0), (500, 10.0)]:
        delays = {storage_retry_countdown(conf, retries) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (retries, delays)
        assert len(delays) > 1  # jittered
    assert 0.5 <= storage_retry_countdown({}, 0) <= 1.0  # defaults: 1 s, doubling
    assert storage_retry_countdown({}, 20) <= 60.0
    assert storage_retry_max({}) == 10
    assert storage_retry_max({"triggers_storage_retry_max": 3}) == 3
    with pytest.raises(TriggersCeleryError, match="triggers_storage_retry_max"):
        storage_retry_max({"triggers_storage_retry_max": "many"})


class _BlockingTask(TriggerTask):
    """Runs until ``RELEASE`` is set: a body whose worker is about to be given up for lost."""

    name = "units.Blocking"
    RELEASE = threading.Event()

    def _run(self, context: Any) -> dict[str, Any]:
        assert self.RELEASE.wait(30)
        return {}


def test_a_redelivered_message_takes_over_a_run_whose_lease_expired(
    memory_app: Celery, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    uid = f"units-{uuid.uuid4().hex}"
    runner = CeleryTaskRunner(memory_app)
    # A run started an hour ago by a worker that died: its 30 s lease expired long since.
    past = CeleryTestManager(
        sqlite_url,
        uid,
        runners={"celery": runner},
        clock=lambda: datetime.now(UTC) - timedelta(hours=1),
    )
    past.update_configuration({"t_a": {"after": ["go"], "run": _BlockingTask.name}})
    past.fire("go")
    _read(memory_app, "units")  # the first message, as the dead worker received it
    outcome: list[Any] = []
    body = threading.Thread(target=lambda: outcome.append(past.run_instance("t_a#0")))
    body.start()
    try:
        while past.storage["t_a#0"].status is not Status.RUNNING:
            time.sleep(0.01)
        message = TaskMessage("celery-tests", "default", uid, "t_a#0")
        with caplog.at_level(logging.INFO):
            summary = execute_message(memory_app, message, celery_task_id="redelivered")
    finally:
        _BlockingTask.RELEASE.set()
        body.join(30)
    assert summary == {"session": uid, "instance": "t_a#0", "status": "taken over"}
    assert "running under an expired lease" in caplog.text
    lost = past.storage["t_a#0"]
    assert lost.status is Status.REPLAYED
    assert lost.metadata["exceptionType"] == "triggers_core.errors.WorkerLost"
    assert past.storage["t_a#1"].status is Status.SCHEDULED
    assert _read(memory_app, "units").payload[1]["instance"] == "t_a#1"  # the clone is sent
    assert outcome == [None]  # the old run's outcome was refused
