"""TriggerManager: the thin shell around the pure engine.

Every operation follows one loop: load the working set -> compute the pure
transition -> compare-and-swap -> on conflict reload and recompute (bounded,
jittered backoff) -> only after the commit, log the lifecycle events, call the
hooks, then hand scheduled instances to their runners in order. Engine errors
propagate unchanged and nothing is written.

A fire given an ``idempotency_key`` that the session already recorded is a
duplicate: the engine says so and there is nothing to store, so the loop ends
without a compare-and-swap, no hook runs and nothing is dispatched; the call
returns the instances the first fire scheduled as they are now. A runner whose
messages may be delivered more than once (the Celery worker) calls
``run_instance(..., guard_cascade=True)``: the finish then records its cascade
the same way, so an instance finished twice cascades once.

Hooks run *before* the runners get the work, so in one process the hooks of an
operation always run before any hook of the work it scheduled (cause before
effect), whatever the runner: a thread, or Celery's eager mode, which runs the
task inside ``dispatch``.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from triggers_core import engine
from triggers_core.engine.config import parse_configuration
from triggers_core.engine.effects import (
    InstanceReplayed,
    InstanceSkipped,
    ScheduleInstance,
    TriggerFired,
)
from triggers_core.engine.idempotency import cascade_key, fire_key
from triggers_core.engine.leases import (
    DEFAULT_DISPATCH_LEASE,
    DEFAULT_LEASE_SECONDS,
    Lease,
    lease_owner,
    run_key,
)
from triggers_core.engine.scopes import (
    HEADER_ONLY,
    Scope,
    Selector,
    configuration_scope,
    fire_scope,
    instance_scope,
)
from triggers_core.engine.sizes import bounded_mapping, check_task_sizes, check_task_timers
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.engine.transition import Transition
from triggers_core.errors import (
    ConcurrencyError,
    ConflictError,
    DispatchError,
    InvalidTransitionError,
    RegistryError,
    SerializationError,
    StorageError,
    UnsupportedOperationError,
)
from triggers_core.runtime.cascade_guard import guards_cascades
from triggers_core.runtime.commit import CommitPolicy, commit
from triggers_core.runtime.firing import FireResult, check_known
from triggers_core.runtime.leases import KEEPER
from triggers_core.runtime.lifecycle import (
    LIFECYCLE_LOGGER,
    log_outcome,
    log_started,
    log_transition,
)
from triggers_core.runtime.observe import current as observer
from triggers_core.runtime.operator import OperatorActions
from triggers_core.runtime.outcomes import (
    NOT_THE_OUTCOME,
    Compute,
    Outcomes,
    exception_type_name,
    format_exception,
)
from triggers_core.runtime.ports import TaskRunner
from triggers_core.runtime.recovery import (
    DEFAULT_SWEEP_INTERVAL,
    RecoveryReport,
    StoreSweeper,
    recover_session,
)
from triggers_core.runtime.redaction import redact
from triggers_core.runtime.registry import Registry, open_storage
from triggers_core.runtime.registry import runners as runner_registry
from triggers_core.runtime.storage import Storage
from triggers_core.runtime.tasks import TaskContext, task_policy
from triggers_core.runtime.transactional import fire_transactional

__all__ = ["LIFECYCLE_LOGGER", "TriggerManager", "exception_type_name", "managers"]

lifecycle = logging.getLogger(LIFECYCLE_LOGGER)

#: This host's name, as leases record it.
_HOST = socket.gethostname()


class TriggerManager(OperatorActions):
    """Fires triggers and manages task instances for one session.

    ``storage`` is a :class:`Storage` or a storage URL (then ``uid`` names the
    session; with neither, ``TRIGGERS_STORAGE_URL`` or ``memory://`` is used).
    Subclass to override the hooks or :attr:`default_runner`; register the
    subclass under :attr:`registry_key` (entry point group
    ``triggers.managers``) so workers can rebuild it.
    """

    #: Key in :data:`managers` (below) that workers use to rebuild this class.
    registry_key: ClassVar[str] = "default"
    #: Runner for tasks without a ``using`` directive.
    default_runner: str = "threading"
    #: Compare-and-swap attempts per operation before :class:`ConcurrencyError`.
    max_attempts: int = 100
    #: Backoff between attempts: full jitter up to ``min(cap, base * 2**attempt)`` seconds.
    backoff_base: float = 0.001
    backoff_cap: float = 0.1
    #: Cascades that may lead to an instance before it fails instead of running
    #: (``CascadeDepthExceeded``): stops tasks that keep creating each other.
    max_cascade_depth: int = engine.DEFAULT_MAX_CASCADE_DEPTH
    #: Seconds between two sweeps of this manager's store by a background thread of
    #: this process (taking over the instances of dead runs, dispatching lost messages
    #: again; see :mod:`triggers_core.runtime.recovery`). Started by the first manager
    #: of a store whose default runner is the in-process ``"threading"`` one and whose
    #: clock is the real one; None: never (a Celery worker runs a sweeper of its own).
    sweep_interval: float | None = DEFAULT_SWEEP_INTERVAL

    def __init__(
        self,
        storage: Storage | str | None = None,
        uid: str | None = None,
        *,
        runners: Mapping[str, TaskRunner] | None = None,
        default_runner: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if isinstance(storage, Storage):
            if uid is not None and uid != storage.uid:
                raise ValueError(f"uid {uid!r} given with a storage for session {storage.uid!r}")
            self.storage = storage
        else:
            if uid is None:
                raise ValueError("a session uid is required when storage is a URL or None")
            self.storage = open_storage(storage, uid)
        self._runners: dict[str, TaskRunner] = dict(runners or {})
        self._runners_lock = threading.Lock()
        if default_runner is not None:
            self.default_runner = default_runner
        self._clock = clock or (lambda: datetime.now(UTC))
        # The background sweeper starts with the first commit (building a manager does no I/O).
        self._sweeper_pending = clock is None
        # A clock that moves the timers itself (``triggers_core.testing.FakeClock``) learns
        # of the managers that use it, so that moving it ticks their stores.
        watch = getattr(clock, "watch", None)
        if callable(watch):
            watch(self)

    def _start_sweeper(self) -> None:
        """Start the store's background sweeper for in-process runs (:attr:`sweep_interval`)."""
        self._sweeper_pending = False
        if self.sweep_interval is None or self.default_runner != "threading":
            return
        try:
            if not self._keeps_leases():
                return
        except StorageError as exc:  # unreachable now: the next manager of the store tries again
            lifecycle.debug("not starting a sweeper for session %r: %s", self.uid, exc)
            self.__dict__.pop("_leases", None)
            return
        StoreSweeper.for_store(self.storage, _sweeper_manager(type(self)), self.sweep_interval)

    def recover(
        self, *, dispatch_lease: float = DEFAULT_DISPATCH_LEASE, dry_run: bool = False
    ) -> RecoveryReport:
        """Take over this session's lost instances; dispatch again its lost messages.

        Instances ``running`` under an expired lease are failed (``WorkerLost``)
        and replayed per their task's ``on_lost`` policy; instances
        ``scheduled`` for longer than ``dispatch_lease`` seconds are
        dispatched again. ``dry_run`` reports and changes nothing. The
        store-wide sweep is :func:`triggers_core.recover`.
        """
        return recover_session(self, now=self.now(), dispatch_lease=dispatch_lease, dry_run=dry_run)

    # -- plumbing -----------------------------------------------------------------

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
        with self._runners_lock:
            runner = self._runners.get(key)
            if runner is None:
                runner = runner_registry.load(key)()
                self._runners[key] = runner
            return runner

    @property
    def runners(self) -> dict[str, TaskRunner]:
        """The runners given to or created by this manager so far, by name (a copy)."""
        with self._runners_lock:
            return dict(self._runners)

    def _commit(self, compute: Compute, scope: Scope | Selector = HEADER_ONLY) -> Transition:
        """Run the commit loop (:func:`~triggers_core.runtime.commit.commit`) on this session."""
        if self._sweeper_pending:
            self._start_sweeper()
        policy = CommitPolicy(self.max_attempts, self.backoff_base, self.backoff_cap)
        return commit(self.storage, compute, scope, policy)

    def _perform(self, transition: Transition) -> None:
        """Log the committed transition, call its hooks, then dispatch what it scheduled.

        The hooks see the instances as committed (scheduled instances are
        ``scheduled``). Dispatching happens even if a hook raises: the state is
        stored, so the work must not be stranded. A runner that refuses an
        instance gets it marked ``failed`` and the call raises
        :class:`~triggers_core.errors.DispatchError` (after a hook's error, if
        both happened, with the hook's error as its context).
        """
        log_transition(lifecycle, self.uid, transition)
        try:
            self._call_hooks(transition)
        finally:
            self._dispatch(transition)

    def _call_hooks(self, transition: Transition) -> None:
        instances = transition.state.instances
        for effect in transition.effects:
            if isinstance(effect, TriggerFired):
                self._post_fire(effect.trigger_name, [instances[n] for n in effect.scheduled])
            elif isinstance(effect, InstanceReplayed):
                self._post_replay(instances[effect.instance_name])
            elif isinstance(effect, InstanceSkipped):
                self._post_skip(instances[effect.instance_name], effect.cascade)

    def _dispatch(self, transition: Transition) -> None:
        failures: list[tuple[str, BaseException]] = []
        for effect in transition.effects:
            if isinstance(effect, ScheduleInstance):
                try:
                    self._dispatch_one(effect)
                except Exception as exc:
                    failures.append((effect.instance_name, exc))
                    self._record_dispatch_failure(effect, exc)
        if failures:
            raise DispatchError(failures) from failures[0][1]

    def _dispatch_one(self, effect: ScheduleInstance) -> None:
        watcher = observer()
        if watcher is None or not watcher.watches_dispatch:
            self.get_runner(effect.using).dispatch(self, effect)
            return
        token = watcher.dispatch_begin(self.uid, effect)
        try:
            self.get_runner(effect.using).dispatch(self, effect)
        except BaseException as exc:
            watcher.dispatch_end(token, exc)
            raise
        watcher.dispatch_end(token, None)

    def _record_dispatch_failure(
        self, effect: ScheduleInstance, exc: BaseException
    ) -> TaskInstance | None:
        name = effect.instance_name
        lifecycle.error(
            "could not dispatch %s of session %r: %s",
            name,
            self.uid,
            exc,
            exc_info=exc,
            extra={"session": self.uid, "instance": name, "status": Status.FAILED.value},
        )
        try:
            transition = self._commit(
                lambda s: engine.fail(
                    s,
                    name,
                    now=self.now(),
                    exception_type=exception_type_name(exc),
                    exception_info=format_exception(exc),
                    exception_context={"dispatch": effect.using or self.default_runner},
                ),
                instance_scope(name, cascade=False),
            )
        except InvalidTransitionError:
            return None  # it already moved on (e.g. a worker picked it up)
        return transition.state.instances[name]

    # -- public API ---------------------------------------------------------------

    def update_configuration(self, config: Mapping[str, Any]) -> None:
        """Add or replace tasks by name (others stay). Never re-applies old triggers.

        Raises :class:`~triggers_core.errors.ConfigurationError` listing every
        problem; nothing is stored then. A ``using`` directive must name a
        runner of the runner registry or one given to this manager.
        """
        known_runners = {*runner_registry.names(), *self.runners}
        parsed = parse_configuration(config, runners=known_runners)  # once, before any I/O
        check_task_sizes(parsed, self.storage.max_value_bytes)
        check_task_timers(parsed, self.storage.max_timer_seconds, "the storage's timeout")
        self._commit(lambda s: engine.update_configuration(s, parsed), configuration_scope(parsed))

    def fire(
        self,
        trigger_name: str,
        trigger_kwargs: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        strict: bool = False,
        session: object = None,
        on_commit: bool | str = False,
    ) -> list[TaskInstance]:
        """Fire a trigger; return the instances it scheduled, as committed.

        The returned instances are snapshots of the stored state (status
        ``scheduled``); by the time you read them they may have run (in
        Celery's eager mode they already have). Read ``manager.storage[name]``
        for an instance's current state. ``_post_fire`` runs before the
        instances are handed to their runners.

        ``idempotency_key`` (a non-empty string of at most 256 characters, see
        :mod:`triggers_core.engine.idempotency`) makes the fire happen once per
        session and trigger: a later fire of the same trigger with the same
        key changes nothing (no write, no hook, no dispatch; its kwargs are
        ignored, the first fire's won) and returns the instances the first
        fire scheduled, read again from the storage (so as they are now),
        also when both fires race from different processes. A storage that
        keeps no fire records raises
        :class:`~triggers_core.errors.UnsupportedOperationError`.
        :meth:`fire_result` tells whether the engine applied the fire.

        A trigger no task mentions logs one WARNING per process and trigger
        (see :mod:`triggers_core.runtime.firing`); with ``strict`` it raises
        :class:`~triggers_core.errors.UnknownTriggerError` and stores nothing.

        ``session`` (a SQLAlchemy ORM session, or what ``transaction()`` yields)
        writes inside that open transaction, dispatching after it commits;
        ``on_commit`` defers the fire to Django's ``transaction.on_commit``
        (``True``, or a database alias). See docs/transactions.md.
        """
        return self.fire_result(
            trigger_name,
            trigger_kwargs,
            idempotency_key=idempotency_key,
            strict=strict,
            session=session,
            on_commit=on_commit,
        ).scheduled

    def fire_result(
        self,
        trigger_name: str,
        trigger_kwargs: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        strict: bool = False,
        session: object = None,
        on_commit: bool | str = False,
    ) -> FireResult:
        """:meth:`fire`, returning a :class:`~triggers_core.runtime.firing.FireResult`.

        ``result.duplicate`` is True when the session had already applied a
        fire of this trigger with ``idempotency_key`` (decided by the engine
        in the commit that would have recorded it): this fire changed nothing.
        """
        if session is not None or on_commit:
            return fire_transactional(
                self,
                trigger_name,
                trigger_kwargs,
                session=session,
                on_commit=on_commit,
                idempotency_key=idempotency_key,
                strict=strict,
            )
        watcher = observer()
        if watcher is None:
            return self._fire(trigger_name, trigger_kwargs, idempotency_key, strict)
        token = watcher.fire_begin(self.storage, trigger_name)
        try:
            result = self._fire(trigger_name, trigger_kwargs, idempotency_key, strict)
        except BaseException as exc:
            watcher.fire_end(token, 0, False, exc)
            raise
        watcher.fire_end(token, len(result.scheduled), result.duplicate, None)
        return result

    def _fire(
        self,
        trigger_name: str,
        trigger_kwargs: Mapping[str, Any] | None,
        idempotency_key: str | None,
        strict: bool,
    ) -> FireResult:
        # Checked once, before any I/O; every attempt of the commit loop reuses them.
        name = engine.check_trigger_name(trigger_name)
        kwargs = bounded_mapping(trigger_kwargs, "trigger_kwargs", self.storage.max_value_bytes)
        key = None if idempotency_key is None else fire_key(name, idempotency_key)
        if key is not None:
            self.storage.check_fire_keys()

        def compute(state: SessionState) -> Transition:
            if strict:
                check_known(state.tasks, name, self.uid, strict=True)
            return engine.fire_checked(state, name, kwargs, now=self.now(), key=key)

        transition = self._commit(compute, fire_scope(name, key))
        if not strict:
            check_known(transition.state.tasks, name, self.uid, strict=False)
        self._perform(transition)
        duplicate = None if transition.commit else transition.duplicate
        if duplicate is not None:
            return FireResult(self._stored(duplicate.scheduled), duplicate=True)
        return FireResult([transition.state.instances[n] for n in transition.scheduled])

    def _stored(self, names: tuple[str, ...]) -> list[TaskInstance]:
        """The instances ``names`` as stored now, in that order."""
        if not names:
            return []
        found = self.storage.load(Scope(names=frozenset(names))).state.instances
        return [found[name] for name in names if name in found]

    # -- running instances (called by runners) -----------------------------------

    def run_instance(
        self,
        instance_name: str,
        *,
        on_started: Callable[[TaskInstance], None] | None = None,
        guard_cascade: bool = False,
        worker: Mapping[str, Any] | None = None,
    ) -> TaskInstance | None:
        """Run a scheduled instance here and now; commit its outcome and cascade.

        Returns None (and logs) if the instance is no longer scheduled, e.g. a
        redelivered message for an instance that already ran. ``on_started`` is
        called with the instance once it is committed as ``running``, before the
        task runs: a caller can tell an error raised before that point (nothing
        ran) from one raised after it (the outcome may not have been recorded).

        On a storage that keeps leases (:meth:`Storage.check_leases`) the
        instance is started under a lease (``owner``, ``worker``: this host and
        process plus ``worker``, ``leaseExpires``), renewed while the body runs
        (:mod:`triggers_core.runtime.leases`); if the lease is taken over
        meanwhile (this process could not renew it in time), the outcome is
        refused, logged, and None returned. The lease's length is the task's
        ``lease_seconds``.

        With ``guard_cascade`` (for runners whose messages may arrive more than
        once: the Celery worker passes it) the finish records its cascade under
        the instance's name, like an idempotent fire, so an instance finished
        again (an operator forced it back and a redelivered message ran it)
        does not cascade again. On a storage that keeps no fire records (a
        third-party one, or SQL tables created before ``fire_keys``: a warning
        says so, once per storage) the instance runs unguarded, protected as
        always by its status.
        """
        watcher = observer()
        if watcher is None:
            return self._run(instance_name, on_started, guard_cascade, worker)
        token = watcher.run_begin(self.uid, instance_name)
        try:
            outcome = self._run(instance_name, on_started, guard_cascade, worker)
        except BaseException as exc:
            watcher.run_end(token, None, exc)
            raise
        watcher.run_end(token, outcome, None)
        return outcome

    def _run(
        self,
        name: str,
        on_started: Callable[[TaskInstance], None] | None,
        guard_cascade: bool,
        worker: Mapping[str, Any] | None,
    ) -> TaskInstance | None:
        guard = guard_cascade and self._guards_cascades()
        leased = self._keeps_leases()

        def start(state: SessionState) -> Transition:
            lease = None
            if leased:
                found = state.instances.get(name)
                task = state.tasks.get(found.task_name) if found is not None else None
                seconds = task_policy(task.run).lease_seconds if task is not None else None
                lease = self._new_lease(seconds, worker)
            return engine.mark_running(state, name, now=self.now(), lease=lease)

        try:
            started = self._commit(start, instance_scope(name, cascade=False))
        except InvalidTransitionError as exc:
            lifecycle.warning(
                "not running %s in session %r: %s",
                name,
                self.uid,
                exc,
                extra={"session": self.uid, "instance": name, "status": exc.status},
            )
            return None
        instance = started.state.instances[name]
        owner = lease_owner(instance) if leased else None
        held = None
        if owner is not None:
            seconds = instance.metadata.get("leaseSeconds", DEFAULT_LEASE_SECONDS)
            held = KEEPER.hold(self.storage, name, owner, float(seconds), self.now)
        try:
            return self._run_started(instance, started, on_started, guard, owner)
        finally:
            if held is not None:
                KEEPER.release(held)

    def _run_started(
        self,
        instance: TaskInstance,
        started: Transition,
        on_started: Callable[[TaskInstance], None] | None,
        guard: bool,
        owner: str | None,
    ) -> TaskInstance | None:
        name = instance.name
        log_started(lifecycle, self.uid, instance)
        if on_started is not None:
            on_started(instance)
        config = started.state.tasks[instance.task_name]
        context = TaskContext(
            self,
            trigger_kwargs=instance.metadata.get("actualKwargs", {}),
            instance_name=name,
            retries=instance.retries,
            logger=logging.getLogger(f"triggers.tasks.{config.run}"),
            run_key=f"{self.uid}#{run_key(instance)}",
        )
        key = cascade_key(instance.task_name, name) if guard else None
        outcomes = Outcomes.of(self.storage, self.now, self.max_cascade_depth, owner)
        scope = instance_scope(name, cascade=True, guard=key)
        try:
            try:
                compute = outcomes.run_task(name, config.run, context, key is not None)
                transition = self._commit(compute, scope)
            except (StorageError, SerializationError) as exc:
                if isinstance(exc, ConflictError | ConcurrencyError):
                    raise
                transition = self._unwritable(config.run, exc, outcomes, context, (compute, scope))
            except NOT_THE_OUTCOME:
                raise  # the storage or the instance, not the task's outcome: nothing to record
            except Exception as exc:
                # Second line of defence: run_task validates what it can before the
                # commit, but whatever the engine still refuses must not leave the
                # instance running.
                detail = f"{config.run}: its outcome could not be recorded: {exc}"
                compute = outcomes.failure(name, exc, detail, context)
                transition = self._commit(compute, instance_scope(name, cascade=False))
        except InvalidTransitionError as exc:
            if owner is None:
                raise
            lifecycle.warning(
                "the outcome of %s in session %r was not recorded: %s",
                name,
                self.uid,
                exc,
                extra={"session": self.uid, "instance": name, "status": exc.status},
            )
            return None
        log_outcome(lifecycle, self.uid, transition.state.instances[name])
        watcher = observer()
        if watcher is None or not transition.effects:
            self._perform(transition)
            return transition.state.instances[name]
        token = watcher.cascade_begin(self.uid, transition)
        try:
            self._perform(transition)
        except BaseException as exc:
            watcher.cascade_end(token, exc)
            raise
        watcher.cascade_end(token, None)
        return transition.state.instances[name]

    def _unwritable(
        self,
        run: str,
        exc: StorageError | SerializationError,
        outcomes: Outcomes,
        context: TaskContext,
        outcome: tuple[Callable[[SessionState], Transition], Scope | Selector],
    ) -> Transition:
        """The storage did not store an instance's outcome (``compute``): try once more
        (a passing fault, such as a dropped connection), then, if it is refused again (a
        row over the database's packet limit, a value it cannot hold), end the instance
        ``failed`` with that reason, so that it is never left ``running``. If the storage
        refuses that too (it is down), the error is raised as before (the lease, if any,
        then ends the run). Costs one more write of the outcome."""
        try:
            return self._commit(*outcome)
        except (StorageError, SerializationError) as again:
            if isinstance(again, ConflictError | ConcurrencyError):
                raise
            exc = again
        name = context.instance_name
        detail = f"{run}: its outcome could not be written to the storage: {exc}"
        failure = outcomes.failure(name, exc, detail, context)
        try:
            return self._commit(failure, instance_scope(name, cascade=False))
        except Exception as second:
            raise exc from second

    def _keeps_leases(self) -> bool:
        """True if the storage keeps leases (checked once per manager)."""
        keeps = self.__dict__.get("_leases")
        if keeps is None:
            try:
                self.storage.check_leases()
            except UnsupportedOperationError:
                keeps = False
            else:
                keeps = True
            self.__dict__["_leases"] = keeps
        return bool(keeps)

    def _new_lease(self, seconds: float | None, worker: Mapping[str, Any] | None) -> Lease:
        """A lease for a run starting now: a fresh owner token, this process as the worker."""
        length = DEFAULT_LEASE_SECONDS if seconds is None else seconds
        return Lease(
            # 128 random bits from the process's generator (seeded from the OS, and again
            # in every forked child): unique per run, without a system call per instance.
            owner=f"{random.getrandbits(128):032x}",
            expires=self.now() + timedelta(seconds=length),
            seconds=length,
            worker={"host": _HOST, "pid": os.getpid(), **(worker or {})},
        )

    def _guards_cascades(self) -> bool:
        """True if the storage keeps fire records (:func:`.cascade_guard.guards_cascades`)."""
        return guards_cascades(self.storage, self.uid)

    # -- hooks --------------------------------------------------------------------

    def _post_fire(self, trigger_name: str, scheduled_instances: list[TaskInstance]) -> None:
        """Called after every fire (and cascade), with the instances it scheduled."""

    def _post_replay(self, replayed_instance: TaskInstance) -> None:
        """Called after a replay, with the instance whose status became ``replayed``."""

    def _post_skip(self, instance: TaskInstance, cascade: bool) -> None:
        """Called after an operator skipped a failed instance (after its cascade)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {redact(repr(self.storage))}>"


def _sweeper_manager(cls: type[TriggerManager]) -> Callable[[Storage], TriggerManager]:
    """The manager a sweeper builds for a session: ``cls`` as registered, else the default."""

    def build(storage: Storage) -> TriggerManager:
        try:
            registered = managers.load(cls.registry_key)
        except RegistryError:
            registered = TriggerManager
        return registered(storage)

    return build


#: Manager classes by key (entry point group ``triggers.managers``): a Celery
#: worker rebuilds the manager of a message from its ``registry_key``.
managers: Registry[type[TriggerManager]] = Registry(
    "triggers.managers",
    "trigger manager",
    {"default": "triggers_core.runtime.manager:TriggerManager"},
)
