"""The background sweeper of AsyncTriggerManager: a task of the event loop that ticks the
store's clock and recovers lost runs, so an asyncio application that never calls
``advance()`` or ``recover()`` still sees its timers fire and its lost runs moved on.

Real time, short durations (``delay``/``within`` of 1 s, a tick every second); every
wait is bounded. Runs on the in-memory store and on SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from triggers_backends.sqlalchemy.asyncio import dispose_async_engines
from triggers_core import (
    AsyncMemoryStorage,
    AsyncTriggerManager,
    MemoryStorage,
    MemoryStore,
    Status,
    TaskContext,
    TriggerTask,
    engine,
)
from triggers_core.engine.leases import Lease
from triggers_core.runtime.async_storage import AsyncStorage
from triggers_core.runtime.async_sweeper import AsyncStoreSweeper, asweep_store, atick_store

QUICK = "tests.async_sweeper.Quick"


class Quick(TriggerTask):
    name = QUICK

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {"runKey": context.run_key, "kwargs": dict(context.trigger_kwargs)}


class Unswept(AsyncTriggerManager):
    """A manager whose application ticks and recovers by itself."""

    sweep_interval = None


@pytest.fixture(params=["memory", "sqlite"])
def open_storage(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[str], AsyncStorage]]:
    """``open(uid)``: a session's async storage on a store of this test's own."""
    if request.param == "memory":
        store = MemoryStore()
        yield lambda uid: AsyncMemoryStorage(uid, store)
        return
    from triggers_core.runtime.registry import open_async_storage

    url = f"sqlite+aiosqlite:///{tmp_path / 'sweeper.db'}?triggers_create_schema=true"
    yield lambda uid: open_async_storage(url, uid)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run ``scenario`` on a loop of its own; no sweeper task outlives it."""

    async def main() -> None:
        try:
            await scenario()
        finally:
            await dispose_async_engines()  # stops the loop's sweepers first
            assert not AsyncStoreSweeper._running.get(asyncio.get_running_loop())

    asyncio.run(main())


async def wait_for(
    manager: AsyncTriggerManager, name: str, status: Status, bound: float = 10.0
) -> Any:
    """Poll until ``name`` has ``status`` (failing after ``bound`` seconds)."""
    deadline = time.monotonic() + bound
    while True:
        instances = await manager.instances()
        found = instances.get(name)
        if found is not None and found.status is status:
            return found
        assert time.monotonic() < deadline, {n: i.status.value for n, i in instances.items()}
        await asyncio.sleep(0.05)


def test_a_delayed_instance_runs_without_anyone_calling_advance(
    open_storage: Callable[[str], AsyncStorage],
) -> None:
    async def scenario() -> None:
        manager = AsyncTriggerManager(open_storage(f"sw-{uuid.uuid4().hex[:12]}"))
        await manager.update_configuration(
            {"later": {"after": ["go"], "run": QUICK, "delay": "1s"}}
        )
        assert await manager.fire("go", {"n": 1}) == []  # delayed: nothing scheduled yet
        assert AsyncStoreSweeper.running(manager.storage) is not None
        done = await wait_for(manager, "later#0", Status.FINISHED)
        assert done.metadata["result"]["kwargs"] == {"go": {"n": 1}}
        scheduled = datetime.fromisoformat(done.metadata["timestamps"]["scheduled"])
        assert scheduled >= datetime.fromisoformat(done.metadata["delayedUntil"])
        await manager.join()
        await manager.aclose()

    run(scenario)


def test_a_window_that_closes_expires_and_fires_its_on_miss_trigger(
    open_storage: Callable[[str], AsyncStorage],
) -> None:
    async def scenario() -> None:
        manager = AsyncTriggerManager(open_storage(f"sw-{uuid.uuid4().hex[:12]}"))
        await manager.update_configuration(
            {
                "pay": {
                    "after": ["ordered", "paid"],
                    "within": "1s",
                    "onMiss": "late",
                    "run": QUICK,
                },
                "remind": {"after": ["late"], "run": QUICK},
            }
        )
        await manager.fire("ordered")
        reminded = await wait_for(manager, "remind#0", Status.FINISHED)
        assert reminded.kwargs["late"]["missing"] == ["paid"]
        assert (await manager.get_instance("pay#0")).status is Status.EXPIRED
        await manager.join()
        await manager.aclose()

    run(scenario)


