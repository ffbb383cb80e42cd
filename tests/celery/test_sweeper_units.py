"""The worker's sweeper without a worker: its settings, one sweep, its bootstep, its stop.

The sweeps act on SQLite storages and send what they dispatch through kombu's
in-memory transport; ``test_worker_deaths.py`` runs the same sweeper inside
real prefork workers.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from kombu import Connection
from worker_app import CeleryTestManager, make_app

from triggers_celery import CeleryTaskRunner
from triggers_celery.sweeper import (
    SweeperStep,
    WorkerSweeper,
    dispatch_lease,
    sweep_interval,
    tick_interval,
)
from triggers_core import SessionState, Status, engine, open_storage
from triggers_core.engine.leases import DEFAULT_DISPATCH_LEASE, Due, DueKind
from triggers_core.engine.scopes import Changes
from triggers_core.engine.state import TaskInstance
from triggers_core.runtime.storage import Storage

CONFIG = {"t_a": {"after": ["go"], "run": "triggers.DevNullTask"}}


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sweep.db'}?triggers_create_schema=true"


@pytest.fixture
def app(sqlite_url: str) -> Iterator[Celery]:
    app = make_app(f"memory://localhost/{uuid.uuid4().hex}", "sweep", {"default": sqlite_url})
    yield app
    app.close()


def _lost_run(storage: Storage, expired: datetime) -> None:
    """``t_a#0`` running under a lease that expired at ``expired`` (its worker died)."""
    tasks = engine.update_configuration(SessionState(), CONFIG).state.tasks
    started = (expired - timedelta(seconds=30)).isoformat()
    instance = TaskInstance(
        name="t_a#0",
        task_name="t_a",
        status=Status.RUNNING,
        kwargs={"go": {}},
        metadata={
            "created": started,
            "timestamps": {"running": started},
            "owner": "dead-run",
            "worker": {"host": "gone", "pid": 1, "node": "w1@gone"},
            "leaseExpires": expired.isoformat(),
            "leaseSeconds": 30,
        },
    )
    state = SessionState(tasks=tasks, instances={"t_a#0": instance}, counters={"t_a": 1})
    names = frozenset({"t_a#0"})
    due = {"t_a#0": Due(DueKind.LEASE, expired, "dead-run")}
    storage.compare_and_swap(
        None, state, Changes(instances=names, created=names, config=True, due=due)
    )


def test_the_settings_and_their_defaults() -> None:
    assert sweep_interval({}) == 10.0
    assert dispatch_lease({}) == DEFAULT_DISPATCH_LEASE == 60.0
    assert sweep_interval({"triggers_sweep_interval": None}) == 0.0
    assert sweep_interval({"triggers_sweep_interval": 0}) == 0.0
    assert dispatch_lease({"triggers_dispatch_lease": 3}) == 3.0
    for bad in (-1, "10", True, float("nan")):
        with pytest.raises(ValueError, match=r"triggers_sweep_interval.*must be a number >= 0"):
            sweep_interval({"triggers_sweep_interval": bad})


def test_the_bootstep_is_left_out_when_the_interval_is_off(app: Celery) -> None:
    assert SweeperStep in app.steps["worker"]  # bind_tasks added it
    worker = SimpleNamespace(app=app)
    step = SweeperStep(worker)
    assert step.include_if(worker)
    app.conf.triggers_sweep_interval = 0
    assert not step.include_if(worker)
    app.conf.triggers_sweep_interval = "often"
    assert not step.include_if(worker)  # logged, and the worker still starts


def test_one_sweep_takes_over_a_lost_run_and_sends_its_clone(
    app: Celery, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CeleryTestManager(
        sqlite_url, f"sweep-{uuid.uuid4().hex}", runners={"celery": CeleryTaskRunner(app)}
    )
    _lost_run(manager.storage, datetime.now(UTC) - timedelta(seconds=5))
    sweeper = WorkerSweeper(app, interval=1.0, lease=3.0)
    with caplog.at_level(logging.WARNING):
        assert sweeper.sweep_once() == 1
        assert sweeper.sweep_once() == 0  # one sweeper acts once
    lost = manager.storage["t_a#0"]
    assert lost.status is Status.REPLAYED
    assert lost.metadata["exceptionType"] == "triggers_core.errors.WorkerLost"
    assert lost.metadata["exceptionContext"]["worker"]["node"] == "w1@gone"
    assert manager.storage["t_a#1"].status is Status.SCHEDULED
    with Connection(app.conf.broker_url) as conn:
        raw = conn.default_channel.basic_get("sweep", no_ack=True)
    assert raw is not None
    kwargs: dict[str, Any] = raw.payload[1]
    # the message names the configured storage, and the manager class the sweeper built
    assert kwargs == {
        "manager": "default",
        "storage": "default",
        "session": manager.uid,
        "instance": "t_a#1",
    }
    assert "recovered: t_a#0" in caplog.text
    sweeper.stop()


def test_storages_it_cannot_sweep_are_logged_and_never_stop_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "old.db"
    open_storage(f"sqlite:///{old}?triggers_create_schema=true", "x").close()
    with sqlite3.connect(old) as conn:  # tables of an earlier version: no due index
        conn.execute("DROP TABLE triggers_due")
    storages = {
        "memory": "memory://here",
        "old": f"sqlite:///{old}",
        "down": "postgresql+psycopg://nobody@127.0.0.1:9/none?triggers_connect_timeout=1",
    }
    app = make_app(f"memory://localhost/{uuid.uuid4().hex}", "sweep", storages)
    try:
        sweeper = WorkerSweeper(app, interval=0.05, lease=3.0)
        with caplog.at_level(logging.WARNING):
            sweeper.start()
            for _ in range(200):
                if sweeper.sweeps >= 2:
                    break
                sweeper._stop.wait(0.05)
            sweeper.stop()
        assert sweeper.sweeps >= 2
        assert not sweeper._thread.is_alive()
        assert "cannot open storage 'down' to sweep it" in caplog.text or (
            "sweeping storage 'down' failed" in caplog.text
        )
        assert "not sweeping storage 'old': it keeps no leases" in caplog.text
        assert caplog.text.count("not sweeping storage 'old'") == 1  # said once, not per sweep
        assert "sweeping storage 'old' failed" not in caplog.text
        assert "'memory'" not in caplog.text  # refused by workers anyway, silently skipped
    finally:
        app.close()


def test_between_sweeps_the_sweeper_ticks_due_timers(app: Celery, sqlite_url: str) -> None:
    assert tick_interval({}) == 1.0
    assert tick_interval({"triggers_tick_interval": None}) == 0.0
    manager = CeleryTestManager(
        sqlite_url, f"tick-{uuid.uuid4().hex}", runners={"celery": CeleryTaskRunner(app)}
    )
    manager.update_configuration(
        {"t_a": {"after": ["go"], "delay": "1s", "run": "triggers.DevNullTask"}}
    )
    manager.fire("go")
    assert manager.storage["t_a#0"].status is Status.UNSTARTED  # delayed
    sweeper = WorkerSweeper(app, interval=60.0, lease=3.0, tick=0.1)
    sweeper.start()
    try:
        deadline = time.monotonic() + 20
        while manager.storage["t_a#0"].status is Status.UNSTARTED:
            assert time.monotonic() < deadline, "the delay's timer never fired"
            time.sleep(0.05)
        assert manager.storage["t_a#0"].status is Status.SCHEDULED
        assert sweeper.sweeps == 1  # the tick fired it, not a second sweep
    finally:
        sweeper.stop()
