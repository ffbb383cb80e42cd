"""A dead worker never strands an instance: real prefork workers killed at every point.

Workers run ``--pool=prefork --concurrency=2`` on Redis and on RabbitMQ, with
PostgreSQL and ``django-cache://`` on Redis as storages, 2-second leases
(``celerytest.Body``), a sweep every second and a 3-second dispatch lease.
Each test kills something with SIGKILL, then, with no operator action, waits
for every instance to end and asserts its final status, how many times its
body ran (rows in ``triggers_celery_runs``) and how many times its message was
delivered (rows in ``triggers_celery_deliveries``, written by the pool process
before the body). The seconds from the kill to the last instance's end are
printed (``-s``): docs/operations.md's table quotes them.

Kill points: the pool process before it marks the instance ``running`` (on
PostgreSQL also while mark-running waits for the session's row lock), during
the body, after the outcome's commit but before the ack; a whole node (main
process and pool) while bodies run; a hard time limit; a soft one; and the
broker connection cut while a body runs.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import django_env
import psycopg
import pytest
from processes import BROKERS, HERE, PG_DSN, RUN_ID, WorkerProcess, start_worker, stop_all
from services import require_service
from sessions import session_uid
from tcp_proxy import FreezingProxy
from worker_app import DELIVERIES_TABLE, RUNS_TABLE, SLOW_ENV, CeleryTestManager, make_app

from triggers_celery import CeleryTaskRunner, open_manager
from triggers_core import Status, TriggerManager

pytestmark = [pytest.mark.service, pytest.mark.slow]

#: Celery settings of the workers: sweep every second, dispatch lease 3 s.
CONF = {"triggers_sweep_interval": 1, "triggers_dispatch_lease": 3}
#: Seconds the first execution of a run key sleeps on the nodes the tests kill in.
SLOW = 20
#: Every instance must end within this many seconds of the kill.
SETTLE = 45.0
STORAGES = ["pg", "dj"]


@pytest.fixture(scope="module", params=sorted(BROKERS))
def broker(request: pytest.FixtureRequest) -> str:
    label, host, port, url = BROKERS[request.param]
    require_service(label, host, port)
    return url


@pytest.fixture(scope="module")
def tables() -> Iterator[None]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (session text NOT NULL, "
            "instance text NOT NULL, run_key text NOT NULL, pid integer NOT NULL)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {DELIVERIES_TABLE} (session text NOT NULL, "
            "instance text NOT NULL, task_id text NOT NULL, pid integer NOT NULL)"
        )
    try:
        yield
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            for table in (RUNS_TABLE, DELIVERIES_TABLE):
                conn.execute(f"DELETE FROM {table} WHERE session LIKE %s", (f"%{RUN_ID}%",))


@pytest.fixture(scope="module")
def death_storages(pg_url: str, django_settings: dict[str, Any]) -> Iterator[dict[str, str]]:
    """Tables and keys of their own: no other test's workers sweep these sessions."""
    require_service("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)
    from triggers_backends.sqlalchemy import create_schema, drop_schema, shared_engine

    base = pg_url.split("?", 1)[0]
    tables = f"td{uuid.uuid4().hex[:8]}_"
    engine = shared_engine(base)
    create_schema(engine, tables)
    keys = f"td{uuid.uuid4().hex[:8]}:"
    try:
        yield {
            "pg": f"{base}?triggers_prefix={tables}",
            "dj": f"django-cache://{django_env.REDIS}?prefix={keys}",
        }
    finally:
        drop_schema(engine, tables)


@pytest.fixture(scope="module")
def spawn(
    broker: str,
    death_storages: dict[str, str],
    django_settings: dict[str, Any],
    log_dir: Path,
    tables: None,
) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts prefork nodes (Django configured, both storages); stops them all at the end.

    ``via``: the broker URL the node connects to (a proxy in front of the broker).
    """
    tests_dir = str(Path(django_env.__file__).resolve().parent)
    path = [str(HERE), str(HERE.parents[1]), tests_dir, os.environ.get("PYTHONPATH", "")]
    base_env = {
        **django_env.process_environment(django_settings),
        "PYTHONPATH": os.pathsep.join(filter(None, path)),
    }
    started: list[WorkerProcess] = []

    def start(label: str, queue: str, *, slow: bool, via: str | None = None) -> WorkerProcess:
        kind = "amqp" if broker.startswith("amqp") else "redis"
        env = {**base_env, SLOW_ENV: str(SLOW) if slow else ""}
        worker = start_worker(
            f"{label}-{kind}-{RUN_ID}",
            via or broker,
            [queue],
            death_storages,
            log_dir,
            conf=CONF,
            env=env,
            pool="prefork",
            concurrency=2,
        )
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        stop_all(started)


def _queue(broker: str, label: str) -> str:
    kind = "amqp" if broker.startswith("amqp") else "redis"
    return f"tc-{RUN_ID}-{kind}-{label}"


@pytest.fixture(scope="module")
def node(broker: str, spawn: Callable[..., WorkerProcess]) -> WorkerProcess:
    """One slow node for the pool-process kills (billiard replaces a killed pool process)."""
    return spawn("deaths", _queue(broker, "deaths"), slow=True).wait_ready()


@pytest.fixture(scope="module")
def node_sender(broker: str, death_storages: dict[str, str], node: WorkerProcess) -> Iterator[Any]:
    app = make_app(broker, _queue(broker, "deaths"), death_storages)
    yield app
    app.close()


def _manager(app: Any, label: str, storage: str, task: str = "celerytest.Body") -> TriggerManager:
    manager = open_manager(
        session_uid(f"death-{label}"),
        storage,
        app=app,
        manager=CeleryTestManager.registry_key,
        runners={"celery": CeleryTaskRunner(app)},
    )
    manager.update_configuration({"t_body": {"after": ["go"], "run": task}})
    return manager


def _count(table: str, session: str) -> int:
    with psycopg.connect(PG_DSN) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE session = %s", (session,))
        return int(row.fetchone()[0])  # type: ignore[index]


def _runs(session: str) -> list[tuple[str, str, int]]:
    with psycopg.connect(PG_DSN) as conn:
        rows = conn.execute(
            f"SELECT instance, run_key, pid FROM {RUNS_TABLE} WHERE session = %s ORDER BY 1",
            (session,),
        ).fetchall()
    return [(name, key, pid) for name, key, pid in rows]


def _deliveries(session: str) -> list[tuple[str, int]]:
    with psycopg.connect(PG_DSN) as conn:
        rows = conn.execute(
            f"SELECT task_id, pid FROM {DELIVERIES_TABLE} WHERE session = %s", (session,)
        ).fetchall()
    return [(task_id, pid) for task_id, pid in rows]


def _wait(what: str, ready: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _settle(managers: list[TriggerManager], since: float, label: str) -> float:
    """Wait until no instance is scheduled or running; print and return the seconds taken."""

    def settled() -> bool:
        return all(
            i.status not in (Status.SCHEDULED, Status.RUNNING)
            for m in managers
            for i in m.storage.instances.values()
        )

    deadline = since + SETTLE
    while not settled():
        if time.monotonic() > deadline:
            states = {m.uid: m.storage.debug_repr() for m in managers}
            raise AssertionError(f"{label}: still scheduled/running {SETTLE}s after: {states}")
        time.sleep(0.05)
    took = time.monotonic() - since
    print(f"\n{label}: every instance ended {took:.1f}s after the kill")
    return took


def _statuses(manager: TriggerManager) -> dict[str, str]:
    return {name: i.status.value for name, i in manager.storage.instances.items()}


def _running(manager: TriggerManager, name: str = "t_body#0") -> dict[str, Any]:
    _wait(f"{name} running", lambda: manager.storage[name].status is Status.RUNNING)
    _wait(f"{name}'s body", lambda: _count(RUNS_TABLE, manager.uid) >= 1)
    worker: dict[str, Any] = manager.storage[name].metadata["worker"]
    return worker


def _lost_and_replayed(manager: TriggerManager) -> None:
    assert _statuses(manager) == {"t_body#0": "replayed", "t_body#1": "finished"}
    lost = manager.storage["t_body#0"].metadata
    assert lost["exceptionType"] == "triggers_core.errors.WorkerLost"
    runs = _runs(manager.uid)
    key = f"{manager.uid}#t_body#0"  # the clone sees the run key of the run it replaces
    assert [(name, run_key) for name, run_key, _ in runs] == [("t_body#0", key), ("t_body#1", key)]


@pytest.mark.parametrize("storage", STORAGES)
def test_a_pool_process_killed_before_mark_running_is_redelivered_and_runs_once(
    node: WorkerProcess, node_sender: Any, storage: str
) -> None:
    manager = _manager(node_sender, "pre", storage)
    manager.fire("go")
    _wait("the first delivery", lambda: _count(DELIVERIES_TABLE, manager.uid) >= 1)
    killed = time.monotonic()  # the pool process killed itself before mark-running
    _settle([manager], killed, f"pre-mark-running kill ({storage})")
    assert _statuses(manager) == {"t_body#0": "finished"}
    assert len(_runs(manager.uid)) == 1
    # the message came back (reject_on_worker_lost), or the sweeper sent it again when
    # Celery noticed the death later than the dispatch lease: either way it ran once
    assert _count(DELIVERIES_TABLE, manager.uid) >= 2


class _LockingRunner(CeleryTaskRunner):
    """Takes the session's row lock (another connection) after the fire commit, before it
    publishes: the worker's mark-running then waits for it."""

    def __init__(self, app: Any, lock: Callable[[str], None]) -> None:
        super().__init__(app)
        self._lock = lock

    def dispatch(self, manager: Any, effect: Any) -> None:
        self._lock(manager.uid)
        super().dispatch(manager, effect)


def test_a_pool_process_killed_while_mark_running_waits_for_the_row_lock(
    node: WorkerProcess, node_sender: Any, death_storages: dict[str, str]
) -> None:
    prefix = death_storages["pg"].rsplit("triggers_prefix=", 1)[1]
    locker = psycopg.connect(PG_DSN)
    try:

        def lock(uid: str) -> None:
            locker.execute(f"SELECT 1 FROM {prefix}sessions WHERE uid = %s FOR UPDATE", (uid,))

        manager = _manager(node_sender, "lock", "pg")
        locking = CeleryTestManager(
            manager.storage, runners={"celery": _LockingRunner(node_sender, lock)}
        )
        locking.fire("go")
        _wait("the first delivery", lambda: _count(DELIVERIES_TABLE, manager.uid) >= 1)
        with psycopg.connect(PG_DSN, autocommit=True) as watcher:

            def waiting() -> bool:
                row = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE %s",
                    (f"%{prefix}sessions%",),
                ).fetchone()
                return bool(row and row[0])

            _wait("mark-running to wait for the row lock", waiting)
        with psycopg.connect(PG_DSN) as conn:
            (pid,) = conn.execute(
                f"SELECT pid FROM {DELIVERIES_TABLE} WHERE session = %s", (manager.uid,)
            ).fetchone()  # type: ignore[misc]
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        time.sleep(0.5)  # Celery sees the pool process gone and requeues its message
        locker.rollback()  # release the lock
    finally:
        locker.close()
    _settle([manager], killed, "kill while mark-running waits (pg)")
    # Marking running is one autocommit statement on PostgreSQL: already sent, it may
    # commit after its process died (the server sees the lock released, not the client
    # gone). Then the run holds a lease nobody renews: taken over, replayed as a clone.
    assert _statuses(manager) in (
        {"t_body#0": "finished"},
        {"t_body#0": "replayed", "t_body#1": "finished"},
    )
    assert len(_runs(manager.uid)) == 1
    assert _count(DELIVERIES_TABLE, manager.uid) >= 2, _deliveries(manager.uid)


