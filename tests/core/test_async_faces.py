"""One scenario suite, two faces: TriggerManager and AsyncTriggerManager behave the same.

Every scenario is a coroutine written against :class:`Face`, run once through
the synchronous manager (memory storage, threading runner) and once through
the asynchronous one (async memory storage, asyncio runner, hooks that are
coroutines), with ``asyncio.run``. Both faces drive the same shell core, so
any difference here is a bug in a driver.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from triggers_core import (
    AsyncMemoryStorage,
    AsyncTriggerManager,
    ConflictError,
    DispatchError,
    FireResult,
    MemoryStorage,
    MemoryStore,
    ScheduleInstance,
    SessionManager,
    Status,
    TaskContext,
    TaskInstance,
    TaskRunner,
    ThreadingTaskRunner,
    TriggerManager,
    TriggerTask,
    UnknownTriggerError,
    register_task,
)
from triggers_core.testing.sample_tasks import DevNullTask, FailingTask, PassThruTask


class AsyncDouble(TriggerTask):
    """An ``async def`` body: awaits, then doubles ``go``'s ``n``."""

    name: ClassVar[str] = "faces.AsyncDouble"

    async def _run(self, context: TaskContext) -> Mapping[str, Any]:
        await asyncio.sleep(0)
        return {"n": context.trigger_kwargs["go"]["n"] * 2}


register_task(AsyncDouble)

PASS = PassThruTask.name
NULL = DevNullTask.name
FAIL = FailingTask.name


