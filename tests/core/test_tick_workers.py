"""``tick_store`` committing the due sessions of a tick on several threads (``tick_workers``)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from triggers_core import TriggerManager
from triggers_core.engine.leases import DueKind
from triggers_core.engine.state import Status
from triggers_core.runtime.clock import _DueSessions, tick_store
from triggers_core.runtime.memory import MemoryStorage, MemoryStore
from triggers_core.runtime.storage import Storage
from triggers_core.testing._contract_support import RecordingRunner, race_in_threads

T0 = datetime(2025, 1, 1, tzinfo=UTC)
CONFIG = {
    "t_a": {"after": ["go"], "run": "contract_task", "delay": "1h"},
    "t_b": {"after": ["go"], "run": "contract_task", "delay": "2h"},
}


class PooledStorage(MemoryStorage):
    """A memory storage that asks for the threaded tick (as network storages do)."""

    tick_workers: ClassVar[int] = 4


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _seed(store: MemoryStore, sessions: int) -> list[str]:
    """Sessions fired a second apart: t_a#0 due at 1 h + s seconds, t_b#0 at 2 h + s."""
    uids = [f"pool-{s}" for s in range(sessions)]
    for s, uid in enumerate(uids):
        manager = TriggerManager(
            PooledStorage(uid, store),
            runners={"rec": RecordingRunner()},
            default_runner="rec",
            clock=Clock(T0 + timedelta(seconds=s)),
        )
        manager.sweep_interval = None
        manager.update_configuration(CONFIG)
        manager.fire("go")
    return uids


def _factory(runner: RecordingRunner, threads: set[str], pause: float = 0.0) -> Any:
    def build(storage: Storage) -> TriggerManager:
        threads.add(threading.current_thread().name)
        time.sleep(pause)  # as a network round trip would: the other threads go on
        manager = TriggerManager(storage, runners={"rec": runner}, default_runner="rec")
        manager.sweep_interval = None
        return manager

    return build


def test_a_pooled_tick_fires_each_timer_once_and_reports_them_in_due_order() -> None:
    store, runner, threads = MemoryStore(), RecordingRunner(), set[str]()
    uids = _seed(store, 40)
    storage = PooledStorage(uids[0], store)
    now = T0 + timedelta(hours=2, seconds=19)  # every t_a, and t_b of sessions 0..19
    report = tick_store(storage, _factory(runner, threads, 0.01), now=now)
    fired = [(a.session, a.instance) for a in report.actions if a.action == "timer fired"]
    expected = [(uid, "t_a#0") for uid in uids] + [(uid, "t_b#0") for uid in uids[:20]]
    assert fired == expected  # oldest due first, as one thread would report them
    assert sorted(runner.dispatched) == sorted(name for _, name in expected)
    assert len({t for t in threads if t.startswith("triggers-tick")}) > 1  # really in parallel
    for uid in uids[:20]:
        session = storage.session(uid)
        assert session.get_instance("t_a#0").status is Status.SCHEDULED
        assert session.get_instance("t_b#0").status is Status.SCHEDULED
    assert storage.session(uids[20]).get_instance("t_b#0").status is Status.UNSTARTED
    assert len(storage.due_entries(DueKind.TIMER, T0 + timedelta(days=1), limit=1000)) == 20
    assert report.acted[0].detail == "scheduled (its delay ended)"


def test_a_dry_run_of_a_pooled_tick_changes_nothing() -> None:
    store, runner, threads = MemoryStore(), RecordingRunner(), set[str]()
    uids = _seed(store, 5)
    storage = PooledStorage(uids[0], store)
    report = tick_store(
        storage, _factory(runner, threads), now=T0 + timedelta(hours=3), dry_run=True
    )
    assert len(report.actions) == 10
    assert runner.dispatched == []
    assert storage.session(uids[4]).get_instance("t_b#0").status is Status.UNSTARTED


class BatchedStorage(PooledStorage):
    """A pooled memory storage whose tick reads its due sessions 7 at a time first
    (``load_sessions``; the memory storage's default loads them one by one)."""

    tick_load_batch: ClassVar[int] = 7


class LoneBatchedStorage(MemoryStorage):
    """One ticking thread, batch loads of 7."""

    tick_load_batch: ClassVar[int] = 7