@pytest.mark.parametrize("storage", STORAGES)
def test_a_pool_process_killed_during_the_body_is_taken_over_and_replayed(
    node: WorkerProcess, node_sender: Any, storage: str
) -> None:
    manager = _manager(node_sender, "body", storage)
    manager.fire("go")
    worker = _running(manager)
    assert worker["node"].startswith(node.name)
    os.kill(int(worker["pid"]), signal.SIGKILL)
    killed = time.monotonic()
    _settle([manager], killed, f"kill during the body ({storage})")
    _lost_and_replayed(manager)
    # however often the killed process's message came back, the body ran twice in all


@pytest.mark.parametrize("storage", STORAGES)
def test_a_pool_process_killed_after_the_finish_commit_before_the_ack(
    node: WorkerProcess, node_sender: Any, storage: str
) -> None:
    manager = _manager(node_sender, "ack", storage)
    manager.fire("go")
    _wait("the finish", lambda: manager.storage["t_body#0"].status is Status.FINISHED)
    finished = time.monotonic()  # the pool process kills itself right after this commit
    _wait("the redelivery", lambda: _count(DELIVERIES_TABLE, manager.uid) == 2)
    print(f"\nkill after the finish ({storage}): redelivered {time.monotonic() - finished:.1f}s")
    _settle([manager], finished, f"kill after the finish commit ({storage})")
    assert _statuses(manager) == {"t_body#0": "finished"}
    assert len(_runs(manager.uid)) == 1