def test_without_a_sweeper_the_delay_waits_for_advance() -> None:
    """The sweeper is what moved the timers above: with none, they wait for advance()."""

    async def scenario() -> None:
        manager = Unswept(AsyncMemoryStorage(f"sw-{uuid.uuid4().hex[:12]}", MemoryStore()))
        await manager.update_configuration(
            {"later": {"after": ["go"], "run": QUICK, "delay": "1s"}}
        )
        await manager.fire("go")
        assert AsyncStoreSweeper.running(manager.storage) is None
        await asyncio.sleep(2.2)  # past the delay and two ticks a sweeper would have made
        assert (await manager.get_instance("later#0")).status is Status.UNSTARTED
        assert [i.name for i in await manager.advance()] == ["later#0"]
        await wait_for(manager, "later#0", Status.FINISHED)
        await manager.join()

    run(scenario)


def test_a_manager_with_a_clock_of_its_own_starts_no_sweeper() -> None:
    async def scenario() -> None:
        now = datetime(2026, 1, 1, tzinfo=UTC)
        manager = AsyncTriggerManager(
            AsyncMemoryStorage(f"sw-{uuid.uuid4().hex[:12]}", MemoryStore()), clock=lambda: now
        )
        await manager.update_configuration({"t": {"after": ["go"], "run": QUICK}})
        await manager.fire("go")
        assert AsyncStoreSweeper.running(manager.storage) is None
        await manager.join()

    run(scenario)


def test_one_sweeper_per_store_and_loop() -> None:
    async def scenario() -> None:
        store, other = MemoryStore(), MemoryStore()
        managers = [
            AsyncTriggerManager(AsyncMemoryStorage(f"sw-{n}-{uuid.uuid4().hex[:8]}", where))
            for n, where in enumerate([store, store, store, other])
        ]
        for manager in managers:
            await manager.update_configuration({"t": {"after": ["go"], "run": QUICK}})
        sweepers = [AsyncStoreSweeper.running(m.storage) for m in managers]
        assert sweepers[0] is sweepers[1] is sweepers[2] is not None
        assert sweepers[3] is not None
        assert sweepers[3] is not sweepers[0]

    run(scenario)


def test_a_run_nobody_renews_is_taken_over_by_the_background_sweep() -> None:
    """A run lost before this process started: the sweeper's first sweep takes it over and
    its clone runs on the asyncio runner."""
    uid = f"sw-lost-{uuid.uuid4().hex[:12]}"
    sync = MemoryStorage(uid, MemoryStore())
    now = datetime.now(UTC)
    state = sync.load_full()
    configured = engine.update_configuration(state.state, {"t": {"after": ["go"], "run": QUICK}})
    sync.compare_and_swap(state.version, configured.state, configured.changes)
    state = sync.load_full()
    fired = engine.fire(state.state, "go", now=now)
    sync.compare_and_swap(state.version, fired.state, fired.changes)
    state = sync.load_full()
    lease = Lease("dead-run", now + timedelta(seconds=0.2), 0.2, {"host": "gone"})
    started = engine.mark_running(state.state, "t#0", now=now, lease=lease)
    sync.compare_and_swap(state.version, started.state, started.changes)
    time.sleep(0.3)  # the lease expires: the run is lost

    async def scenario() -> None:
        manager = AsyncTriggerManager(AsyncMemoryStorage(uid, sync=sync))
        assert (await manager.get_instance("t#0")).status is Status.RUNNING
        clone = await wait_for(manager, "t#1", Status.FINISHED)
        assert clone.metadata["result"]["runKey"] == f"{uid}#t#0"
        lost = await manager.get_instance("t#0")
        assert lost.status is Status.REPLAYED
        assert lost.metadata["exceptionType"] == "triggers_core.errors.WorkerLost"
        await manager.join()

    run(scenario)


