"""AsyncTriggerManager: the trigger manager for asyncio applications.

The same operations as :class:`~triggers_core.runtime.manager.TriggerManager`,
as coroutines, over an :class:`~triggers_core.runtime.async_storage.AsyncStorage`:
nothing here blocks the event loop. No decision is made here: every operation
is a generator of the shell core (:mod:`triggers_core.runtime.shell`,
:mod:`~triggers_core.runtime.shell_run`, :mod:`~triggers_core.runtime.operator_steps`)
that :meth:`AsyncTriggerManager._drive` runs, awaiting each request (a load, a
compare-and-swap, a backoff, a hook, a dispatch) where the synchronous manager
blocks on it. So the commit loop, the hook order, dispatch-failure recording
and the outcome checks are those of the synchronous manager, word for word.

Hooks (``_post_fire``, ``_post_replay``, ``_post_skip``) may be coroutines:
what a hook returns is awaited if it is awaitable. Scheduled instances go to
the in-process ``"asyncio"`` runner by default (each an asyncio task of this
loop, see :mod:`triggers_core.runtime.async_runner`); a synchronous runner
(``celery``, ``threading``) is called in a worker thread with the synchronous
manager registered under :attr:`AsyncTriggerManager.registry_key` over the
storage's synchronous twin (:meth:`AsyncStorage.sync_twin`), which is what a
Celery message names and a worker rebuilds.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar, cast

from triggers_core import engine
from triggers_core.engine.effects import ScheduleInstance
from triggers_core.engine.leases import DEFAULT_DISPATCH_LEASE
from triggers_core.engine.state import Status, TaskInstance
from triggers_core.errors import ConcurrencyError, StorageError, UnsupportedOperationError
from triggers_core.runtime import operator_steps as ops
from triggers_core.runtime import shell
from triggers_core.runtime.async_storage import AsyncStorage
from triggers_core.runtime.async_sweeper import AsyncStoreSweeper
from triggers_core.runtime.async_transactional import fire_transactional_async
from triggers_core.runtime.commit import COMMIT_TURN_TIMEOUT
from triggers_core.runtime.firing import FireResult
from triggers_core.runtime.lifecycle import LIFECYCLE_LOGGER
from triggers_core.runtime.outcomes import Compute, Outcomes
from triggers_core.runtime.ports import SessionManager, TaskRunner
from triggers_core.runtime.recovery import (
    DEFAULT_SWEEP_INTERVAL,
    RecoveryReport,
    recover_session_steps,
)
from triggers_core.runtime.redaction import redact
from triggers_core.runtime.registry import open_async_storage, session_storage
from triggers_core.runtime.registry import runners as runner_registry
from triggers_core.runtime.shell_run import HoldLease, ReleaseLease, RunBody, run_instance_steps
from triggers_core.runtime.storage import _sort_key

__all__ = ["AsyncTriggerManager"]

#: The requests made while holding the commit turn; any other gives it back first.
_IN_TURN = frozenset({shell.Load, shell.Swap, shell.Turn})

T = TypeVar("T")

lifecycle = logging.getLogger(LIFECYCLE_LOGGER)


class AsyncTriggerManager:
    """Fires triggers and manages task instances for one session, with coroutines.

    ``storage`` is an :class:`AsyncStorage` or a storage URL opened through the
    async storage registry (``memory://``, ``sqlite+aiosqlite://``,
    ``postgresql+asyncpg://``, ``postgresql+psycopg://``; ``uid`` then names the
    session). A storage object (and so a manager) belongs to one event loop.
    """

    #: The synchronous manager class (in ``triggers.managers``) that a worker
    #: rebuilds for instances this manager hands to a synchronous runner (Celery).
    registry_key: ClassVar[str] = "default"
    #: Runner for tasks without a ``using`` directive.
    default_runner: str = "asyncio"
    #: As on :class:`~triggers_core.runtime.manager.TriggerManager`.
    max_attempts: int = 100
    backoff_base: float = 0.001
    backoff_cap: float = 0.1
    max_cascade_depth: int = engine.DEFAULT_MAX_CASCADE_DEPTH
    #: Seconds between two recovery sweeps of this manager's store by a background task of
    #: the event loop (:class:`~triggers_core.runtime.async_sweeper.AsyncStoreSweeper`; it
    #: also ticks the store's clock every second, so ``within``, ``delay`` and retry
    #: cooldowns fire). Started by the first operation of a manager whose default runner
    #: is the in-process ``"asyncio"`` one, whose clock is the real one and whose storage
    #: keeps leases; None: never (call :meth:`advance` and :meth:`recover` yourself).
    sweep_interval: float | None = DEFAULT_SWEEP_INTERVAL

    def __init__(
        self,
        storage: AsyncStorage | str | None = None,
        uid: str | None = None,
        *,
        runners: Mapping[str, TaskRunner] | None = None,
        default_runner: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.storage = session_storage(storage, uid, AsyncStorage, open_async_storage)
        self._runners: dict[str, TaskRunner] = dict(runners or {})
        if default_runner is not None:
            self.default_runner = default_runner
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sync_view: Any = None
        # The background sweeper starts with the first operation (building a manager does no I/O).
        self._sweeper_pending = clock is None

    # -- plumbing ---------------------------------------------------------------------

    @property
    def uid(self) -> str:
        """The session UID."""
        return self.storage.uid

    def now(self) -> datetime:
        """The current time (from the ``clock`` given to the constructor)."""
        return self._clock()

    def get_runner(self, name: str | None = None) -> TaskRunner:
        """The runner called ``name`` (default :attr:`default_runner`), created once."""
        key = name or self.default_runner
        runner = self._runners.get(key)
        if runner is None:
            runner = self._runners[key] = runner_registry.load(key)()
        return runner

    @property
    def runners(self) -> dict[str, TaskRunner]:
        """The runners given to or created by this manager so far, by name (a copy)."""
        return dict(self._runners)

    async def join(self, timeout: float | None = 60.0) -> None:
        """Wait until the instances the ``asyncio`` runner runs (and their cascades) end."""
        runner = self._runners.get("asyncio")
        join = getattr(runner, "join", None)
        if join is not None:
            await join(timeout)

    async def aclose(self) -> None:
        """Release the storage's connections."""
        await self.storage.aclose()

    async def _drive(self, steps: shell.Steps[T], storage: Any = None) -> T:
        """Run an operation of the shell core, awaiting each request it makes (on
        ``storage``, the session's unless given: a transactional fire's bound one)."""
        storage = self.storage if storage is None else storage
        if self._sweeper_pending:
            await self._start_sweeper()
        turn = storage.commit_lock
        held = False
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    if error is None:
                        request = steps.send(value)
                    else:
                        request, error = steps.throw(error), None
                except StopIteration as stop:
                    result: T = stop.value
                    return result
                value = None
                kind = type(request)
                if held and kind not in _IN_TURN:
                    held = False  # a load and its compare-and-swap, no more
                    turn.release()
                try:
                    if kind is shell.Load:
                        if request[1] and not held:
                            await self._take(turn)
                            held = True
                        value = await storage.load(request[0])
                    elif kind is shell.Turn:
                        if not held:
                            await self._take(turn)
                            held = True
                    elif kind is shell.Swap:
                        value = await storage.compare_and_swap(*request)
                    elif kind is shell.CallHook:
                        called = request[0](*request[1])
                        if inspect.isawaitable(called):
                            await called
                    elif kind is shell.Dispatch:
                        await self._dispatch(request[0])
                    elif kind is shell.Backoff:
                        await asyncio.sleep(request.seconds)
                    elif kind is shell.StorageCall:
                        value = await getattr(storage, request.method)(*request.args)
                    elif kind is RunBody:
                        value = await _run_body(request.outcomes, request.args)
                    elif kind is HoldLease:
                        value = asyncio.get_running_loop().create_task(self._renew(*request.args))
                    elif kind is ReleaseLease:
                        request.held.cancel()
                    else:
                        raise TypeError(f"the shell asked for something unknown: {request!r}")
                except BaseException as exc:
                    error = exc
        finally:
            if held:
                turn.release()

    async def _start_sweeper(self) -> None:
        """Start the store's sweeper task on this loop, once (see :attr:`sweep_interval`)."""
        self._sweeper_pending = False
        if self.sweep_interval is None or self.default_runner != "asyncio":
            return
        if AsyncStoreSweeper.running(self.storage) is not None:
            return
        try:
            await self.storage.check_leases()
        except (StorageError, UnsupportedOperationError) as exc:  # no leases, or store down
            lifecycle.debug("not starting a sweeper for session %r: %s", self.uid, exc)
            return
        cls = type(self)
        shared: dict[str, TaskRunner] = {}

        def build(storage: AsyncStorage) -> AsyncTriggerManager:
            manager = cls(storage, runners=shared)
            manager._sweeper_pending = False
            manager._runners = shared  # one runner per name for every session it sweeps
            return manager

        AsyncStoreSweeper.for_store(self.storage, build, self.sweep_interval)

    async def _take(self, turn: asyncio.Lock) -> None:
        if not turn.locked():  # free: taken at once, no timer to arm
            await turn.acquire()
            return
        try:
            async with asyncio.timeout(COMMIT_TURN_TIMEOUT):
                await turn.acquire()
        except TimeoutError:
            raise ConcurrencyError(
                f"waited {COMMIT_TURN_TIMEOUT:g}s for other coroutines committing to this session",
                backend=self.storage.backend_name,
                session=self.uid,
            ) from None

    async def _dispatch(self, effect: ScheduleInstance) -> None:
        runner = self.get_runner(effect.using)
        if getattr(runner, "runs_coroutines", False):
            runner.dispatch(cast(SessionManager, self), effect)
            return
        view = self._synchronous()  # a blocking runner: in a thread, with a sync manager
        await asyncio.to_thread(runner.dispatch, view, effect)

    def _synchronous(self) -> SessionManager:
        """The synchronous manager (:attr:`registry_key`) of this session, on the sync twin."""
        if self._sync_view is None:
            from triggers_core.runtime.manager import managers  # noqa: PLC0415 - one cycle less

            cls = managers.load(self.registry_key)
            default = "threading" if self.default_runner == "asyncio" else self.default_runner
            self._sync_view = cls(
                self.storage.sync_twin(),
                runners={k: r for k, r in self._runners.items() if k != "asyncio"},
                default_runner=default,
                clock=self._clock,
            )
        return cast(SessionManager, self._sync_view)

    async def _renew(self, name: str, owner: str, seconds: float) -> None:
        """Renew a run's lease every ``seconds / 3`` until cancelled or refused."""
        while True:
            await asyncio.sleep(seconds / 3)
            expires = self.now() + timedelta(seconds=seconds)
            try:
                if not await self.storage.renew_lease(name, owner, expires):
                    return  # taken over: its outcome will be refused
            except Exception as exc:  # a passing fault: try again at the next turn
                lifecycle.warning("could not renew the lease of %s: %s", name, exc)

    # -- operations -------------------------------------------------------------------

    async def update_configuration(self, config: Mapping[str, Any]) -> None:
        """Add or replace tasks by name (see ``TriggerManager.update_configuration``)."""
        await self._drive(shell.update_configuration_steps(self, config))

    async def fire(
        self,
        trigger_name: str,
        trigger_kwargs: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        strict: bool = False,
        session: object = None,
    ) -> list[TaskInstance]:
        """Fire a trigger; return the instances it scheduled (see ``TriggerManager.fire``).

        ``session`` (a SQLAlchemy ``AsyncSession``, or what ``async with
        transaction(async_connection)`` yields) writes inside that open
        transaction and dispatches after it commits (docs/transactions.md).
        """
        result = await self.fire_result(
            trigger_name,
            trigger_kwargs,
            idempotency_key=idempotency_key,
            strict=strict,
            session=session,
        )
        return result.scheduled

    async def fire_result(
        self,
        trigger_name: str,
        trigger_kwargs: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        strict: bool = False,
        session: object = None,
    ) -> FireResult:
        """:meth:`fire`, returning a :class:`~triggers_core.runtime.firing.FireResult`."""
        if session is not None:
            return await fire_transactional_async(
                self,
                trigger_name,
                trigger_kwargs,
                idempotency_key=idempotency_key,
                strict=strict,
                session=session,
            )
        steps = shell.fire_steps(self, trigger_name, trigger_kwargs, idempotency_key, strict)
        return await self._drive(steps)

    async def run_instance(
        self,
        instance_name: str,
        *,
        on_started: Callable[[TaskInstance], None] | None = None,
        guard_cascade: bool = False,
        worker: Mapping[str, Any] | None = None,
    ) -> TaskInstance | None:
        """Run a scheduled instance here and now (see ``TriggerManager.run_instance``)."""
        steps = run_instance_steps(self, instance_name, on_started, guard_cascade, worker)
        return await self._drive(steps)

    async def replay_failed_instance(
        self,
        failed_instance: str | TaskInstance,
        replacement_kwargs: Mapping[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> TaskInstance:
        """Replay a failed instance; return the scheduled clone."""
        steps = ops.replay_failed_instance(self, failed_instance, replacement_kwargs, actor=actor)
        return await self._drive(steps)

    async def skip_failed_instance(
        self,
        failed_instance: str | TaskInstance,
        cascade: bool = False,
        result: Mapping[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> TaskInstance:
        """Mark a failed instance skipped; with ``cascade`` its task name fires with ``result``."""
        steps = ops.skip_failed_instance(self, failed_instance, cascade, result, actor=actor)
        return await self._drive(steps)

    async def update_instance_status(
        self,
        task_instance: str | TaskInstance,
        status: Status | str,
        metadata: Mapping[str, Any] | None = None,
        cascade: bool = False,
        cascade_kwargs: Mapping[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> TaskInstance:
        """Force an instance's status (operators' tool); optionally cascade."""
        steps = ops.update_instance_status(
            self, task_instance, status, metadata, cascade, cascade_kwargs, actor=actor
        )
        return await self._drive(steps)

    async def update_instance_metadata(
        self, task_instance: str | TaskInstance, metadata: Mapping[str, Any]
    ) -> TaskInstance:
        """Merge ``metadata`` into an instance's metadata."""
        return await self._drive(ops.update_instance_metadata(self, task_instance, metadata))

    async def mark_instance_logs_resolved(self, task_instance: str | TaskInstance) -> TaskInstance:
        """Acknowledge an instance's ERROR logs."""
        return await self._drive(ops.mark_instance_logs_resolved(self, task_instance))

    async def fail_instance(
        self, task_instance: str | TaskInstance, reason: str, *, actor: str | None = None
    ) -> TaskInstance:
        """Fail an ``unstarted``, ``scheduled`` or ``running`` instance by hand."""
        return await self._drive(ops.fail_instance(self, task_instance, reason, actor=actor))

    async def advance(self, now: datetime | None = None) -> list[TaskInstance]:
        """Apply this session's timers due at ``now`` (the session's ``tick``)."""
        return await self._drive(ops.advance(self, now))

    async def recover(
        self, *, dispatch_lease: float = DEFAULT_DISPATCH_LEASE, dry_run: bool = False
    ) -> RecoveryReport:
        """Take over this session's lost instances; dispatch again its lost messages.

        As ``TriggerManager.recover`` (the same decisions): instances ``running``
        under an expired lease are failed (``WorkerLost``) and replayed per their
        task's ``on_lost`` policy, instances ``scheduled`` for longer than
        ``dispatch_lease`` seconds are dispatched again; ``dry_run`` changes nothing.
        """
        steps = recover_session_steps(
            self, now=self.now(), dispatch_lease=dispatch_lease, dry_run=dry_run
        )
        return await self._drive(steps)

    # -- inspection -------------------------------------------------------------------

    async def get_instance(self, name: str) -> TaskInstance:
        """One instance; :class:`~triggers_core.errors.UnknownInstanceError` if missing."""
        return await self._drive(shell.get_instance_steps(self.uid, name))

    async def instances(self) -> dict[str, TaskInstance]:
        """Every instance, by name, in creation order per task."""
        state = (await self.storage.load_full()).state
        return dict(sorted(state.instances.items(), key=lambda kv: _sort_key(kv[1])))

    async def latest_kwargs(self) -> Mapping[str, Mapping[str, Any]]:
        """Trigger name -> the kwargs it last fired with."""
        return (await self.storage.load()).state.latest_kwargs

    # -- hooks (plain functions or coroutines) ----------------------------------------

    def _post_fire(self, trigger_name: str, scheduled_instances: list[TaskInstance]) -> Any:
        """Called after every fire (and cascade); may be ``async def``."""

    def _post_replay(self, replayed_instance: TaskInstance) -> Any:
        """Called after a replay; may be ``async def``."""

    def _post_skip(self, instance: TaskInstance, cascade: bool) -> Any:
        """Called after an operator skipped a failed instance; may be ``async def``."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {redact(repr(self.storage))}>"


async def _run_body(outcomes: Outcomes, args: tuple[Any, ...]) -> Compute:
    """The task body, on this loop (``async def``) or in a worker thread (a plain one)."""
    return await outcomes.arun_task(*args)
