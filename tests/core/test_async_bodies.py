"""``async def`` task bodies on the threading runner, and the loops that run them.

Each body runs to completion on its runner thread's own event loop
(``triggers_core.runtime.body_loop``); outcomes are recorded exactly as for
synchronous bodies (``triggers_core.runtime.outcomes``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest

import triggers_core.testing.sample_tasks  # noqa: F401 - registers triggers.PassThruTask
from triggers_core import (
    InvalidKwargsError,
    MemoryStorage,
    MemoryStore,
    Status,
    TaskContext,
    ThreadingTaskRunner,
    TriggerManager,
    TriggerTask,
    engine,
    with_context,
)
from triggers_core.runtime import body_loop
from triggers_core.runtime.leases import KEEPER
from triggers_core.runtime.outcomes import Outcomes
from triggers_core.runtime.recovery import sweep_store
from triggers_core.testing.assertions import (
    assert_instance_failed,
    assert_instance_finished,
    assert_instance_missing,
    assert_instance_replayed,
    assert_instance_skipped,
)
from triggers_core.testing.clock import FakeClock


class ReportingError(Exception):
    """A project exception an async body raises (recorded as ``module.Name``)."""


def _where() -> dict[str, Any]:
    return {"thread": threading.get_ident(), "loop": id(asyncio.get_running_loop())}


class Doubling(TriggerTask):
    """Awaits, then returns ``2 * x.n`` and where it ran."""

    name: ClassVar[str] = "tests.async.Doubling"

    async def _run(self, context: TaskContext) -> Mapping[str, Any]:
        await asyncio.sleep(0.01)
        return {"doubled": 2 * context.trigger_kwargs["x"]["n"], **_where()}


class Raising(TriggerTask):
    """Fails after an await, with a context dict, inside a logger context."""

    name: ClassVar[str] = "tests.async.Raising"

    async def _run(self, context: TaskContext) -> Mapping[str, Any]:
        await asyncio.sleep(0)
        with context.get_logger_context({"step": "load"}):
            raise with_context(ReportingError("row 3 is broken"), {"row": 3})


class Skipping(TriggerTask):
    name: ClassVar[str] = "tests.async.Skipping"

    async def _run(self, context: TaskContext) -> Mapping[str, Any]:
        await asyncio.sleep(0)
        self.skip({"reason": "nothing to do"})


class Retrying(TriggerTask):
    """Retries once with a cooldown (seconds in ``x.cooldown``), then finishes."""

    name: ClassVar[str] = "tests.async.Retrying"
    max_retries: ClassVar[int] = 2

    async def _run(self, context: TaskContext) -> Mapping[str, Any]:
        await asyncio.sleep(0)
        if context.retries == 0:
            self.retry(
                with_context(TimeoutError("model timed out"), {"attempt": 1}),
                metadata={"note": "first try"},
                cooldown=context.trigger_kwargs["x"].get("cooldown"),
            )
        return {"retries": context.retries, "at": time.monotonic()}


class NotAMapping(TriggerTask):
    name: ClassVar[str] = "tests.async.NotAMapping"

    async def _run(self, context: TaskContext) -> Any:
        await asyncio.sleep(0)
        return [1, 2, 3]


class Sleeping(TriggerTask):
    """Sleeps ``x.seconds`` on its loop; 0.3 s leases (renewed every 0.1 s)."""

    name: ClassVar[str] = "tests.async.Sleeping"
    lease_seconds: ClassVar[float] = 0.3

    async def _run(self, context: TaskContext) -> Mapping[str, Any]:
        held = [h for h in KEEPER.held() if h.name == context.instance_name]
        started = time.monotonic()
        await asyncio.sleep(context.trigger_kwargs["x"]["seconds"])
        renewals = [h.renewals for h in held if h.storage.uid == context.manager.uid]
        return {"started": started, "ended": time.monotonic(), "renewals": renewals, **_where()}


class Firing(TriggerTask):
    """Fires ``y`` through ``ctx.afire`` (the sync manager, in a thread)."""

    name: ClassVar[str] = "tests.async.Firing"

    async def _run(self, context: TaskContext) -> Mapping[str, Any]:
        fired = await context.afire("y", {"from": context.instance_name})
        return {"fired": [i.name for i in fired], **_where()}


@pytest.fixture
def runner() -> Iterator[ThreadingTaskRunner]:
    runner = ThreadingTaskRunner()
    yield runner
    runner.join_all()


def make(
    runner: ThreadingTaskRunner, run: str, clock: FakeClock | None = None, **directives: Any
) -> TriggerManager:
    manager = TriggerManager(
        MemoryStorage(f"async-{uuid.uuid4().hex}", MemoryStore()),
        runners={"threading": runner},
        clock=clock,
    )
    manager.update_configuration(
        {
            "t_a": {"after": ["x"], "run": run, **directives},
            "t_b": {"after": ["t_a"], "run": "triggers.PassThruTask"},
        }
    )
    return manager


# -- outcomes -----------------------------------------------------------------------------------


def test_an_async_body_finishes_and_its_result_cascades(runner: ThreadingTaskRunner) -> None:
    manager = make(runner, Doubling.name)
    manager.fire("x", {"n": 21})
    runner.join_all()
    result = manager.storage["t_a#0"].metadata["result"]
    assert result["doubled"] == 42
    assert_instance_finished(manager, "t_a#0", result)
    assert_instance_finished(manager, "t_b#0", {"kwargs": {"t_a": result}})


def test_an_exception_in_an_async_body_is_recorded_like_a_sync_one(
    runner: ThreadingTaskRunner,
) -> None:
    manager = make(runner, Raising.name)
    manager.fire("x")
    failed = assert_instance_failed(manager, "t_a#0", ReportingError)
    metadata = failed.metadata
    assert metadata["exceptionType"] == f"{__name__}.ReportingError"
    assert metadata["exceptionContext"] == {"row": 3}
    info = metadata["exceptionInfo"]
    assert info.startswith("Traceback (most recent call last):")
    assert 'test_async_bodies.py", line' in info, info  # the body's frames
    assert "in _run" in info
    assert info.rstrip().endswith("ReportingError: row 3 is broken")
    assert metadata["logLevel"] == logging.ERROR
    assert_instance_missing(manager, "t_b#0")


def test_skip_in_an_async_body(runner: ThreadingTaskRunner) -> None:
    manager = make(runner, Skipping.name)
    manager.fire("x")
    skipped = assert_instance_skipped(manager, "t_a#0")
    assert skipped.metadata["reason"] == "nothing to do"
    assert_instance_missing(manager, "t_b#0")


def test_retry_in_an_async_body(runner: ThreadingTaskRunner) -> None:
    manager = make(runner, Retrying.name)
    manager.fire("x")
    first = assert_instance_replayed(manager, "t_a#0")
    assert first.metadata["exceptionType"] == "builtins.TimeoutError"
    assert first.metadata["exceptionContext"] == {"attempt": 1}
    assert first.metadata["note"] == "first try"
    assert "TimeoutError: model timed out" in first.metadata["exceptionInfo"]
    second = manager.storage["t_a#1"]
    assert second.status is Status.FINISHED
    assert second.metadata["result"]["retries"] == 1


def test_retry_with_a_cooldown_in_an_async_body(runner: ThreadingTaskRunner) -> None:
    """The cooldown is a timer in the storage (the clone waits unstarted), as for a sync body."""
    clock = FakeClock()
    manager = make(runner, Retrying.name, clock)
    manager.fire("x", {"cooldown": 0.4})
    runner.join_all()
    assert_instance_replayed(manager, "t_a#0")
    waiting = manager.storage["t_a#1"]
    assert waiting.status is Status.UNSTARTED
    assert waiting.metadata["retryCooldown"] == 0.4
    clock.advance(0.39)
    assert manager.storage["t_a#1"].status is Status.UNSTARTED
    clock.advance(0.01)
    runner.join_all()
    second = manager.storage["t_a#1"]
    assert second.status is Status.FINISHED
    assert second.metadata["result"]["retries"] == 1


def test_an_async_body_returning_a_non_mapping_fails_clearly(
    runner: ThreadingTaskRunner,
) -> None:
    manager = make(runner, NotAMapping.name)
    manager.fire("x")
    failed = assert_instance_failed(manager, "t_a#0", InvalidKwargsError)
    info = failed.metadata["exceptionInfo"]
    assert "tests.async.NotAMapping returned bad data" in info
    assert "a task must return a mapping or None, got list" in info
    assert_instance_missing(manager, "t_b#0")


# -- loops, concurrency, leases -------------------------------------------------------------------


def test_async_bodies_sleep_concurrently_each_on_its_threads_loop(
    runner: ThreadingTaskRunner,
) -> None:
    managers = [make(runner, Sleeping.name) for _ in range(5)]
    started = time.monotonic()
    for manager in managers:
        manager.fire("x", {"seconds": 0.5})
    runner.join_all()
    took = time.monotonic() - started
    results = [m.storage["t_a#0"].metadata["result"] for m in managers]
    assert all(m.storage["t_a#0"].status is Status.FINISHED for m in managers)
    assert took < 2.0, took  # five 0.5 s sleeps overlapped
    assert max(r["started"] for r in results) < min(r["ended"] for r in results)
    assert len({r["thread"] for r in results}) == 5
    assert len({r["loop"] for r in results}) == 5


def test_a_thread_reuses_its_loop_for_later_bodies(runner: ThreadingTaskRunner) -> None:
    managers = [make(runner, Doubling.name) for _ in range(2)]
    for n, manager in enumerate(managers):
        manager.fire("x", {"n": n})
        runner.join_all()
    first, second = (m.storage["t_a#0"].metadata["result"] for m in managers)
    assert first["thread"] == second["thread"]  # the pooled thread was idle, so reused
    assert first["loop"] == second["loop"]


def test_the_lease_is_renewed_while_an_async_body_sleeps(runner: ThreadingTaskRunner) -> None:
    manager = make(runner, Sleeping.name)
    manager.fire("x", {"seconds": 1.0})
    deadline = time.monotonic() + 10
    # Sweep all the time the body runs: a renewed lease is never taken over.
    while manager.storage["t_a#0"].status is not Status.FINISHED:
        assert time.monotonic() < deadline, manager.storage.debug_repr()
        sweep_store(manager.storage, lambda s: TriggerManager(s, runners=manager.runners))
        time.sleep(0.05)
    runner.join_all()
    result = manager.storage["t_a#0"].metadata["result"]
    assert len(result["renewals"]) == 1
    assert result["renewals"][0] >= 3  # every 0.1 s for 1 s
    assert "t_a#1" not in manager.storage
    assert manager.storage.get_lease("t_a#0") is None


def test_afire_fires_without_blocking_the_loop(runner: ThreadingTaskRunner) -> None:
    manager = make(runner, Firing.name)
    manager.update_configuration(
        {
            "t_a": {"after": ["x"], "run": Firing.name},
            "t_y": {"after": ["y"], "run": "triggers.PassThruTask"},
        }
    )
    manager.fire("x")
    runner.join_all()
    assert manager.storage["t_a#0"].metadata["result"]["fired"] == ["t_y#0"]
    assert_instance_finished(manager, "t_y#0", {"kwargs": {"y": {"from": "t_a#0"}}})


# -- the body loop itself ------------------------------------------------------------------------


def test_run_body_never_uses_the_callers_running_loop() -> None:
    async def inner() -> int:
        return id(asyncio.get_running_loop())

    async def application() -> tuple[int, int]:
        # A synchronous call from async code (e.g. run_instance in a view): the body
        # runs on a helper thread's loop, never on this one.
        return id(asyncio.get_running_loop()), body_loop.run_body(inner())

    outer, used = asyncio.run(application())
    assert outer != used


def test_tasks_a_body_leaves_behind_are_cancelled_when_it_returns() -> None:
    ended: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            ended.append("cancelled")

    async def body() -> str:
        asyncio.get_running_loop().create_task(forever())
        await asyncio.sleep(0)
        return "done"

    assert body_loop.run_body(body()) == "done"
    assert ended == ["cancelled"]


class Interrupt(Exception):
    """What a signal handler raises into the thread (as Celery's soft time limit)."""


def test_an_exception_a_signal_raises_into_the_loop_cancels_the_body_and_is_its_outcome() -> None:
    assert threading.current_thread() is threading.main_thread()
    cleaned: list[str] = []

    async def body() -> str:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append("finally ran")
        return "not reached"

    def handler(signum: int, frame: Any) -> None:
        raise Interrupt("soft limit")

    previous = signal.signal(signal.SIGUSR1, handler)
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGUSR1))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(Interrupt, match="soft limit") as raised:
            body_loop.run_body(body())
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
    assert time.monotonic() - started < 5
    assert cleaned == ["finally ran"]
    assert isinstance(raised.value.__context__, asyncio.CancelledError)