class BrokenRunner(TaskRunner):
    """Refuses every instance (a broker that is down)."""

    name = "broken"

    def dispatch(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        raise RuntimeError(f"broker down for {effect.instance_name}")


class KeepRunner(TaskRunner):
    """Runs nothing; records what it was handed (counts the dispatches)."""

    name = "keep"

    def __init__(self) -> None:
        self.handed: list[str] = []

    def dispatch(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        self.handed.append(effect.instance_name)


class SyncRecording(TriggerManager):
    """Records its hooks, in order."""

    sweep_interval = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[Any, ...]] = []

    def _post_fire(self, trigger_name: str, scheduled_instances: list[TaskInstance]) -> None:
        self.calls.append(("fire", trigger_name, [i.name for i in scheduled_instances]))

    def _post_replay(self, replayed_instance: TaskInstance) -> None:
        self.calls.append(("replay", replayed_instance.name))

    def _post_skip(self, instance: TaskInstance, cascade: bool) -> None:
        self.calls.append(("skip", instance.name, cascade))


class AsyncRecording(AsyncTriggerManager):
    """Records its hooks, in order; they are coroutines that let others run meanwhile."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[Any, ...]] = []

    async def _post_fire(self, trigger_name: str, scheduled_instances: list[TaskInstance]) -> None:
        await asyncio.sleep(0)
        self.calls.append(("fire", trigger_name, [i.name for i in scheduled_instances]))

    async def _post_replay(self, replayed_instance: TaskInstance) -> None:
        await asyncio.sleep(0)
        self.calls.append(("replay", replayed_instance.name))

    def _post_skip(self, instance: TaskInstance, cascade: bool) -> None:  # a plain one too
        self.calls.append(("skip", instance.name, cascade))


class Face:
    """A manager of either kind, as coroutines."""

    def __init__(
        self, kind: str, uid: str, keep: KeepRunner, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.kind = kind
        self.keep = keep
        extra = {"broken": BrokenRunner(), "keep": keep}
        if kind == "sync":
            self.threads = ThreadingTaskRunner()
            self.sync = SyncRecording(
                MemoryStorage(uid, MemoryStore()),
                runners={"threading": self.threads, **extra},
                clock=clock,
            )
            self.manager: Any = self.sync
        else:
            self.asyncm = AsyncRecording(
                AsyncMemoryStorage(uid, MemoryStore()), runners=extra, clock=clock
            )
            self.manager = self.asyncm

    @property
    def calls(self) -> list[tuple[Any, ...]]:
        calls: list[tuple[Any, ...]] = self.manager.calls
        return calls

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.manager, method)(*args, **kwargs)
        return await result if self.kind == "async" else result

    async def configure(self, config: Mapping[str, Any]) -> None:
        await self.call("update_configuration", config)

    async def fire(
        self, trigger: str, kwargs: Mapping[str, Any] | None = None, **kw: Any
    ) -> list[str]:
        return [i.name for i in await self.call("fire", trigger, kwargs, **kw)]

    async def fire_result(
        self, trigger: str, kwargs: Mapping[str, Any] | None = None, **kw: Any
    ) -> FireResult:
        result: FireResult = await self.call("fire_result", trigger, kwargs, **kw)
        return result

    async def get(self, name: str) -> TaskInstance:
        if self.kind == "sync":
            return self.sync.storage.get_instance(name)
        return await self.asyncm.get_instance(name)

    async def statuses(self) -> dict[str, str]:
        if self.kind == "sync":
            found = self.sync.storage.instances
        else:
            found = await self.asyncm.instances()
        return {name: i.status.value for name, i in found.items()}

    async def join(self) -> None:
        if self.kind == "sync":
            self.threads.join_all()
        else:
            await self.asyncm.join()


FACES = ["sync", "async"]


def run(
    kind: str,
    scenario: Callable[[Face], Awaitable[None]],
    clock: Callable[[], datetime] | None = None,
) -> None:
    face = Face(kind, f"faces-{kind}-{uuid.uuid4().hex[:12]}", KeepRunner(), clock)
    asyncio.run(scenario(face))


@pytest.mark.parametrize("kind", FACES)
@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_fire_in_any_order(kind: str, order: tuple[str, str]) -> None:
    async def scenario(face: Face) -> None:
        await face.configure({"t": {"after": ["a", "b"], "run": PASS}})
        assert await face.fire(order[0], {"n": order[0]}) == []
        assert await face.fire(order[1], {"n": order[1]}) == ["t#0"]
        await face.join()
        done = await face.get("t#0")
        assert done.status is Status.FINISHED
        assert done.metadata["result"] == {"kwargs": {"a": {"n": "a"}, "b": {"n": "b"}}}

    run(kind, scenario)


@pytest.mark.parametrize("kind", FACES)
def test_and_every_and_cascades(kind: str) -> None:
    async def scenario(face: Face) -> None:
        await face.configure(
            {
                "page": {"after": ["start"], "andEvery": "p", "run": PASS},
                "after_page": {"after": ["page"], "andEvery": "page", "run": NULL},
            }
        )
        await face.fire("p", {"n": 0})
        await face.fire("p", {"n": 1})
        assert await face.fire("start") == ["page#0", "page#1"]
        await face.join()
        assert await face.statuses() == {
            "page#0": "finished",
            "page#1": "finished",
            "after_page#0": "finished",
            "after_page#1": "finished",
        }

    run(kind, scenario)


@pytest.mark.parametrize("kind", FACES)
def test_unless_abandons(kind: str) -> None:
    async def scenario(face: Face) -> None:
        await face.configure({"t": {"after": ["x", "y"], "unless": ["stop"], "run": PASS}})
        await face.fire("x")
        await face.fire("stop")
        assert await face.fire("y") == []
        assert (await face.get("t#0")).status is Status.ABANDONED

    run(kind, scenario)


@pytest.mark.parametrize("kind", FACES)
def test_hooks_of_a_cause_run_before_those_of_its_effects(kind: str) -> None:
    async def scenario(face: Face) -> None:
        await face.configure(
            {"t": {"after": ["go"], "run": PASS}, "u": {"after": ["t"], "run": NULL}}
        )
        await face.fire("go", {"x": 1})
        await face.join()
        assert face.calls == [("fire", "go", ["t#0"]), ("fire", "t", ["u#0"]), ("fire", "u", [])]

    run(kind, scenario)


@pytest.mark.parametrize("kind", FACES)
def test_idempotent_fire_is_applied_once(kind: str) -> None:
    async def scenario(face: Face) -> None:
        await face.configure({"t": {"after": [], "andEvery": "go", "run": NULL, "using": "keep"}})
        first = await face.fire_result("go", {"n": 1}, idempotency_key="k1")
        again = await face.fire_result("go", {"n": 2}, idempotency_key="k1")
        other = await face.fire_result("go", {"n": 3}, idempotency_key="k2")
        assert (first.duplicate, again.duplicate, other.duplicate) == (False, True, False)
        assert [i.name for i in first.scheduled] == [i.name for i in again.scheduled] == ["t#0"]
        assert [i.name for i in other.scheduled] == ["t#1"]
        assert face.keep.handed == ["t#0", "t#1"]  # the duplicate dispatched nothing
        assert [c for c in face.calls if c[0] == "fire"] == [
            ("fire", "go", ["t#0"]),
            ("fire", "go", ["t#1"]),
        ]

    run(kind, scenario)


@pytest.mark.parametrize("kind", FACES)
def test_strict_fire_of_an_unknown_trigger_is_refused(kind: str) -> None:
    async def scenario(face: Face) -> None:
        await face.configure({"t": {"after": ["score"], "run": NULL}})
        with pytest.raises(UnknownTriggerError, match="did you mean 'score'"):
            await face.fire("scroe", strict=True)
        assert face.calls == []
        assert await face.statuses() == {}

    run(kind, scenario)


@pytest.mark.parametrize("kind", FACES)
def test_a_refused_dispatch_is_recorded_as_failed(kind: str) -> None:
    async def scenario(face: Face) -> None:
        await face.configure({"t": {"after": ["go"], "run": NULL, "using": "broken"}})
        with pytest.raises(DispatchError) as raised:
            await face.fire("go")
        assert [name for name, _ in raised.value.failures] == ["t#0"]
        failed = await face.get("t#0")
        assert failed.status is Status.FAILED
        assert failed.metadata["exceptionContext"] == {"dispatch": "broken"}
        assert "broker down for t#0" in failed.metadata["exceptionInfo"]
        assert face.calls == [("fire", "go", ["t#0"])]  # the hook ran before the dispatch

    run(kind, scenario)


@pytest.mark.parametrize("kind", FACES)
def test_replay_and_skip(kind: str) -> None:
    async def scenario(face: Face) -> None:
        await face.configure(
            {
                "bad": {"after": ["go"], "andEvery": "go", "run": FAIL},
                "next": {"after": ["bad"], "run": PASS},
            }
        )
        await face.fire("go", {"n": 0})
        await face.fire("go", {"n": 1})
        await face.join()
        assert (await face.get("bad#0")).status is Status.FAILED
        clone = await face.call("replay_failed_instance", "bad#0", {"go": {"n": 9}}, actor="ops")
        assert clone.status is Status.SCHEDULED
        await face.join()
        assert (await face.get("bad#0")).status is Status.REPLAYED
        assert (await face.get(clone.name)).status is Status.FAILED  # it fails again
        skipped = await face.call("skip_failed_instance", "bad#1", True, {"fixed": 1})
        assert skipped.status is Status.SKIPPED
        await face.join()
        assert (await face.get("next#0")).status is Status.FINISHED
        assert (await face.get("next#0")).metadata["result"] == {"kwargs": {"bad": {"fixed": 1}}}
        assert ("replay", "bad#0") in face.calls
        assert ("skip", "bad#1", True) in face.calls

    run(kind, scenario)


class YieldingStorage(AsyncMemoryStorage):
    """Lets other coroutines run between its load and its compare-and-swap; counts conflicts."""

    conflicts = 0

    async def load(self, *args: Any) -> Any:
        snapshot = await super().load(*args)
        await asyncio.sleep(0)
        return snapshot

    async def compare_and_swap(self, *args: Any) -> Any:
        try:
            return await super().compare_and_swap(*args)
        except ConflictError:
            YieldingStorage.conflicts += 1
            raise


def test_two_hundred_coroutines_fire_into_one_session_exactly() -> None:
    """Four managers (separate storage objects: real conflicts) x 50 coroutines each."""
    uid = f"faces-many-{uuid.uuid4().hex[:12]}"
    store = MemoryStore()

    async def scenario() -> None:
        keep = KeepRunner()
        managers = [
            AsyncTriggerManager(YieldingStorage(uid, store), runners={"keep": keep})
            for _ in range(4)
        ]
        for m in managers:
            m.backoff_cap = 0.005
        await managers[0].update_configuration(
            {"t": {"after": [], "andEvery": "go", "run": NULL, "using": "keep"}}
        )
        results = await asyncio.gather(*(managers[n % 4].fire("go", {"n": n}) for n in range(200)))
        names = sorted(i.name for scheduled in results for i in scheduled)
        assert names == sorted(f"t#{n}" for n in range(200))
        assert sorted(keep.handed) == names  # each instance dispatched exactly once
        stored = await managers[0].instances()
        assert len(stored) == 200
        assert {i.status for i in stored.values()} == {Status.SCHEDULED}
        assert sorted(i.kwargs["go"]["n"] for i in stored.values()) == list(range(200))
        assert YieldingStorage.conflicts > 0  # the managers did race each other

    YieldingStorage.conflicts = 0

    asyncio.run(scenario())


def test_a_sync_runner_gets_the_synchronous_manager_of_the_same_session() -> None:
    """``using: threading`` from the async manager: the sync manager on the sync twin runs it."""
    uid = f"faces-view-{uuid.uuid4().hex[:12]}"
    threads = ThreadingTaskRunner()

    async def scenario() -> None:
        m = AsyncTriggerManager(f"memory://faces-{uid}", uid, runners={"threading": threads})
        await m.update_configuration({"t": {"after": ["go"], "run": PASS, "using": "threading"}})
        assert [i.name for i in await m.fire("go", {"x": 1})] == ["t#0"]
        await asyncio.to_thread(threads.join_all)
        assert (await m.get_instance("t#0")).status is Status.FINISHED
        sync = TriggerManager(f"memory://faces-{uid}", uid)  # the same named store
        assert sync.storage["t#0"].metadata["result"] == {"kwargs": {"go": {"x": 1}}}

    asyncio.run(scenario())


def test_the_asyncio_runner_refuses_a_synchronous_manager() -> None:
    manager = TriggerManager(MemoryStorage(f"faces-{uuid.uuid4().hex[:12]}", MemoryStore()))
    manager.sweep_interval = None
    manager.update_configuration({"t": {"after": ["go"], "run": NULL, "using": "asyncio"}})
    with pytest.raises(DispatchError) as raised:
        manager.fire("go")
    assert "the 'asyncio' runner runs the instances of an AsyncTriggerManager" in str(
        raised.value.failures[0][1]
    )
    assert manager.storage["t#0"].status is Status.FAILED


@pytest.mark.parametrize("kind", FACES)
def test_a_hook_that_raises_does_not_strand_the_scheduled_work(kind: str) -> None:
    async def scenario(face: Face) -> None:
        await face.configure({"t": {"after": ["go"], "run": NULL, "using": "keep"}})

        def boom(trigger_name: str, scheduled_instances: list[TaskInstance]) -> None:
            raise LookupError(f"hook failed after {trigger_name}")

        face.manager._post_fire = boom
        with pytest.raises(LookupError, match="hook failed after go"):
            await face.fire("go")
        assert face.keep.handed == ["t#0"]  # dispatched all the same
        assert (await face.get("t#0")).status is Status.SCHEDULED

    run(kind, scenario)


@pytest.mark.parametrize("kind", FACES)
def test_recover_dispatches_a_lost_message_again(kind: str) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]

    async def scenario(face: Face) -> None:
        await face.configure({"t": {"after": ["go"], "run": NULL, "using": "keep"}})
        await face.fire("go")
        assert face.keep.handed == ["t#0"]  # and then its message was lost
        now[0] += timedelta(seconds=30)
        early = await face.call("recover", dispatch_lease=60)
        assert (early.examined, early.acted) == (1, ())
        now[0] += timedelta(seconds=60)
        dry = await face.call("recover", dispatch_lease=60, dry_run=True)
        assert [a.action for a in dry.acted] == ["dispatched again"]
        assert face.keep.handed == ["t#0"]
        report = await face.call("recover", dispatch_lease=60)
        assert [(a.instance, a.action) for a in report.acted] == [("t#0", "dispatched again")]
        assert face.keep.handed == ["t#0", "t#0"]
        assert (await face.get("t#0")).metadata["dispatches"] == 2

    run(kind, scenario, clock=lambda: now[0])


@pytest.mark.parametrize("kind", FACES)
def test_an_async_body_finishes_and_cascades(kind: str) -> None:
    async def scenario(face: Face) -> None:
        await face.configure(
            {
                "double": {"after": ["go"], "run": AsyncDouble.name},
                "after": {"after": ["double"], "run": PASS},
            }
        )
        await face.fire("go", {"n": 21})
        await face.join()
        assert (await face.get("double#0")).metadata["result"] == {"n": 42}
        assert (await face.get("after#0")).metadata["result"] == {"kwargs": {"double": {"n": 42}}}

    run(kind, scenario)


def test_on_started_and_hooks_never_run_holding_the_commit_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Code called back from an operation may commit to the same storage object."""
    from triggers_core.runtime import commit as commit_module

    monkeypatch.setattr(commit_module, "COMMIT_TURN_TIMEOUT", 0.5)
    keep = KeepRunner()
    manager = SyncRecording(
        MemoryStorage(f"faces-turn-{uuid.uuid4().hex[:12]}", MemoryStore()),
        runners={"keep": keep},
    )
    manager.update_configuration({"t": {"after": ["go"], "run": NULL, "using": "keep"}})
    manager.fire("go")

    def started(instance: TaskInstance) -> None:
        manager.update_instance_metadata(instance.name, {"seen": True})

    done = manager.run_instance("t#0", on_started=started)
    assert done is not None
    assert done.status is Status.FINISHED
    assert done.metadata["seen"] is True
