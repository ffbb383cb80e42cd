"""Timers on real prefork workers: ``delay``, a ``within``/``onMiss`` window and a retry's
cooldown, fired by the workers' own clock (the sweeper bootstep's tick, every second).

Two nodes (``--pool=prefork``) on Redis consume one queue of their own and both
tick the same storages (PostgreSQL, and ``django-cache://`` on Redis), so every
timer has two processes racing to fire it. Each session fires one trigger and
nothing else: whatever happens later comes from the workers' clocks. Asserted
from the storage and the side-effect table: each timer fired exactly once (one
instance each, one row per run of ``celerytest.Record``) and no more than three
seconds after its due time (the statuses' timestamps are the workers' clocks).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import django_env
import pytest
from processes import BROKERS, HERE, RUN_ID, WorkerProcess, start_worker, stop_all
from services import require_service
from sessions import recorded_effects, session_uid
from worker_app import CeleryTestManager, make_app

from triggers_celery import CeleryTaskRunner, open_manager
from triggers_core import Status, TriggerManager

pytestmark = [pytest.mark.service, pytest.mark.slow]

#: The workers' clock ticks every second (the default, stated); sweeps are rare here.
CONF = {"triggers_sweep_interval": 30, "triggers_tick_interval": 1}
#: A timer must fire within this many seconds of its due time.
LATE = 3.0
CONFIG = {
    "t_later": {"after": ["go"], "run": "celerytest.Record", "delay": "1s"},
    "t_window": {"after": ["go", "never"], "run": "celerytest.Record", "within": "2s"}
    | {"onMiss": "late"},
    "t_chase": {"after": ["late"], "run": "celerytest.Record"},
    # Retries twice, each after a cooldown of one second (tests/celery/worker_app.py).
    "t_retry": {"after": ["go"], "run": "celerytest.CooldownRetry"},
}
FINAL = {
    "t_later#0": "finished",
    "t_window#0": "expired",
    "t_window#1": "unstarted",  # the next window, not opened (nothing fired since)
    "t_chase#0": "finished",
    "t_retry#0": "replayed",
    "t_retry#1": "replayed",
    "t_retry#2": "finished",
}


@pytest.fixture(scope="module")
def timer_storages(pg_url: str, django_settings: dict[str, Any]) -> Iterator[dict[str, str]]:
    """Tables and keys of their own: only these workers tick these sessions."""
    require_service("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)
    from triggers_backends.sqlalchemy import create_schema, drop_schema, shared_engine

    base = pg_url.split("?", 1)[0]
    tables = f"tt{uuid.uuid4().hex[:8]}_"
    engine = shared_engine(base)
    create_schema(engine, tables)
    try:
        yield {
            "pg": f"{base}?triggers_prefix={tables}",
            "dj": f"django-cache://{django_env.REDIS}?prefix=tt{uuid.uuid4().hex[:8]}:",
        }
    finally:
        drop_schema(engine, tables)


@pytest.fixture(scope="module")
def redis_broker() -> str:
    label, host, port, url = BROKERS["redis"]
    require_service(label, host, port)
    return url


@pytest.fixture(scope="module")
def timer_queue() -> str:
    return f"tc-{RUN_ID}-redis-timers"


@pytest.fixture(scope="module")
def nodes(
    redis_broker: str,
    timer_queue: str,
    timer_storages: dict[str, str],
    django_settings: dict[str, Any],
    log_dir: Path,
) -> Iterator[list[WorkerProcess]]:
    """Two prefork nodes (two pool processes each) on the queue, both ticking."""
    tests_dir = str(Path(django_env.__file__).resolve().parent)
    path = [str(HERE), str(HERE.parents[1]), tests_dir, os.environ.get("PYTHONPATH", "")]
    env = {
        **django_env.process_environment(django_settings),
        "PYTHONPATH": os.pathsep.join(filter(None, path)),
    }
    started = [
        start_worker(
            f"timers{n}-{RUN_ID}",
            redis_broker,
            [timer_queue],
            timer_storages,
            log_dir,
            conf=CONF,
            env=env,
            pool="prefork",
            concurrency=2,
        )
        for n in (1, 2)
    ]
    try:
        for node in started:
            node.wait_ready()
        yield started
    finally:
        stop_all(started)


@pytest.fixture(scope="module")
def timer_sender(
    redis_broker: str, timer_queue: str, timer_storages: dict[str, str]
) -> Iterator[Any]:
    app = make_app(redis_broker, timer_queue, timer_storages)
    yield app
    app.close()


def _manager(app: Any, storage: str) -> TriggerManager:
    manager = open_manager(
        session_uid(f"timers-{storage}"),
        storage,
        app=app,
        manager=CeleryTestManager.registry_key,
        runners={"celery": CeleryTaskRunner(app)},
    )
    manager.update_configuration(CONFIG)
    return manager


def _wait(what: str, ready: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _at(stamp: object) -> datetime:
    assert isinstance(stamp, str), stamp
    return datetime.fromisoformat(stamp)


def _late(manager: TriggerManager, name: str, due_key: str, status: Status) -> float:
    """Seconds from ``name``'s due time (metadata ``due_key``) to when it reached ``status``."""
    metadata = manager.storage[name].metadata
    late = _at(metadata["timestamps"][status.value]) - _at(metadata[due_key])
    assert timedelta(0) <= late < timedelta(seconds=LATE), (name, late)
    return late.total_seconds()


@pytest.mark.parametrize("storage", ["pg", "dj"])
def test_delay_window_and_retry_cooldown_fire_once_each_on_time(
    nodes: list[WorkerProcess], timer_sender: Any, storage: str
) -> None:
    manager = _manager(timer_sender, storage)
    manager.fire("go", {"n": 1})
    # Nothing is scheduled yet but the first retry attempt: the rest waits on timers.
    assert manager.storage["t_later#0"].status is Status.UNSTARTED
    assert manager.storage["t_window#0"].status is Status.UNSTARTED

    def settled() -> bool:
        statuses = {n: i.status.value for n, i in manager.storage.instances.items()}
        return statuses == FINAL

    _wait("every timer to fire", settled)
    time.sleep(2 * CONF["triggers_tick_interval"])  # and nothing more happens after
    statuses = {n: i.status.value for n, i in manager.storage.instances.items()}
    assert statuses == FINAL, manager.storage.debug_repr()
    # One run each of what the timers scheduled (a second run would fail on the key).
    assert [name for name, _ in recorded_effects(manager.uid)] == ["t_chase#0", "t_later#0"]
    lateness = {
        "delay": _late(manager, "t_later#0", "delayedUntil", Status.SCHEDULED),
        "window": _late(manager, "t_window#0", "deadline", Status.EXPIRED),
        "retry 1": _late(manager, "t_retry#1", "delayedUntil", Status.SCHEDULED),
        "retry 2": _late(manager, "t_retry#2", "delayedUntil", Status.SCHEDULED),
    }
    assert manager.storage["t_retry#1"].metadata["retryCooldown"] == 1.0
    missed = manager.storage.latest_kwargs["late"]
    assert missed["instance"] == "t_window#0"
    assert missed["missing"] == ["never"]
    print(f"\n{storage}: seconds late: " + ", ".join(f"{k} {v:.2f}" for k, v in lateness.items()))