class CallbackInterrupt(Exception):
    """Registered with interrupt_on: raised in a loop callback, it stops the body."""


def test_a_registered_interrupt_raised_in_a_loop_callback_stops_the_body() -> None:
    body_loop.interrupt_on(CallbackInterrupt)

    def callback() -> None:
        raise CallbackInterrupt("in a callback")

    async def body() -> str:
        asyncio.get_running_loop().call_later(0.05, callback)
        await asyncio.sleep(10)
        return "not reached"

    started = time.monotonic()
    with pytest.raises(CallbackInterrupt, match="in a callback"):
        body_loop.run_body(body())
    assert time.monotonic() - started < 5


SEEN: list[dict[str, Any]] = []


class SeenAsync(TriggerTask):
    name: ClassVar[str] = "tests.async.SeenAsync"

    async def _run(self, context: TaskContext) -> Mapping[str, Any]:
        SEEN.append(_where())
        return {"n": 1}


class SeenSync(TriggerTask):
    name: ClassVar[str] = "tests.async.SeenSync"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        SEEN.append({"thread": threading.get_ident()})
        return {"n": 2}


def test_arun_task_awaits_an_async_body_on_the_running_loop_and_threads_a_sync_one() -> None:
    storage = MemoryStorage(f"async-{uuid.uuid4().hex}", MemoryStore())
    manager = TriggerManager(storage, runners={"threading": ThreadingTaskRunner()})
    manager.update_configuration({"t_a": {"after": ["x"], "run": SeenAsync.name}})
    loaded = storage.load_full()
    fired = engine.fire(loaded.state, "x", now=manager.now())
    state = engine.mark_running(fired.state, "t_a#0", now=manager.now()).state
    outcomes = Outcomes(manager.uid, manager.now, 10)
    SEEN.clear()

    async def main() -> tuple[dict[str, Any], list[Any]]:
        context = TaskContext(manager, {}, "t_a#0")
        computes = [
            await outcomes.arun_task("t_a#0", SeenAsync.name, context),
            await outcomes.arun_task("t_a#0", SeenSync.name, context),
            await outcomes.arun_task("t_a#0", NotAMapping.name, context),
        ]
        return _where(), computes

    caller, computes = asyncio.run(main())
    assert SEEN[0] == caller  # the async body: on this loop, in this thread
    assert SEEN[1]["thread"] != caller["thread"]  # the sync body: in a thread
    results = [compute(state).state.instances["t_a#0"] for compute in computes]
    assert [i.status for i in results] == [Status.FINISHED, Status.FINISHED, Status.FAILED]
    assert [i.metadata.get("result") for i in results[:2]] == [{"n": 1}, {"n": 2}]
    assert "got list" in results[2].metadata["exceptionInfo"]