def test_asweep_store_and_atick_store_act_once_however_many_call_them() -> None:
    """Two sweeps of the same due entries at the same ``now``: the second finds nothing."""

    async def scenario() -> None:
        store = MemoryStore()
        first = datetime(2026, 1, 1, tzinfo=UTC)
        managers = [
            Unswept(
                AsyncMemoryStorage(f"sw-{n}-{uuid.uuid4().hex[:8]}", store), clock=lambda: first
            )
            for n in range(5)
        ]
        for manager in managers:
            await manager.update_configuration(
                {"later": {"after": ["go"], "run": QUICK, "delay": "1m", "using": "asyncio"}}
            )
            await manager.fire("go")

        def factory(storage: AsyncStorage) -> Unswept:
            return Unswept(storage)

        storage = managers[0].storage
        early = await atick_store(storage, factory, now=first + timedelta(seconds=30))
        assert (early.examined, early.acted) == (0, ())
        later = first + timedelta(minutes=2)
        reports = await asyncio.gather(
            asweep_store(storage, factory, now=later), atick_store(storage, factory, now=later)
        )
        fired = [a.session for r in reports for a in r.acted if a.action == "timer fired"]
        assert sorted(fired) == sorted(m.uid for m in managers)  # each timer once
        again = await atick_store(storage, factory, now=later)
        assert again.examined == 0  # the index holds no due timer any more
        for manager in managers:
            assert (await manager.get_instance("later#0")).status in {
                Status.SCHEDULED,
                Status.RUNNING,
                Status.FINISHED,
            }

    run(scenario)


def test_a_naive_now_is_refused() -> None:
    async def scenario() -> None:
        storage = AsyncMemoryStorage("sw-naive", MemoryStore())
        with pytest.raises(ValueError, match="timezone-aware"):
            await atick_store(storage, Unswept, now=datetime(2026, 1, 1))

    run(scenario)


def test_a_sweeper_ends_with_its_loop_and_leaves_no_reference_to_it() -> None:
    """``asyncio.run`` cancels the task; the registry then holds nothing of that loop."""
    seen: list[AsyncStoreSweeper] = []

    async def scenario() -> None:
        manager = AsyncTriggerManager(AsyncMemoryStorage(f"sw-{uuid.uuid4().hex[:12]}"))
        await manager.update_configuration({"t": {"after": ["go"], "run": QUICK}})
        sweeper = AsyncStoreSweeper.running(manager.storage)
        assert sweeper is not None
        seen.append(sweeper)
        await manager.join()

    asyncio.run(scenario())  # no stop(): the loop's end cancels the task
    assert seen[0]._task is not None
    assert seen[0]._task.done()
    assert all(seen[0] not in sweepers.values() for sweepers in AsyncStoreSweeper._running.values())


class SlowDue(AsyncMemoryStorage):
    """Reading the due index takes a while: a round of the sweeper is under way for 0.3 s."""

    rounds: ClassVar[list[str]] = []

    async def due_entries(self, kind: Any, before: datetime, *, limit: int) -> Any:
        SlowDue.rounds.append("entered")
        await asyncio.sleep(0.3)
        SlowDue.rounds.append("left")
        return await super().due_entries(kind, before, limit=limit)

    def session(self, uid: str) -> AsyncMemoryStorage:
        return SlowDue(uid, sync=self.sync.session(uid))


def test_dispose_lets_the_round_under_way_finish_then_ends_the_sweeper() -> None:
    """``dispose_async_engines`` stops the loop's sweepers and waits for them: a round that
    has started ends normally (never cut off half way through a query), and no round starts
    after it."""
    SlowDue.rounds = []
    seen: list[AsyncStoreSweeper] = []

    async def scenario() -> None:
        storage = SlowDue(f"sw-slow-{uuid.uuid4().hex[:8]}", MemoryStore())
        manager = AsyncTriggerManager(storage, storage.uid)
        await manager.update_configuration({"t": {"after": ["go"], "run": QUICK}})
        sweeper = AsyncStoreSweeper.running(manager.storage)
        assert sweeper is not None
        seen.append(sweeper)
        deadline = time.monotonic() + 10
        while "entered" not in SlowDue.rounds:  # the first round starts a tick after the start
            assert time.monotonic() < deadline, "the sweeper never swept"
            await asyncio.sleep(0.02)
        await dispose_async_engines()
        assert sweeper._task is not None
        assert sweeper._task.done()
        assert not sweeper._task.cancelled()  # it ended by itself, not by a cancel
        assert SlowDue.rounds[-1] == "left"  # the read under way was not cut off
        entered = len(SlowDue.rounds)
        await asyncio.sleep(1.5)  # longer than a tick: no round after the stop
        assert len(SlowDue.rounds) == entered

    asyncio.run(scenario())
    assert all(seen[0] not in sweepers.values() for sweepers in AsyncStoreSweeper._running.values())
