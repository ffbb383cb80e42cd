"""Leases through the manager, on real time and real threads: renewals keep a slow run,
a run nobody renews is taken over and replayed, a taken-over run cannot record its
outcome, and ``ctx.run_key`` stays the same across the replays."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from triggers_core import (
    MemoryStorage,
    MemoryStore,
    Status,
    TaskContext,
    ThreadingTaskRunner,
    TriggerManager,
    TriggerTask,
    engine,
)
from triggers_core.engine.leases import Lease
from triggers_core.runtime.leases import KEEPER
from triggers_core.runtime.recovery import StoreSweeper, sweep_store

RELEASE = threading.Event()
SEEN_KEYS: list[str] = []


class SlowLeased(TriggerTask):
    """Runs longer than its lease; renewals must keep it."""

    name = "tests.leases.SlowLeased"
    lease_seconds: ClassVar[float] = 0.3

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        time.sleep(1.0)
        return {"slept": True}


class Blocking(TriggerTask):
    """Waits for the test, then returns its run key."""

    name = "tests.leases.Blocking"
    lease_seconds: ClassVar[float] = 0.3

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        SEEN_KEYS.append(context.run_key)
        assert RELEASE.wait(timeout=30)
        return {"runKey": context.run_key}


class Quick(TriggerTask):
    name = "tests.leases.Quick"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        SEEN_KEYS.append(context.run_key)
        return {"runKey": context.run_key}


@pytest.fixture
def runner() -> Iterator[ThreadingTaskRunner]:
    runner = ThreadingTaskRunner()
    yield runner
    RELEASE.set()
    runner.join_all()
    RELEASE.clear()
    SEEN_KEYS.clear()


def make(run: str, runner: ThreadingTaskRunner, store: MemoryStore | None = None) -> TriggerManager:
    manager = TriggerManager(
        MemoryStorage(f"leases-{uuid.uuid4().hex}", store or MemoryStore()),
        runners={"threading": runner},
    )
    manager.update_configuration({"t_a": {"after": ["go"], "run": run}})
    return manager


def sweep_until(manager: TriggerManager, done: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, manager.storage.debug_repr()
        sweep_store(manager.storage, lambda s: TriggerManager(s, runners=manager.runners))
        time.sleep(0.05)


def test_renewals_keep_a_run_longer_than_its_lease(runner: ThreadingTaskRunner) -> None:
    manager = make(SlowLeased.name, runner)
    manager.fire("go")
    # Sweep all the time the body runs: a renewed lease is never taken over.
    sweep_until(manager, lambda: manager.storage["t_a#0"].status is Status.FINISHED)
    runner.join_all()
    assert manager.storage["t_a#0"].status is Status.FINISHED
    assert "t_a#1" not in manager.storage
    assert manager.storage.get_lease("t_a#0") is None


def test_a_run_nobody_renews_is_taken_over_and_its_clone_runs(
    runner: ThreadingTaskRunner,
) -> None:
    manager = make(Quick.name, runner)
    manager.runners["threading"]
    # Start t_a#0 as a worker would, under a lease, then "die": nobody renews it.
    state = manager.storage.load_full()
    fired = engine.fire(state.state, "go", now=manager.now())
    manager.storage.compare_and_swap(state.version, fired.state, fired.changes)
    state = manager.storage.load_full()
    lease = Lease("dead-run", manager.now() + timedelta(seconds=0.2), 0.2, {"host": "gone"})
    started = engine.mark_running(state.state, "t_a#0", now=manager.now(), lease=lease)
    manager.storage.compare_and_swap(state.version, started.state, started.changes)
    time.sleep(0.3)
    report = manager.recover()
    assert [(a.instance, a.action) for a in report.actions] == [("t_a#0", "taken over")]
    runner.join_all()
    lost, clone = manager.storage["t_a#0"], manager.storage["t_a#1"]
    assert lost.status is Status.REPLAYED
    assert lost.metadata["exceptionType"] == "triggers_core.errors.WorkerLost"
    assert "gone" in lost.metadata["exceptionInfo"]
    assert clone.status is Status.FINISHED
    assert clone.metadata["result"] == {"runKey": f"{manager.uid}#t_a#0"}


def test_a_taken_over_run_cannot_record_its_outcome(runner: ThreadingTaskRunner) -> None:
    manager = make(Blocking.name, runner)
    manager.fire("go")
    deadline = time.monotonic() + 10
    while manager.storage["t_a#0"].status is not Status.RUNNING or not SEEN_KEYS:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    owner = manager.storage["t_a#0"].metadata["owner"]
    # A sweeper that found the lease expired claims it and takes the instance over
    # (here without waiting: the claim names the record as it is now).
    lease = manager.storage.get_lease("t_a#0")
    assert lease is not None
    assert manager.storage.claim_lease("t_a#0", owner, lease.at, lease.at)
    manager.take_over_instance("t_a#0", owner)
    RELEASE.set()
    runner.join_all()
    lost, clone = manager.storage["t_a#0"], manager.storage["t_a#1"]
    assert lost.status is Status.REPLAYED  # the first body's result was refused
    assert "result" not in lost.metadata
    assert clone.status is Status.FINISHED
    assert [f"{manager.uid}#t_a#0"] * 2 == SEEN_KEYS
    assert all(held.name != "t_a#0" for held in KEEPER.held())


def test_an_operator_can_fail_a_running_instance(runner: ThreadingTaskRunner) -> None:
    manager = make(Blocking.name, runner)
    manager.fire("go")
    deadline = time.monotonic() + 10
    while manager.storage["t_a#0"].status is not Status.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    failed = manager.fail_instance("t_a#0", "hung on a remote call", actor="alice")
    assert failed.status is Status.FAILED
    RELEASE.set()
    runner.join_all()
    final = manager.storage["t_a#0"]
    assert final.status is Status.FAILED
    assert final.metadata["exceptionType"] == "triggers_core.errors.FailedByOperator"
    assert final.metadata["actor"] == "alice"
    assert "result" not in final.metadata


def test_a_threading_manager_starts_one_sweeper_per_store(runner: ThreadingTaskRunner) -> None:
    store = MemoryStore()
    first = TriggerManager(MemoryStorage("s1", store), runners={"threading": runner})
    second = TriggerManager(MemoryStorage("s2", store), runners={"threading": runner})
    sweeper = StoreSweeper.for_store(first.storage, TriggerManager)
    assert sweeper is not None
    assert sweeper is StoreSweeper.for_store(second.storage, TriggerManager)
    sweeper.stop()
    # A manager on a fake clock never starts one (its leases are in another time).
    fake = datetime(2024, 1, 1, tzinfo=UTC)
    other = MemoryStore()
    TriggerManager(MemoryStorage("s3", other), clock=lambda: fake)
    assert ("memory", id(other)) not in StoreSweeper._running
