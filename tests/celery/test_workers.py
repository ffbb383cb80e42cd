"""End to end with real ``celery worker`` processes on Redis and RabbitMQ.

Storage is PostgreSQL (and once SQLite). Every assertion reads the storage
(or the side-effect table) back; waiting is polling with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import workflow
from processes import (
    HERE,
    PG_PASSWORD,
    ROOT,
    RUN_ID,
    WorkerProcess,
    python_env,
    queue_for,
    start_worker,
    stop_all,
)
from sessions import open_test_manager, recorded_effects, session_uid
from worker_app import CeleryTestManager, make_app

from triggers_celery import CeleryTaskRunner, TaskMessage
from triggers_core import DispatchError, Status

pytestmark = [pytest.mark.service, pytest.mark.slow]


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_questionnaire_workflow_on_postgres_in_both_orders(
    sender: Any, workers: list[WorkerProcess]
) -> None:
    managers = [open_test_manager(sender, "workflow"), open_test_manager(sender, "workflow")]

    def run(manager: CeleryTestManager, applicant_first: bool) -> None:
        workflow.drive(
            manager,
            applicant_first=applicant_first,
            wait=lambda: workflow.settle(manager.storage),
        )

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(run, managers, [True, False]))
    for manager in managers:
        workflow.check(manager.storage, cooldowns=True)
    logs = "".join(worker.log() for worker in workers)
    # worker-side logging goes through the task's logger context
    assert "dividing 1 by 0" in logs


def test_questionnaire_workflow_on_sqlite(sender: Any, workers: list[WorkerProcess]) -> None:
    manager = open_test_manager(sender, "sqlite", storage="sqlite")
    assert manager.storage.backend_name == "sqlalchemy"
    workflow.drive(manager, applicant_first=True, wait=lambda: workflow.settle(manager.storage))
    workflow.check(manager.storage, cooldowns=True)


def test_two_workers_and_two_firing_processes_run_every_instance_once(
    sender: Any, workers: list[WorkerProcess], broker: str, pg_url: str
) -> None:
    per_process = 10
    manager = open_test_manager(sender, "concurrent")
    manager.update_configuration(
        {
            "t_record": {"after": ["go"], "andEvery": "tick", "run": "celerytest.Record"},
            "t_follow": {"after": ["go"], "andEvery": "t_record", "run": "celerytest.Record"},
        }
    )
    manager.fire("go")
    command = [sys.executable, str(HERE / "worker_app.py"), broker, queue_for(broker), pg_url]
    firing = [
        subprocess.Popen([*command, manager.uid, str(per_process)], cwd=ROOT, env=python_env())
        for _ in range(2)
    ]
    try:
        for process in firing:
            assert process.wait(120) == 0
    finally:
        for process in firing:
            if process.poll() is None:
                process.kill()
                process.wait()
    workflow.settle(manager.storage)
    instances = manager.storage.instances
    expected = 2 * per_process
    assert sorted(i.status.value for i in instances.values()) == ["finished"] * 2 * expected
    assert len(manager.storage.instances_of_task("t_record")) == expected
    assert len(manager.storage.instances_of_task("t_follow")) == expected
    effects = recorded_effects(manager.uid)
    # one row per instance (the primary key would fail a second run of any of them)
    assert [name for name, _ in effects] == sorted(instances)
    assert {pid for _, pid in effects} == {w.process.pid for w in workers}
    for name, pid in effects:
        assert instances[name].metadata["result"] == {"pid": pid}


def test_a_redelivered_message_does_not_rerun_a_finished_instance(
    sender: Any, workers: list[WorkerProcess]
) -> None:
    manager = open_test_manager(sender, "redeliver")
    manager.update_configuration({"t_once": {"after": ["go"], "run": "celerytest.Record"}})
    manager.fire("go")
    workflow.settle(manager.storage)
    before = manager.storage["t_once#0"]
    assert before.status is Status.FINISHED
    message = TaskMessage(
        manager=CeleryTestManager.registry_key,
        storage="default",
        session=manager.uid,
        instance="t_once#0",
    )
    for _ in range(2):  # the same message again, as a lost ack or a duplicate publish would
        sender.tasks["celerytest.Record"].apply_async(kwargs=message.to_kwargs())
    expected = f"not running t_once#0 in session {manager.uid!r}"
    deadline = time.monotonic() + 30
    while sum(worker.log().count(expected) for worker in workers) < 2:
        assert time.monotonic() < deadline, "the redelivered messages were not consumed"
        time.sleep(0.05)
    assert manager.storage["t_once#0"] == before
    assert [name for name, _ in recorded_effects(manager.uid)] == ["t_once#0"]


@pytest.fixture
def idle_queue(broker: str) -> Iterator[str]:
    """A queue nobody consumes, so a test can read what was published."""
    from kombu import Connection

    name = f"{queue_for(broker)}-idle-{uuid.uuid4().hex[:6]}"
    yield name
    with Connection(broker) as conn, contextlib.suppress(Exception):
        conn.default_channel.queue_delete(name)


def _read_raw(broker: str, queue: str, timeout: float = 10.0) -> Any:
    from kombu import Connection

    with Connection(broker) as conn:
        channel = conn.default_channel
        deadline = time.monotonic() + timeout
        while True:
            raw = channel.basic_get(queue, no_ack=True)
            if raw is not None:
                return raw
            assert time.monotonic() < deadline, f"nothing published to {queue}"
            time.sleep(0.05)


def test_messages_carry_no_credentials(
    broker: str, storages: dict[str, str], pg_url: str, idle_queue: str
) -> None:
    # the sender's settings name the storage: the message carries the name
    named = make_app(broker, idle_queue, storages)
    # a sender without settings: the message carries the credential-free reference
    anonymous = make_app(broker, idle_queue)
    try:
        for app, expected_storage in [
            (named, "default"),
            (anonymous, pg_url.replace(f":{PG_PASSWORD}", "")),
        ]:
            uid = session_uid("message")
            manager = CeleryTestManager(pg_url, uid, runners={"celery": CeleryTaskRunner(app)})
            manager.update_configuration(
                {"t_msg": {"after": ["go"], "run": "celerytest.CooldownRetry"}}
            )
            scheduled = manager.fire("go", {"secret": "kwargs stay in the storage"})
            assert [i.name for i in scheduled] == ["t_msg#0"]
            raw = _read_raw(broker, idle_queue)
            everything = repr((raw.body, raw.headers, raw.properties, raw.delivery_info))
            assert PG_PASSWORD not in everything
            assert "kwargs stay in the storage" not in everything
            assert raw.content_type == "application/json"
            assert raw.headers["task"] == "celerytest.CooldownRetry"
            args, kwargs, _embed = json.loads(raw.body)
            assert args == []
            assert kwargs == {
                "manager": "celery-tests",
                "storage": expected_storage,
                "session": uid,
                "instance": scheduled[0].name,
            }
    finally:
        named.close()
        anonymous.close()


def test_a_dead_broker_fails_fire_and_the_instance_is_replayable(
    sender: Any, workers: list[WorkerProcess], broker: str
) -> None:
    port = _dead_port()
    dead_url = broker.replace(":6379/", f":{port}/").replace(":5672/", f":{port}/")
    assert str(port) in dead_url
    dead_app = make_app(dead_url, queue_for(broker))
    manager = open_test_manager(sender, "dead")
    down = CeleryTestManager(manager.storage, runners={"celery": CeleryTaskRunner(dead_app)})
    down.update_configuration({"t_a": {"after": ["go"], "run": "triggers.PassThruTask"}})
    started = time.monotonic()
    with pytest.raises(DispatchError, match=r"t_a#0.*(refused|111)") as caught:
        down.fire("go", {"x": 1})
    assert time.monotonic() - started < 5, "fire hung on a dead broker"
    assert [name for name, _ in caught.value.failures] == ["t_a#0"]
    failed = manager.storage["t_a#0"]
    assert failed.status is Status.FAILED
    assert failed.metadata["exceptionType"] == "kombu.exceptions.OperationalError"
    assert "Traceback" in failed.metadata["exceptionInfo"]
    assert failed.metadata["exceptionContext"] == {"dispatch": "celery"}
    # the broker is back (the real one): replay runs it
    manager.replay_failed_instance("t_a#0")
    workflow.settle(manager.storage)
    assert manager.storage["t_a#1"].status is Status.FINISHED
    assert manager.storage["t_a#1"].metadata["result"] == {"kwargs": {"go": {"x": 1}}}
    dead_app.close()


def test_a_worker_killed_mid_task_is_recovered_by_another_worker_without_an_operator(
    sender: Any, broker: str, storages: dict[str, str], log_dir: Path
) -> None:
    slow_queue = f"{queue_for(broker)}.slow"  # celerytest.SleepOnce is routed here by name
    kind = queue_for(broker).rsplit("-", 1)[1]
    conf = {"triggers_sweep_interval": 1, "triggers_dispatch_lease": 3}
    # the workers' default queue is the main one, so the clone they send is routed as usual
    env = {"TRIGGERS_TEST_QUEUE": queue_for(broker)}
    doomed = start_worker(
        f"{kind}-doomed-{RUN_ID}", broker, [slow_queue], storages, log_dir, conf=conf, env=env
    )
    rescuer: WorkerProcess | None = None
    try:
        doomed.wait_ready()
        manager = open_test_manager(sender, "killed")
        manager.update_configuration(
            {"t_sleep": {"after": ["sleepRequested"], "run": "celerytest.SleepOnce"}}
        )
        manager.fire("sleepRequested", {"seconds": 120})
        deadline = time.monotonic() + 30
        while manager.storage["t_sleep#0"].status is not Status.RUNNING:
            assert time.monotonic() < deadline, manager.storage["t_sleep#0"]
            time.sleep(0.05)
        doomed.kill()
        rescuer = start_worker(
            f"{kind}-rescuer-{RUN_ID}", broker, [slow_queue], storages, log_dir, conf=conf, env=env
        )
        rescuer.wait_ready()
        # nobody acts: a worker's sweeper (the rescuer's, or that of another worker on
        # this storage) takes the lost run over once its 2 s lease expires and replays it
        # (the message a RabbitMQ broker redelivers is dropped while the lease lives, or
        # takes the run over once it expired)
        workflow.settle(manager.storage, timeout=30)
        lost = manager.storage["t_sleep#0"]
        assert lost.status is Status.REPLAYED
        assert lost.metadata["exceptionType"] == "triggers_core.errors.WorkerLost"
        assert lost.metadata["exceptionContext"]["worker"]["node"].startswith(doomed.name)
        assert manager.storage["t_sleep#1"].status is Status.FINISHED
        assert manager.storage["t_sleep#1"].metadata["result"] == {"slept": 0}
    finally:
        stop_all([doomed] if rescuer is None else [doomed, rescuer])


def test_end_to_end_latency(
    sender: Any, workers: list[WorkerProcess], broker: str, record_property: Any
) -> None:
    hops = 20
    manager = open_test_manager(sender, "latency")
    config = {"t_0": {"after": ["go"], "run": "triggers.DevNullTask"}}
    for n in range(1, hops):
        config[f"t_{n}"] = {"after": [f"t_{n - 1}"], "run": "triggers.DevNullTask"}
    manager.update_configuration(config)
    started = time.monotonic()
    manager.fire("go")
    workflow.settle(manager.storage)
    elapsed = time.monotonic() - started
    assert {i.status for i in manager.storage.instances.values()} == {Status.FINISHED}
    per_hop_ms = elapsed / hops * 1000
    record_property("per_instance_ms", round(per_hop_ms, 1))
    print(f"\n{broker.split(':', maxsplit=1)[0]}: {per_hop_ms:.1f} ms per chained instance")