def test_a_whole_node_killed_while_bodies_run_is_recovered_by_the_other_node(
    broker: str, death_storages: dict[str, str], spawn: Callable[..., WorkerProcess]
) -> None:
    # Redis with django-cache, RabbitMQ with PostgreSQL: each broker and each storage once
    storage = "pg" if broker.startswith("amqp") else "dj"
    queue = _queue(broker, "nodes")
    doomed = spawn("doomed", queue, slow=True)
    survivor = spawn("survivor", queue, slow=False)
    doomed.wait_ready()
    survivor.wait_ready()
    app = make_app(broker, queue, death_storages)
    try:
        managers = [_manager(app, "node", storage) for _ in range(4)]
        for manager in managers:
            manager.fire("go")

        def on_doomed() -> list[TriggerManager]:
            return [
                m
                for m in managers
                if m.storage["t_body#0"].status is Status.RUNNING
                and str(m.storage["t_body#0"].metadata["worker"]["node"]).startswith(doomed.name)
            ]

        _wait("a body running on the doomed node", lambda: bool(on_doomed()))
        time.sleep(0.3)  # let its second pool process start one too, if it gets one
        lost = on_doomed()
        doomed.kill()  # SIGKILL to the main process and its pool
        killed = time.monotonic()
        _settle(managers, killed, f"node kill ({storage})")
    finally:
        app.close()
    for manager in managers:
        runs = _runs(manager.uid)
        if manager in lost:
            _lost_and_replayed(manager)
        else:  # run by the survivor, or sent again by its sweeper once the dispatch lease ended
            assert _statuses(manager) == {"t_body#0": "finished"}, manager.storage.debug_repr()
            assert len(runs) == 1
    # (whichever worker's sweeper got there first took the lost runs over: the survivor's,
    # or the other test node's, which sweeps the same storages)


