"""Attacks through the broker, against a real ``celery worker`` on Redis.

The attacker can publish messages to the broker and talk to workers over it,
nothing more. The worker under attack keeps a password in ``TRIGGERS_STORAGE_URL``
(its ``default`` storage) and another one in its ``triggers_storages`` setting.
:class:`AttackerDatabase` is a TCP server this test starts on a free port: the
database the attacker would like the worker to connect to. It must receive
nothing, and no password may appear in the worker's log or in anything the
worker sends back.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kombu import Connection
from processes import BROKERS, PG_DSN, RUN_ID, WorkerProcess, start_worker, stop_all
from services import require_service
from sessions import session_uid
from worker_app import CeleryTestManager, make_app

from triggers_celery import CeleryTaskRunner
from triggers_core import Status

pytestmark = [pytest.mark.service, pytest.mark.slow]

#: The passwords the attacked worker holds (trust authentication ignores them).
ENV_PASSWORD = f"env-secret-{RUN_ID}"
SETTING_PASSWORD = f"setting-secret-{RUN_ID}"
PREFIX = f"ts{RUN_ID}_"
FORGED_PREFIX = f"tf{RUN_ID}_"
DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class AttackerDatabase:
    """Accepts TCP connections and records every one, and every byte sent to it."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self.connections: list[tuple[str, int]] = []
        self.received = b""
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(peer)
            with conn:
                conn.settimeout(2.0)
                with contextlib.suppress(OSError):
                    while chunk := conn.recv(65536):
                        self.received += chunk

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self._thread.join(5)


@pytest.fixture(scope="module")
def redis_broker() -> str:
    label, host, port, url = BROKERS["redis"]
    require_service(label, host, port)
    return url


@pytest.fixture(scope="module")
def attacker() -> Iterator[AttackerDatabase]:
    server = AttackerDatabase()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def tables(pg_url: str) -> Iterator[None]:
    """The attacked worker's tables (its own prefix), created and dropped by the test."""
    from triggers_backends.sqlalchemy import create_schema, drop_schema, shared_engine

    engine = shared_engine(DATABASE)
    create_schema(engine, PREFIX)
    try:
        yield
    finally:
        drop_schema(engine, PREFIX)


@pytest.fixture(scope="module")
def queue() -> str:
    return f"tc-{RUN_ID}-security"


@pytest.fixture(scope="module")
def attacked(redis_broker: str, queue: str, tables: None, log_dir: Path) -> Iterator[WorkerProcess]:
    """A worker with a password in TRIGGERS_STORAGE_URL and one in triggers_storages."""
    env_url = DATABASE.replace("postgres@", f"postgres:{ENV_PASSWORD}@")
    setting_url = DATABASE.replace("postgres@", f"postgres:{SETTING_PASSWORD}@")
    worker = start_worker(
        f"attacked-{RUN_ID}",
        redis_broker,
        [queue],
        {"reports": f"{setting_url}?triggers_prefix={PREFIX}&sslpassword={SETTING_PASSWORD}"},
        log_dir,
        env={"TRIGGERS_STORAGE_URL": f"{env_url}?triggers_prefix={PREFIX}"},
    )
    try:
        yield worker.wait_ready()
    finally:
        stop_all([worker])
        log = worker.log()
        assert ENV_PASSWORD not in log
        assert SETTING_PASSWORD not in log


@pytest.fixture(scope="module")
def publisher(redis_broker: str, queue: str) -> Iterator[Any]:
    """The attacker's own Celery app: no storages, just the broker."""
    app = make_app(redis_broker, queue)
    yield app
    app.close()


def _forge(publisher: Any, storage: str, session: str) -> str:
    """Publish a hand-made trigger task message; return its Celery task id."""
    kwargs = {"manager": "default", "storage": storage, "session": session, "instance": "t_x#0"}
    result = publisher.send_task("triggers.DevNullTask", kwargs=kwargs, serializer="json")
    return str(result.id)


