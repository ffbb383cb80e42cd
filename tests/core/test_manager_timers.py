"""Time conditions through the manager: real time on every backend, and a fixed clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from triggers_core import TaskContext, TriggerManager, TriggerTask, tick
from triggers_core.engine.state import Status
from triggers_core.runtime.memory import MemoryStorage, MemoryStore
from triggers_core.runtime.runners import ThreadingTaskRunner
from triggers_core.runtime.storage import Storage
from triggers_core.testing.assertions import (
    assert_instance_expired,
    assert_instance_finished,
    assert_instance_unstarted,
)
from triggers_core.testing.sample_tasks import PassThruTask

PASS = PassThruTask.name
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def wait_for(manager: TriggerManager, name: str, status: Status, bound: float = 20) -> None:
    """Poll (bounded) until the store's own clock thread moved ``name`` to ``status``."""
    deadline = time.monotonic() + bound
    while True:
        storage = manager.storage
        if name in storage and storage[name].status is status:
            return
        assert time.monotonic() < deadline, storage.debug_repr()
        time.sleep(0.05)


# -- real time: the in-process clock thread of the store, on every backend ----------------


def test_a_delay_runs_the_task_later_without_a_call(
    manager: TriggerManager, runner: ThreadingTaskRunner
) -> None:
    manager.update_configuration({"t_send": {"after": ["signed"], "run": PASS, "delay": "1s"}})
    manager.fire("signed", {"who": "ann"})
    waiting = assert_instance_unstarted(manager, "t_send#0")
    assert "delayedUntil" in waiting.metadata
    wait_for(manager, "t_send#0", Status.FINISHED)
    runner.join_all()
    assert_instance_finished(manager, "t_send#0", {"kwargs": {"signed": {"who": "ann"}}})


def test_a_window_expires_by_itself_and_its_on_miss_task_runs(
    manager: TriggerManager, runner: ThreadingTaskRunner
) -> None:
    manager.update_configuration(
        {
            "t_pay": {"after": ["ordered", "paid"], "run": PASS, "within": "1s"}
            | {"onMiss": "late"},
            "t_chase": {"after": ["late"], "run": PASS},
        }
    )
    manager.fire("ordered", {"order": 7})
    wait_for(manager, "t_chase#0", Status.FINISHED)
    runner.join_all()
    expired = assert_instance_expired(manager, "t_pay#0")
    assert expired.kwargs == {"ordered": {"order": 7}}
    result = manager.storage["t_chase#0"].metadata["result"]["kwargs"]["late"]
    assert result["missing"] == ["paid"]
    assert result["instance"] == "t_pay#0"


class RetryAfterASecondTask(TriggerTask):
    """Asks to retry once, after a cooldown of one second."""

    name: ClassVar[str] = "tests.core.timers.RetryAfterASecond"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        if context.retries == 0:
            self.retry(cooldown=1.0)
        return {"retries": context.retries}


def test_a_retry_cooldown_is_served_by_the_clock_thread(
    manager: TriggerManager, runner: ThreadingTaskRunner
) -> None:
    """A one-second cooldown on real time: the retry runs about a second later (the store's
    clock thread ticks every second), never earlier, and no thread sleeps meanwhile."""
    manager.update_configuration({"t_try": {"after": ["go"], "run": RetryAfterASecondTask.name}})
    manager.fire("go")
    runner.join_all()  # the first run is done; nothing is dispatched during the cooldown
    clone = assert_instance_unstarted(manager, "t_try#1")
    due = datetime.fromisoformat(clone.metadata["delayedUntil"])
    assert runner.pending == 0
    wait_for(manager, "t_try#1", Status.FINISHED)
    runner.join_all()
    finished = assert_instance_finished(manager, "t_try#1", {"retries": 1})
    started = datetime.fromisoformat(finished.metadata["timestamps"]["scheduled"])
    assert due <= started < due + timedelta(seconds=2), (due, started)


# -- a fixed clock: manager.advance ----------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_manager_advance_applies_the_due_timers_of_the_session() -> None:
    clock, runner = Clock(), ThreadingTaskRunner()
    manager = TriggerManager(
        MemoryStorage("s", MemoryStore()), runners={"threading": runner}, clock=clock
    )
    manager.update_configuration(
        {
            "t_pay": {"after": ["ordered", "paid"], "run": PASS, "within": "24h"}
            | {"onMiss": "late"},
            "t_chase": {"after": ["late"], "run": PASS, "delay": "PT1H"},
        }
    )
    manager.fire("ordered")
    clock.now = T0 + timedelta(hours=23)
    assert manager.advance() == []
    clock.now = T0 + timedelta(hours=24)
    changed = manager.advance()
    assert [(i.name, i.status.value) for i in changed] == [
        ("t_chase#0", "unstarted"),
        ("t_pay#0", "expired"),
        ("t_pay#1", "unstarted"),
    ]
    assert manager.advance() == []  # idempotent
    changed = manager.advance(T0 + timedelta(hours=25))
    assert [(i.name, i.status.value) for i in changed] == [("t_chase#0", "scheduled")]
    runner.join_all()
    assert_instance_finished(manager, "t_chase#0")


def test_tick_by_url_fires_the_due_timers_of_a_sqlite_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'timers.db'}"
    clock = Clock()
    for uid in ("a", "b"):
        manager = TriggerManager(url, uid, clock=clock)
        manager.update_configuration(
            {"t_x": {"after": ["go", "more"], "run": PASS, "within": "90s"}}
        )
        manager.fire("go")
    early = tick(url, now=T0 + timedelta(seconds=89))
    assert early.acted == ()
    report = tick(url, now=T0 + timedelta(seconds=90))
    assert sorted((a.session, a.instance, a.action) for a in report.acted) == [
        ("a", "t_x#0", "timer fired"),
        ("b", "t_x#0", "timer fired"),
    ]
    assert tick(url, now=T0 + timedelta(days=1)).acted == ()
    check: Callable[[str], Storage] = lambda uid: TriggerManager(url, uid).storage  # noqa: E731
    assert check("a")["t_x#0"].status is Status.EXPIRED


def test_the_fake_clock_ticks_every_store_its_managers_use() -> None:
    from triggers_core.testing import FakeClock

    clock, runner = FakeClock(T0), ThreadingTaskRunner()
    store = MemoryStore()
    config = {"t_x": {"after": ["go"], "run": PASS, "delay": "2h"}}
    managers = [
        TriggerManager(MemoryStorage(uid, store), runners={"threading": runner}, clock=clock)
        for uid in ("one", "two")
    ]
    for manager in managers:
        manager.update_configuration(config)
        manager.fire("go")
    assert clock.now == T0  # reading it does not move it
    assert clock.advance("PT1H59M") == []
    fired = clock.advance(60)
    assert sorted((a.session, a.instance) for a in fired) == [("one", "t_x#0"), ("two", "t_x#0")]
    runner.join_all()
    for manager in managers:
        assert_instance_finished(manager, "t_x#0")
    stepping = FakeClock(T0, step="1s")
    assert [stepping(), stepping()] == [T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