def test_a_hard_time_limit_fails_the_instance_with_the_limit(
    node: WorkerProcess, node_sender: Any
) -> None:
    manager = _manager(node_sender, "hard", "pg", task="celerytest.HardLimit")
    manager.fire("go")
    _running(manager)
    started = time.monotonic()
    _settle([manager], started, "hard time limit of 2s (pg)")
    assert _statuses(manager) == {"t_body#0": "failed"}
    failed = manager.storage["t_body#0"].metadata
    assert failed["exceptionType"] == "billiard.exceptions.TimeLimitExceeded"
    assert "hard time limit (2s) exceeded" in failed["exceptionInfo"]
    assert failed["exceptionContext"]["timeLimit"] == 2
    assert len(_runs(manager.uid)) == 1


def test_a_soft_time_limit_fails_the_instance_in_its_body(
    node: WorkerProcess, node_sender: Any
) -> None:
    manager = _manager(node_sender, "soft", "dj", task="celerytest.SoftLimit")
    manager.fire("go")
    _running(manager)
    _settle([manager], time.monotonic(), "soft time limit of 1s (dj)")
    assert _statuses(manager) == {"t_body#0": "failed"}
    failed = manager.storage["t_body#0"].metadata
    assert failed["exceptionType"] == "billiard.exceptions.SoftTimeLimitExceeded"
    assert len(_runs(manager.uid)) == 1


def test_a_broker_connection_dropped_while_a_body_runs(
    broker: str, death_storages: dict[str, str], spawn: Callable[..., WorkerProcess]
) -> None:
    storage = "dj" if broker.startswith("amqp") else "pg"
    host, port = next((h, p) for _, h, p, url in BROKERS.values() if url == broker)
    queue = _queue(broker, "drop")
    with FreezingProxy((host, port)) as proxy:
        via = broker.replace(f":{port}/", f":{proxy.port}/")
        assert via != broker
        worker = spawn("dropped", queue, slow=True, via=via).wait_ready()
        app = make_app(broker, queue, death_storages)
        try:
            manager = _manager(app, "drop", storage)
            manager.fire("go")
            _running(manager)
            proxy.drop()  # the worker's broker connections are cut mid-body
            dropped = time.monotonic()
            _settle([manager], dropped, f"broker connection dropped ({storage})")
        finally:
            app.close()
    # the body went on and recorded its outcome; the message the broker gave back (on
    # RabbitMQ, at once) was dropped while the run's lease lived
    assert _statuses(manager) == {"t_body#0": "finished"}, worker.log()[-3000:]
    assert len(_runs(manager.uid)) == 1
    assert "Connection to broker lost" in worker.log()
    assert "ignored the message for t_body#0" in worker.log()