def _wait_until_acked(app: Any, task_id: str, timeout: float = 20.0) -> None:
    """Until the message is neither waiting in the queue nor delivered-but-unacked."""
    queue = app.conf.task_default_queue
    deadline = time.monotonic() + timeout
    with Connection(app.conf.broker_url) as conn:
        client = conn.default_channel.client
        while True:
            waiting = b"".join(client.lrange(queue, 0, -1))
            unacked = b"".join(client.hvals("unacked"))
            if task_id.encode() not in waiting + unacked:
                return
            assert time.monotonic() < deadline, f"message {task_id} was never acknowledged"
            time.sleep(0.05)


def _tables_named(prefix: str) -> list[str]:
    with psycopg.connect(PG_DSN) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE %s",
            (f"{prefix}%",),
        ).fetchall()
    return [name for (name,) in rows]


def _forged_references(attacker: AttackerDatabase, tmp_path: Path) -> dict[str, str]:
    port = attacker.port
    same_database = f"{DATABASE}?triggers_prefix={PREFIX}"
    return {
        "port": f"{same_database}&port={port}",
        "hostaddr": f"{same_database}&hostaddr=127.0.0.1&port={port}",
        "host": f"{same_database}&host=127.0.0.1&port={port}",
        "attacker url": f"postgresql+psycopg://postgres@127.0.0.1:{port}/test",
        "sqlite file": f"sqlite:///{tmp_path / 'forged' / 'created-by-a-message.db'}",
        "create schema": f"{DATABASE}?triggers_prefix={FORGED_PREFIX}&triggers_create_schema=true",
        "unknown name": "reprots",
    }


def test_forged_storage_references_are_refused_and_acknowledged(
    attacked: WorkerProcess, publisher: Any, attacker: AttackerDatabase, tmp_path: Path
) -> None:
    (tmp_path / "forged").mkdir()
    for kind, storage in _forged_references(attacker, tmp_path).items():
        session = session_uid(f"forged-{kind.replace(' ', '-')}")
        task_id = _forge(publisher, storage, session)
        attacked.wait_for_log(f"refused the message for t_x#0 of session {session!r}")
        _wait_until_acked(publisher, task_id)
        attacked.wait_for_log(f"DevNullTask[{task_id}] raised expected: StorageResolutionError")
    assert attacker.connections == []
    assert attacker.received == b""
    assert list((tmp_path / "forged").iterdir()) == []
    assert _tables_named(FORGED_PREFIX) == []
    log = attacked.log()
    assert "did you mean 'reports'?" in log
    assert ENV_PASSWORD not in log
    assert SETTING_PASSWORD not in log


def test_a_message_carrying_a_password_is_refused_without_repeating_it(
    attacked: WorkerProcess, publisher: Any, attacker: AttackerDatabase
) -> None:
    leaked = f"attacker-password-{uuid.uuid4().hex}"
    forms = [
        f"postgresql+psycopg://postgres:{leaked}@127.0.0.1:{attacker.port}/test",
        f"postgresql+psycopg://postgres@127.0.0.1:{attacker.port}/test?password={leaked}",
    ]
    for storage in forms:
        task_id = _forge(publisher, storage, session_uid("carries-password"))
        attacked.wait_for_log(f"DevNullTask[{task_id}] raised expected: MessageError")
    assert leaked not in attacked.log()
    assert attacker.connections == []