def test_a_batched_tick_fires_each_timer_once_from_the_loaded_sessions() -> None:
    store, runner, threads = MemoryStore(), RecordingRunner(), set[str]()
    uids = _seed(store, 40)
    storage = BatchedStorage(uids[0], store)
    now = T0 + timedelta(hours=2, seconds=19)
    report = tick_store(storage, _factory(runner, threads, 0.01), now=now)
    fired = [(a.session, a.instance) for a in report.actions if a.action == "timer fired"]
    expected = [(uid, "t_a#0") for uid in uids] + [(uid, "t_b#0") for uid in uids[:20]]
    assert fired == expected
    assert sorted(runner.dispatched) == sorted(name for _, name in expected)
    for uid in uids[:20]:  # both timers of a session: the second loaded again
        assert storage.session(uid).get_instance("t_b#0").status is Status.SCHEDULED
    assert storage.session(uids[20]).get_instance("t_b#0").status is Status.UNSTARTED
    assert len(storage.due_entries(DueKind.TIMER, T0 + timedelta(days=1), limit=1000)) == 20


def test_a_lone_ticker_commits_the_oldest_due_session_first() -> None:
    store, runner = MemoryStore(), RecordingRunner()
    uids = _seed(store, 30)
    order: list[str] = []

    def build(storage: Storage) -> TriggerManager:
        order.append(storage.uid)
        manager = TriggerManager(storage, runners={"rec": runner}, default_runner="rec")
        manager.sweep_interval = None
        return manager

    report = tick_store(LoneBatchedStorage(uids[0], store), build, now=T0 + timedelta(hours=1.5))
    assert order == uids  # t_a#0 of session s is due s seconds after that of session 0
    assert len(report.acted) == 30


def test_a_stale_batch_read_loses_its_swap_and_the_timer_fires_once() -> None:
    """Another ticker applies the timers after this tick's batch read: the commits on the
    stale snapshots conflict, the retries find nothing due, nothing fires twice."""
    store, runner = MemoryStore(), RecordingRunner()
    uids = _seed(store, 10)
    now = T0 + timedelta(hours=1.5)
    other = RecordingRunner()

    class Racing(LoneBatchedStorage):
        def load_sessions(self, wanted: Any) -> Any:
            snapshots = super().load_sessions(wanted)
            tick_store(MemoryStorage(uids[0], store), _factory(other, set()), now=now)
            return snapshots

    report = tick_store(Racing(uids[0], store), _factory(runner, set()), now=now)
    assert runner.dispatched == []
    assert sorted(other.dispatched) == ["t_a#0"] * 10
    assert [a.action for a in report.actions] == ["left"] * 10


@pytest.mark.parametrize(
    ("storage_class", "sessions", "bound"),
    [(PooledStorage, 60, 120), (BatchedStorage, 500, 300)],  # 120 and 1,000 timers due
    ids=["pooled", "batched"],
)
def test_two_tickers_racing_fire_each_timer_once(
    storage_class: type[PooledStorage], sessions: int, bound: float
) -> None:
    store, runner = MemoryStore(), RecordingRunner()
    uids = _seed(store, sessions)

    def work(index: int, start: Any) -> list[tuple[str, str]]:
        storage = storage_class(uids[index], store)
        start.wait(timeout=30)
        report = tick_store(
            storage, _factory(runner, set()), now=T0 + timedelta(hours=3), limit=1000
        )
        return [(a.session, a.instance) for a in report.acted]

    fired = race_in_threads(work, threads=2, timeout=bound)
    everything = fired[0] + fired[1]
    assert len(everything) == len(set(everything)) == 2 * sessions  # each timer by one ticker
    assert sorted(runner.dispatched) == ["t_a#0"] * sessions + ["t_b#0"] * sessions


def test_the_due_sessions_are_each_handed_out_once_however_the_rest_is_rotated() -> None:
    sessions = [f"s{n}" for n in range(50)]
    queue = _DueSessions(sessions)
    taken = queue.take(3)
    assert taken == ["s0", "s1", "s2"]
    for _ in range(20):
        queue.rotate()
        got = queue.take(2)
        taken += got
        assert got  # never runs dry while sessions remain
    taken += queue.take(1000)
    assert sorted(taken) == sorted(sessions)
    assert len(taken) == 50
    assert queue.take(5) == []
