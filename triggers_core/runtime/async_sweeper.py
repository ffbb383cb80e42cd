"""The background sweeper of an asyncio application: one task per store and event loop.

The asyncio counterpart of :class:`~triggers_core.runtime.recovery.StoreSweeper`
(a thread). :class:`AsyncStoreSweeper` runs, as a task of the event loop, the
store's clock every ``tick_interval`` seconds (``within`` windows that
closed, ``delay`` and retry cooldowns that ended) and the recovery sweep every
``interval`` seconds (runs whose lease expired, messages lost while
``scheduled``). :class:`~triggers_core.runtime.async_manager.AsyncTriggerManager`
starts it with its first operation when its default runner is the in-process
``"asyncio"`` one, its clock is the real one and its storage keeps leases and
a due index; so an asyncio application that never calls ``advance()`` or
``recover()`` still sees its timers fire and its lost runs moved on.

Each action is one compare-and-swap that re-checks the instance (the shell
core's operations, the same as the thread's): however many sweepers run, in
however many processes, each timer fires once and each lost run is taken
over once. A sweep reads at most a batch of due entries of each kind: its
cost is bounded by what is due, never by the number of sessions. The task
ends when the loop ends (``asyncio.run`` cancels it), or after the round under
way with :meth:`AsyncStoreSweeper.stop` (``dispose_async_engines`` stops the
loop's sweepers so before it closes their connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol

from triggers_core.engine.leases import DEFAULT_DISPATCH_LEASE, DueKind
from triggers_core.errors import InvalidTransitionError, UnknownInstanceError
from triggers_core.runtime import operator_steps as ops
from triggers_core.runtime.async_storage import AsyncStorage
from triggers_core.runtime.clock import DEFAULT_TICK_INTERVAL, TICK_BATCH, _describe
from triggers_core.runtime.recovery import (
    SWEEP_BATCH,
    SweepRounds,
    _redispatch_steps,
    _take_over_steps,
)
from triggers_core.runtime.shell import Steps
from triggers_core.runtime.storage import DueRef
from triggers_core.runtime.sweep_report import Recovered, RecoveryReport

__all__ = ["AsyncManagerFactory", "AsyncStoreSweeper", "asweep_store", "atick_store"]

log = logging.getLogger("triggers_core.recovery")
clock_log = logging.getLogger("triggers_core.clock")


class _SweptManager(Protocol):
    """What a sweep needs of a manager: an AsyncTriggerManager."""

    storage: AsyncStorage

    async def _drive(self, steps: Steps[Any], storage: Any = None) -> Any: ...


#: Builds the manager that acts on one session (``factory(storage)``).
AsyncManagerFactory = Callable[[AsyncStorage], _SweptManager]


def _when(now: datetime | None) -> datetime:
    when = datetime.now(UTC) if now is None else now
    if when.tzinfo is None:
        raise ValueError(f"now must be a timezone-aware datetime, got naive {when!r}")
    return when


async def _fire_timer(manager: _SweptManager, ref: DueRef, now: datetime) -> Recovered:
    """Apply the timer of ``ref`` if it is still due (as ``clock.fire_timer``)."""
    name, session = ref.instance, ref.session
    try:
        transition = await manager._drive(ops.advance_instance(manager, name, now))  # type: ignore[arg-type]
    except (InvalidTransitionError, UnknownInstanceError) as exc:
        transition, why = None, str(exc)
    else:
        why = "not due any more (applied by another process, or the instance moved on)"
    if transition is None:
        await manager.storage.forget_due(name, DueKind.TIMER, ref.at)
        return Recovered(session, name, "left", why)
    detail = _describe(transition, name)
    clock_log.info(
        "timer of %s of session %r: %s",
        name,
        session,
        detail,
        extra={"session": session, "instance": name},
    )
    return Recovered(session, name, "timer fired", detail)


async def _per_session(
    storage: AsyncStorage,
    factory: AsyncManagerFactory,
    refs: list[DueRef],
    act: Callable[[_SweptManager, DueRef], Any],
) -> list[Recovered]:
    """Act on ``refs`` one session at a time (a session's entries in order), sessions in
    the order of their oldest entry; the actions come back in the order of ``refs``."""
    by_session: dict[str, list[DueRef]] = {}
    for ref in refs:
        by_session.setdefault(ref.session, []).append(ref)
    done: dict[DueRef, Recovered] = {}
    for session, mine in by_session.items():
        session_storage = storage.session(session)
        try:
            manager = factory(session_storage)
            for ref in mine:
                done[ref] = await act(manager, ref)
        finally:
            # Lets go of its share of the engine (an instance it scheduled and runs on
            # this loop takes one again).
            await session_storage.aclose()
    return [done[ref] for ref in refs]


async def atick_store(
    storage: AsyncStorage,
    factory: AsyncManagerFactory,
    *,
    now: datetime | None = None,
    limit: int = TICK_BATCH,
) -> RecoveryReport:
    """Apply every timer of the store due at ``now`` (default: the real clock), oldest first.

    The coroutine twin of :func:`~triggers_core.runtime.clock.tick_store`: one
    read of the due index (at most ``limit`` entries: the cost is bounded by
    what is due), then one compare-and-swap per timer, which re-checks it.
    """
    when = _when(now)
    refs = await storage.due_entries(DueKind.TIMER, when, limit=limit)
    actions = await _per_session(
        storage, factory, refs, lambda manager, ref: _fire_timer(manager, ref, when)
    )
    return RecoveryReport(tuple(actions), len(refs), False)


async def asweep_store(
    storage: AsyncStorage,
    factory: AsyncManagerFactory,
    *,
    now: datetime | None = None,
    dispatch_lease: float = DEFAULT_DISPATCH_LEASE,
    limit: int = SWEEP_BATCH,
) -> RecoveryReport:
    """Take over the lost runs, dispatch the lost messages again and apply the due timers of
    every session of a store: the coroutine twin of
    :func:`~triggers_core.runtime.recovery.sweep_store`, with the same decisions.

    Reads at most ``limit`` due entries of each kind (the oldest), so its cost is
    bounded by what is due, never by the number of sessions.
    """
    when = _when(now)
    leases = await storage.due_entries(DueKind.LEASE, when, limit=limit)
    dispatches = await storage.due_entries(
        DueKind.DISPATCH, when - timedelta(seconds=dispatch_lease), limit=limit
    )

    async def take_over(manager: _SweptManager, ref: DueRef) -> Recovered:
        found: Recovered = await manager._drive(_take_over_steps(manager, ref, when, False))  # type: ignore[arg-type]
        return found

    async def redispatch(manager: _SweptManager, ref: DueRef) -> Recovered:
        found: Recovered = await manager._drive(_redispatch_steps(manager, ref, False))  # type: ignore[arg-type]
        return found

    actions = await _per_session(storage, factory, leases, take_over)
    actions += await _per_session(storage, factory, dispatches, redispatch)
    timers = await atick_store(storage, factory, now=when, limit=limit)
    for action in actions:
        if action.action != "left":
            log.warning(
                "recovered: %s of session %r: %s, %s",
                action.instance,
                action.session,
                action.action,
                action.detail,
                extra={"session": action.session, "instance": action.instance},
            )
    examined = len(leases) + len(dispatches) + timers.examined
    return RecoveryReport(tuple(actions) + timers.actions, examined, False)


class AsyncStoreSweeper(SweepRounds[AsyncStorage, AsyncManagerFactory]):
    """Sweeps one store from an event loop: the clock every ``tick_interval`` seconds,
    recovery every ``interval`` seconds, as a task of that loop.

    One per store and event loop (see :meth:`for_store`). A sweep that fails
    (the store is down) is logged and tried again at the next tick; the task
    never ends on an error of the store.
    """

    _running: ClassVar[
        weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[object, AsyncStoreSweeper]]
    ] = weakref.WeakKeyDictionary()

    def __init__(
        self,
        storage: AsyncStorage,
        factory: AsyncManagerFactory,
        interval: float,
        tick_interval: float = DEFAULT_TICK_INTERVAL,
    ) -> None:
        super().__init__(storage, factory, interval, tick_interval)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wait = 0.0

    @classmethod
    def running(cls, storage: AsyncStorage) -> AsyncStoreSweeper | None:
        """The sweeper of ``storage``'s store on the running loop, if one runs."""
        key = storage.store_identity()
        if key is None:
            return None
        sweeper = cls._running.get(asyncio.get_running_loop(), {}).get(key)
        if sweeper is None or sweeper._task is None or sweeper._task.done():
            return None
        return sweeper

    @classmethod
    def for_store(
        cls,
        storage: AsyncStorage,
        factory: AsyncManagerFactory,
        interval: float,
        tick_interval: float = DEFAULT_TICK_INTERVAL,
    ) -> AsyncStoreSweeper | None:
        """The sweeper of ``storage``'s store on the running loop, started on first call.

        None for a store that cannot be named (:meth:`AsyncStorage.store_identity`).
        Call it from a coroutine (it needs the running loop).
        """
        key = storage.store_identity()
        if key is None:
            return None
        found = cls.running(storage)
        if found is not None:
            return found
        loop = asyncio.get_running_loop()
        # Its own storage object: the caller's may be closed while the sweeper runs.
        sweeper = cls(storage.session(storage.uid), factory, interval, tick_interval)
        cls._running.setdefault(loop, {})[key] = sweeper
        sweeper._task = loop.create_task(
            sweeper._serve(), name=f"triggers-sweeper {storage.backend_name}"
        )
        return sweeper

    def stop(self) -> None:
        """Stop sweeping: the round under way ends, then the task (see :meth:`wait_stopped`)."""
        self._stopping.set()
        self._forget()

    def _forget(self) -> None:
        """Leave the registry (the task holds its loop: a stopped sweeper must not)."""
        for loop, sweepers in list(self._running.items()):
            for key, sweeper in list(sweepers.items()):
                if sweeper is self:
                    del sweepers[key]
            if not sweepers:
                self._running.pop(loop, None)

    @classmethod
    async def stop_all(cls) -> None:
        """Stop every sweeper of the running loop and wait until their tasks have ended
        (before closing the loop's connections: no sweep is left half way through a query).
        A manager built afterwards starts one again."""
        sweepers = list(cls._running.get(asyncio.get_running_loop(), {}).values())
        for sweeper in sweepers:
            sweeper.stop()
        for sweeper in sweepers:
            await sweeper.wait_stopped()

    async def wait_stopped(self) -> None:
        """Wait until the task has ended (after :meth:`stop`)."""
        if self._task is not None:
            await asyncio.wait({self._task})

    async def _rest(self, seconds: float) -> bool:
        """Wait ``seconds``, or less if :meth:`stop` is called; True: go on."""
        if not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)
        return not self._stopping.is_set()

    async def _serve(self) -> None:
        # The first round one tick after the start: a script that ends at once never has a
        # sweep cut off by the loop's end (which cancels this task wherever it waits).
        self._next_sweep = time.monotonic() + self.tick_interval
        try:
            while await self._rest(self.tick_interval if self.ticks == 0 else self._wait):
                full = False
                try:
                    if self.begin():
                        await asweep_store(self.storage, self.factory)
                    else:
                        report = await atick_store(self.storage, self.factory)
                        full = report.examined >= TICK_BATCH
                except Exception as exc:
                    self.failed(exc)
                self._wait = self.end(full)
        finally:
            self._forget()
            with contextlib.suppress(Exception):
                await self.storage.aclose()