class SelfCancelling(TriggerTask):
    """Raises CancelledError by itself (nobody cancelled its caller)."""

    name: ClassVar[str] = "tests.async.SelfCancelling"

    async def _run(self, context: TaskContext) -> Mapping[str, Any]:
        raise asyncio.CancelledError("given up")


class Slow(TriggerTask):
    name: ClassVar[str] = "tests.async.Slow"

    async def _run(self, context: TaskContext) -> Mapping[str, Any]:
        await asyncio.sleep(10)
        return {}


def test_arun_task_propagates_its_callers_cancellation_and_records_a_bodys_own() -> None:
    manager = TriggerManager(MemoryStorage(f"async-{uuid.uuid4().hex}", MemoryStore()))
    outcomes = Outcomes(manager.uid, manager.now, 10)
    context = TaskContext(manager, {}, "t_a#0")

    async def main() -> Any:
        own = await outcomes.arun_task("t_a#0", SelfCancelling.name, context)
        caller = asyncio.ensure_future(outcomes.arun_task("t_a#0", Slow.name, context))
        await asyncio.sleep(0.05)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        return own

    own = asyncio.run(asyncio.wait_for(main(), 5))
    manager.update_configuration({"t_a": {"after": ["x"], "run": SelfCancelling.name}})
    fired = engine.fire(manager.storage.load_full().state, "x", now=manager.now())
    state = engine.mark_running(fired.state, "t_a#0", now=manager.now()).state
    failed = own(state).state.instances["t_a#0"]
    assert failed.status is Status.FAILED
    assert failed.metadata["exceptionType"] == "asyncio.exceptions.CancelledError"


LOOPS: list[asyncio.AbstractEventLoop] = []


class KeepsItsLoop(TriggerTask):
    name: ClassVar[str] = "tests.async.KeepsItsLoop"

    async def _run(self, context: TaskContext) -> Mapping[str, Any]:
        LOOPS.append(asyncio.get_running_loop())
        return {}


def test_a_runner_thread_closes_its_loop_when_it_ends() -> None:
    runner = ThreadingTaskRunner(keep_alive=0.1)
    manager = make(runner, KeepsItsLoop.name)
    LOOPS.clear()
    manager.fire("x")
    runner.join_all()
    assert len(LOOPS) == 1
    deadline = time.monotonic() + 5
    while not LOOPS[0].is_closed():  # the idle thread ends after keep_alive
        assert time.monotonic() < deadline
        time.sleep(0.02)