def test_a_configured_reference_is_accepted_and_opens_the_workers_own_url(
    attacked: WorkerProcess, redis_broker: str, queue: str
) -> None:
    """The legitimate use of references: a sender that knows no names sends the
    reference of a storage the worker has configured; the worker uses its own URL."""
    sender = make_app(redis_broker, queue)  # no triggers_storages: messages carry references
    try:
        manager = CeleryTestManager(
            f"{DATABASE}?triggers_prefix={PREFIX}",
            session_uid("by-reference"),
            runners={"celery": CeleryTaskRunner(sender)},
        )
        manager.update_configuration({"t_ok": {"after": ["go"], "run": "triggers.PassThruTask"}})
        manager.fire("go", {"n": 1})
        deadline = time.monotonic() + 30
        while manager.storage["t_ok#0"].status is not Status.FINISHED:
            assert time.monotonic() < deadline, manager.storage["t_ok#0"]
            time.sleep(0.05)
        assert manager.storage["t_ok#0"].metadata["result"] == {"kwargs": {"go": {"n": 1}}}
    finally:
        sender.close()


def test_the_worker_does_not_reveal_its_storages_to_inspect_conf(
    attacked: WorkerProcess, publisher: Any
) -> None:
    hostname = f"{attacked.name}@{socket.gethostname()}"
    replies = publisher.control.inspect(destination=[hostname], timeout=10).conf()
    assert replies is not None, "the worker did not answer inspect conf"
    text = json.dumps(replies)
    assert "triggers_storages" in text
    assert "StorageURLs(" in text
    assert f"triggers_prefix={PREFIX}" in text  # the names and hosts are still there
    assert SETTING_PASSWORD not in text
    assert ENV_PASSWORD not in text


def test_a_worker_refuses_a_memory_storage(
    redis_broker: str, publisher: Any, log_dir: Path
) -> None:
    queue = f"tc-{RUN_ID}-memory"
    worker = start_worker(
        f"memory-{RUN_ID}",
        redis_broker,
        [queue],
        {},
        log_dir,
        env={"TRIGGERS_STORAGE_URL": "memory://"},
    )
    try:
        worker.wait_ready()
        worker.wait_for_log("storage 'default' is memory://, which lives inside one process")
        session = session_uid("memory")
        kwargs = {"manager": "default", "storage": "default", "session": session, "instance": "t#0"}
        publisher.send_task("triggers.DevNullTask", kwargs=kwargs, queue=queue)
        worker.wait_for_log(f"refused the message for t#0 of session {session!r}")
        assert "a Celery worker cannot see the sessions the sender stored there" in worker.log()
    finally:
        stop_all([worker])


def test_secrets_in_a_storage_url_reach_no_repr_no_reference_and_no_broker_message(
    redis_broker: str, tables: None
) -> None:
    """The application's own URL holds a password in the userinfo and in the query."""
    first, second = f"pw1-{uuid.uuid4().hex}", f"pw2-{uuid.uuid4().hex}"
    url = (
        f"postgresql+psycopg://postgres:{first}@127.0.0.1:5432/test"
        f"?triggers_prefix={PREFIX}&sslpassword={second}&password={second}"
    )
    idle = f"tc-{RUN_ID}-idle-{uuid.uuid4().hex[:6]}"
    named = make_app(redis_broker, idle, {"default": url})  # messages carry the name
    anonymous = make_app(redis_broker, idle)  # messages carry the reference
    try:
        for app, expected in [
            (named, "default"),
            (anonymous, f"{DATABASE}?triggers_prefix={PREFIX}"),
        ]:
            manager = CeleryTestManager(
                url, session_uid("query-secret"), runners={"celery": CeleryTaskRunner(app)}
            )
            manager.update_configuration({"t_m": {"after": ["go"], "run": "triggers.DevNullTask"}})
            manager.fire("go")
            with Connection(redis_broker) as conn:
                raw = conn.default_channel.basic_get(idle, no_ack=True)
            assert raw is not None
            shown = [
                repr(manager),
                repr(manager.storage),
                str(manager.storage.reference()),
                repr((raw.body, raw.headers, raw.properties, raw.delivery_info)),
            ]
            for text in shown:
                assert first not in text
                assert second not in text
            assert json.loads(raw.body)[1]["storage"] == expected
    finally:
        named.close()
        anonymous.close()
        with contextlib.suppress(Exception), Connection(redis_broker) as conn:
            conn.default_channel.queue_delete(idle)
