"""Coroutines in several OS processes, and threads in another, fire into ONE PostgreSQL session.

Three spawned processes each run an :class:`AsyncTriggerManager` on
``postgresql+asyncpg://`` with 50 coroutines firing at once; a fourth runs the
synchronous :class:`TriggerManager` on ``postgresql+psycopg://`` (the same
tables) with threads. Every fire is ``andEvery``: each must schedule exactly
one instance, every instance exactly once, and the counter must be exact (as
the sync storage's multi-process race, ``MultiprocessRaceContract``).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from services import require_service

from triggers_backends.sqlalchemy import create_schema, drop_schema
from triggers_backends.sqlalchemy.asyncio import dispose_async_engines
from triggers_core import AsyncTriggerManager, ScheduleInstance, SessionManager, Status, TaskRunner
from triggers_core.testing._contract_support import (
    PatientManager,
    RecordingRunner,
    race_in_threads,
    race_processes,
    report_to,
)

pytestmark = [pytest.mark.service, pytest.mark.slow]

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_ASYNC = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
EVERY_GO = {"t": {"after": [], "andEvery": "go", "run": "triggers.DevNullTask"}}

ASYNC_PROCESSES = 3
COROUTINES = 50
#: Fires per coroutine, and the sync process's threads and fires per thread.
FIRES = 2
THREADS = 10
THREAD_FIRES = 10


class AsyncRecording(TaskRunner):
    """Records the instances it is handed, on the loop (no worker thread)."""

    name = "async-recording"
    runs_coroutines = True

    def __init__(self) -> None:
        self.dispatched: list[str] = []

    def dispatch(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        self.dispatched.append(effect.instance_name)


class PatientAsync(AsyncTriggerManager):
    """As ``PatientManager``: races check correctness, not fairness."""

    max_attempts: ClassVar[int] = 2000  # type: ignore[misc]
    default_runner = "async-recording"


def _async_worker(*, url: str, uid: str, index: int, start: Any, results: Any) -> None:
    async def fire_all() -> list[str]:
        runner = AsyncRecording()
        m = PatientAsync(url, uid, runners={"async-recording": runner})
        await m.latest_kwargs()  # connected before the start
        start.wait(60)

        async def one(c: int) -> None:
            for n in range(FIRES):
                scheduled = await m.fire("go", {"worker": index, "i": c * FIRES + n})
                assert len(scheduled) == 1

        await asyncio.gather(*(one(c) for c in range(COROUTINES)))
        await dispose_async_engines()
        return runner.dispatched

    report_to(results, index, lambda: asyncio.run(fire_all()))


def _sync_worker(*, url: str, uid: str, index: int, start: Any, results: Any) -> None:
    def work() -> list[str]:
        runner = RecordingRunner()
        manager = PatientManager(url, uid, runners={"rec": runner}, default_runner="rec")
        manager.sweep_interval = None
        start.wait(60)
        lock = threading.Lock()

        def fire(t: int, _go: threading.Barrier) -> None:
            _go.wait(timeout=30)
            for n in range(THREAD_FIRES):
                scheduled = manager.fire("go", {"worker": index, "i": t * THREAD_FIRES + n})
                with lock:
                    assert len(scheduled) == 1

        race_in_threads(fire, threads=THREADS, timeout=240)
        return runner.dispatched

    report_to(results, index, work)


def _either(*, index: int, sync_url: str, async_url: str, **kwargs: Any) -> None:
    if index < ASYNC_PROCESSES:
        _async_worker(url=async_url, index=index, **kwargs)
    else:
        _sync_worker(url=sync_url, index=index, **kwargs)


@pytest.fixture
def prefix() -> Iterator[str]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    engine = sa.create_engine(PG)
    prefix = f"p{uuid.uuid4().hex[:12]}_"
    create_schema(engine, prefix)
    yield prefix
    drop_schema(engine, prefix)
    engine.dispose()


def test_async_processes_and_a_threaded_sync_process_schedule_each_instance_once(
    prefix: str,
) -> None:
    uid = f"async-procs-{uuid.uuid4().hex}"
    sync_url = f"{PG}?triggers_prefix={prefix}"
    async_url = f"{PG_ASYNC}?triggers_prefix={prefix}"
    setup = PatientManager(sync_url, uid, runners={"rec": RecordingRunner()}, default_runner="rec")
    setup.sweep_interval = None
    setup.update_configuration(EVERY_GO)
    payloads = race_processes(
        _either,
        processes=ASYNC_PROCESSES + 1,
        timeout=300,
        what="async and sync processes' race",
        uid=uid,
        sync_url=sync_url,
        async_url=async_url,
    )
    dispatched = [name for names in payloads for name in names]
    per_async = COROUTINES * FIRES
    total = ASYNC_PROCESSES * per_async + THREADS * THREAD_FIRES
    counts = Counter(dispatched)
    assert [name for name, n in counts.items() if n > 1] == [], "dispatched more than once"
    assert set(counts) == {f"t#{n}" for n in range(total)}
    assert sorted(len(names) for names in payloads) == sorted(
        [per_async] * ASYNC_PROCESSES + [THREADS * THREAD_FIRES]
    )
    state = setup.storage.load_full().state
    assert len(state.instances) == total
    assert {i.status for i in state.instances.values()} == {Status.SCHEDULED}
    assert state.counters["t"] == total
    fired = {(i.kwargs["go"]["worker"], i.kwargs["go"]["i"]) for i in state.instances.values()}
    expected = {(w, i) for w in range(ASYNC_PROCESSES) for i in range(per_async)}
    expected |= {(ASYNC_PROCESSES, i) for i in range(THREADS * THREAD_FIRES)}
    assert fired == expected, "a fire was lost or applied twice"
