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
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from triggers_core import engine
from triggers_core.engine.leases import (
    DEFAULT_DISPATCH_LEASE,
)
from triggers_core.engine.scopes import (
    HEADER_ONLY,
    Scope,
    Selector,
)
from triggers_core.engine.state import TaskInstance
from triggers_core.engine.transition import Transition
from triggers_core.errors import (
    RegistryError,
    StorageError,
)
from triggers_core.runtime import shell
from triggers_core.runtime.commit import drive
from triggers_core.runtime.firing import FireResult
from triggers_core.runtime.lifecycle import (
    LIFECYCLE_LOGGER,
)
from triggers_core.runtime.operator import OperatorActions
from triggers_core.runtime.outcomes import (
    Compute,
    exception_type_name,
)
from triggers_core.runtime.ports import TaskRunner
from triggers_core.runtime.recovery import (
    DEFAULT_SWEEP_INTERVAL,
    RecoveryReport,
    StoreSweeper,
    recover_session,
)
from triggers_core.runtime.redaction import redact
from triggers_core.runtime.registry import Registry, open_storage, session_storage
from triggers_core.runtime.registry import runners as runner_registry
from triggers_core.runtime.shell_run import keeps_leases_steps, run_instance_steps
from triggers_core.runtime.storage import Storage
from triggers_core.runtime.transactional import fire_transactional

__all__ = ["LIFECYCLE_LOGGER", "TriggerManager", "exception_type_name", "managers"]

T = TypeVar("T")

lifecycle = logging.getLogger(LIFECYCLE_LOGGER)


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
        self.storage = session_storage(storage, uid, Storage, open_storage)
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
        """Run the commit loop (:func:`~triggers_core.runtime.shell.commit`) on this session."""
        return drive(self.storage, shell.commit(self, compute, scope), self)

    def _perform(self, transition: Transition) -> None:
        """Log the committed transition, call its hooks, then dispatch what it scheduled
        (:func:`~triggers_core.runtime.shell.perform`)."""
        drive(self.storage, shell.perform(self, transition), self)

    def _drive(self, steps: shell.Steps[T]) -> T:
        """Run an operation of the shell core with blocking I/O (see :func:`drive`)."""
        return drive(self.storage, steps, self)

    # -- public API ---------------------------------------------------------------

    def update_configuration(self, config: Mapping[str, Any]) -> None:
        """Add or replace tasks by name (others stay). Never re-applies old triggers.

        Raises :class:`~triggers_core.errors.ConfigurationError` listing every
        problem; nothing is stored then. A ``using`` directive must name a
        runner of the runner registry or one given to this manager.
        """
        drive(self.storage, shell.update_configuration_steps(self, config), self)

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
        steps = shell.fire_steps(self, trigger_name, trigger_kwargs, idempotency_key, strict)
        return drive(self.storage, steps, self)

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
        steps = run_instance_steps(self, instance_name, on_started, guard_cascade, worker)
        return drive(self.storage, steps, self)

    def _keeps_leases(self) -> bool:
        """True if the storage keeps leases (checked once per manager)."""
        return drive(self.storage, keeps_leases_steps(self))

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
