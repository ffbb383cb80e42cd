"""Self-recovery on Celery workers: a sweeper in every worker's main process.

With nothing but ``celery worker`` running, no instance stays ``running`` or
``scheduled`` for ever: :class:`SweeperStep`, a worker bootstep (added by
:func:`~triggers_celery.bind_tasks`, on by default), runs a daemon thread in
the worker's *main* process (never in pool processes, which come and go) that
sweeps every configured storage (the ``triggers_storages`` setting) every
``triggers_sweep_interval`` seconds with
:func:`~triggers_core.runtime.recovery.sweep_store`:

* an instance ``running`` under an expired lease (its pool process or its
  whole node died) is failed (``WorkerLost``) and replayed per its task's
  ``on_lost`` policy;
* an instance ``scheduled`` for longer than ``triggers_dispatch_lease``
  seconds (its message was lost: a broker restart, a node killed with the
  message prefetched) is dispatched again.

Every worker sweeps; each action is a compare-and-swap, so one of them acts on
each instance. A sweep reads only the store's due index: its cost grows with
what is due, not with the number of sessions. A storage that cannot be opened
or swept (the database is down) is logged and tried again at the next
interval; nothing here can stop the worker. On shutdown the thread is stopped
and joined (a bounded wait).

Settings (Celery configuration):

``triggers_sweep_interval``  seconds between sweeps (default 10; ``None`` or 0: no sweeper)
``triggers_tick_interval``   seconds between two looks for due timers (``within``
                             windows, ``delay``) between sweeps (default 1; ``None`` or 0:
                             timers fire at the sweeps only)
``triggers_dispatch_lease``  seconds an instance may stay ``scheduled`` (default 60)
``triggers_sweep_manager``   registry key of the manager class that acts on the
                             sessions (default ``"default"``); its Celery runner
                             sends the clones and the messages sent again

A hard time limit kills the pool process running a body; the worker's main
process then fails the instance with the limit in its error
(:func:`on_task_failure`, connected to Celery's ``task_failure`` signal).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from celery import bootsteps, signals
from celery.exceptions import TimeLimitExceeded

from triggers_celery.message import TaskMessage
from triggers_celery.runner import CeleryTaskRunner
from triggers_celery.storages import configured_storages, name_storage, open_configured_storage
from triggers_celery.worker_setup import worker_default_runner
from triggers_core.engine.leases import DEFAULT_DISPATCH_LEASE, lease_owner
from triggers_core.engine.state import Status
from triggers_core.errors import SchemaMissingError, UnsupportedOperationError
from triggers_core.runtime.clock import DEFAULT_TICK_INTERVAL, TICK_BATCH, tick_store
from triggers_core.runtime.manager import TriggerManager, managers
from triggers_core.runtime.recovery import DEFAULT_SWEEP_INTERVAL, sweep_store, tick_wait
from triggers_core.runtime.redaction import redact
from triggers_core.runtime.registry import storage_scheme
from triggers_core.runtime.storage import Storage

__all__ = [
    "DISPATCH_LEASE_SETTING",
    "SWEEP_INTERVAL_SETTING",
    "SWEEP_MANAGER_SETTING",
    "TICK_INTERVAL_SETTING",
    "SweeperStep",
    "WorkerSweeper",
    "dispatch_lease",
    "install",
    "on_task_failure",
    "sweep_interval",
    "tick_interval",
]

log = logging.getLogger("triggers_celery.sweeper")

#: Celery setting: seconds between two sweeps (None or 0: no sweeper in this worker).
SWEEP_INTERVAL_SETTING = "triggers_sweep_interval"
#: Celery setting: seconds between two ticks (due timers) between sweeps; None or 0: none.
TICK_INTERVAL_SETTING = "triggers_tick_interval"
#: Celery setting: seconds an instance may stay ``scheduled`` before it is dispatched again.
DISPATCH_LEASE_SETTING = "triggers_dispatch_lease"
#: Celery setting: the registry key of the manager class the sweeper builds.
SWEEP_MANAGER_SETTING = "triggers_sweep_manager"
#: The session UID of the storage objects the sweeper opens to reach each store.
SWEEP_UID = "triggers-worker-sweep"
#: Seconds a worker's shutdown waits for a sweep in progress.
STOP_TIMEOUT = 10.0
#: Seconds between two looks at a storage that keeps no leases (no due table yet).
RECHECK = 60.0


# -- fork safety ---------------------------------------------------------------------
# The worker's main process forks pool processes (at start, and to replace one that
# died). A child forked while a sweep runs would inherit the locks that sweep holds
# (a connection pool's, a driver's) held by a thread it does not have, and hang on
# them. So a sweep holds _QUIET, and a fork waits for the sweep in progress to end
# (bounded by the storages' timeouts): the thread is idle whenever a child is made.
_QUIET = threading.Lock()


def _before_fork() -> None:
    _QUIET.acquire()


def _after_fork_in_parent() -> None:
    _QUIET.release()


def _after_fork_in_child() -> None:
    global _QUIET  # noqa: PLW0603 - the child's copy is held by a thread it does not have
    _QUIET = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


def _seconds(conf: Mapping[str, Any], setting: str, default: float) -> float:
    raw = conf.get(setting, default)
    if raw is None:
        return 0.0
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not raw >= 0:
        raise ValueError(f"the Celery setting {setting!r} must be a number >= 0, got {raw!r}")
    return float(raw)


def sweep_interval(conf: Mapping[str, Any]) -> float:
    """Seconds between sweeps (``triggers_sweep_interval``, default 10); 0: none."""
    return _seconds(conf, SWEEP_INTERVAL_SETTING, DEFAULT_SWEEP_INTERVAL)


def tick_interval(conf: Mapping[str, Any]) -> float:
    """Seconds between ticks (``triggers_tick_interval``, default 1); 0: at sweeps only."""
    return _seconds(conf, TICK_INTERVAL_SETTING, DEFAULT_TICK_INTERVAL)


def dispatch_lease(conf: Mapping[str, Any]) -> float:
    """Seconds an instance may stay ``scheduled`` (``triggers_dispatch_lease``, default 60)."""
    return _seconds(conf, DISPATCH_LEASE_SETTING, DEFAULT_DISPATCH_LEASE)


def manager_factory(app: Any, name: str) -> Callable[[Storage], TriggerManager]:
    """Builds the manager that acts on a session of the configured storage ``name``.

    The class is the ``triggers_sweep_manager`` setting's (default
    ``"default"``); it dispatches through ``app`` (its ``threading`` default
    runner becomes ``celery``, as on any worker).
    """
    key = app.conf.get(SWEEP_MANAGER_SETTING) or "default"
    cls: type[TriggerManager] = managers.load(key)
    runner = CeleryTaskRunner(app)

    def build(storage: Storage) -> TriggerManager:
        return cls(
            name_storage(storage, name),
            runners={CeleryTaskRunner.name: runner},
            default_runner=worker_default_runner(cls),
        )

    return build


class WorkerSweeper:
    """Sweeps every configured storage of ``app`` every ``interval`` seconds, in a thread."""

    def __init__(self, app: Any, interval: float, lease: float, tick: float = 0.0) -> None:
        self.app = app
        self.interval = interval
        self.dispatch_lease = lease
        #: Seconds between ticks (due timers only) between sweeps; 0: none.
        self.tick_interval = tick if 0 < tick < interval else 0.0
        #: Completed sweeps (of every store).
        self.sweeps = 0
        self._stores: dict[str, Storage] = {}
        self._skipped: set[str] = set()
        #: Storages that keep no leases (yet): monotonic time of the next look.
        self._no_leases: dict[str, float] = {}
        #: The last tick read a full batch of due timers from some store (more are due).
        self._full = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="triggers-sweeper", daemon=True)

    def start(self) -> None:
        """Start the thread (a worker's bootstep calls this once its pool runs)."""
        self._thread.start()
        log.info(
            "sweeping the trigger storages every %gs (dispatch lease %gs)",
            self.interval,
            self.dispatch_lease,
        )

    def stop(self) -> None:
        """Stop sweeping; wait at most :data:`STOP_TIMEOUT` for a sweep in progress."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT)
        for storage in self._stores.values():
            try:
                storage.close()
            except Exception as exc:  # closing is best effort at shutdown
                log.debug("closing a swept storage failed: %s", redact(str(exc)))
        self._stores.clear()

    terminate = stop

    def _open(self) -> None:
        """Open the configured storages not opened yet (one per store); skip the unsweepable."""
        seen = {storage.store_identity() for storage in self._stores.values()}
        for name, url in sorted(configured_storages(self.app.conf).items()):
            if name in self._stores or name in self._skipped:
                continue
            if self._no_leases.get(name, 0.0) > time.monotonic():
                continue
            if storage_scheme(url) == "memory":
                self._skipped.add(name)  # refused by workers anyway (see worker_setup)
                continue
            try:
                storage = open_configured_storage(self.app.conf, name, SWEEP_UID)
                storage.check_leases()
            except (UnsupportedOperationError, SchemaMissingError) as exc:
                self._keeps_no_leases(name, exc)
                continue
            except Exception as exc:  # unreachable now: try again at the next interval
                log.warning(
                    "cannot open storage %r to sweep it (%s); trying again in %gs",
                    name,
                    redact(str(exc)),
                    self.interval,
                )
                continue
            identity = storage.store_identity()
            if identity is not None and identity in seen:
                storage.close()  # another name for a store already swept
                self._skipped.add(name)
                continue
            seen.add(identity)
            self._stores[name] = storage

    def _keeps_no_leases(self, name: str, exc: Exception) -> None:
        """Say once that ``name`` keeps no leases; look again every :data:`RECHECK` seconds
        (an operator may add the due table while workers run)."""
        if name not in self._no_leases:
            log.warning(
                "not sweeping storage %r: it keeps no leases (%s); looking again every %gs",
                name,
                redact(str(exc)),
                RECHECK,
            )
        self._no_leases[name] = time.monotonic() + RECHECK

    def sweep_once(self) -> int:
        """Sweep every store once; return how many instances were moved on."""
        self._open()
        acted = 0
        for name, storage in sorted(self._stores.items()):
            if self._stop.is_set():
                break
            try:
                report = sweep_store(
                    storage,
                    manager_factory(self.app, name),
                    dispatch_lease=self.dispatch_lease,
                )
            except (UnsupportedOperationError, SchemaMissingError) as exc:
                del self._stores[name]  # its due table is gone (tables of an earlier version)
                storage.close()
                self._keeps_no_leases(name, exc)
                continue
            except Exception as exc:
                log.warning(
                    "sweeping storage %r failed (%s: %s); trying again in %gs",
                    name,
                    type(exc).__name__,
                    redact(str(exc)),
                    self.interval,
                )
                continue
            acted += len(report.acted)
        self.sweeps += 1
        return acted

    def tick_once(self) -> int:
        """Fire the due timers of every store once; return how many instances moved on.

        Cheap (it reads the due timers only); a store that fails is left to the
        next sweep, which says why.
        """
        acted = 0
        for name, storage in sorted(self._stores.items()):
            if self._stop.is_set():
                break
            try:
                report = tick_store(storage, manager_factory(self.app, name))
            except Exception as exc:
                log.debug("ticking storage %r failed: %s", name, redact(str(exc)))
                continue
            acted += len(report.acted)
            self._full = self._full or report.examined >= TICK_BATCH
        return acted

    def _serve(self) -> None:
        next_sweep = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            sweep = started >= next_sweep
            self._full = False
            try:
                with _QUIET:
                    if sweep:
                        self.sweep_once()
                    else:
                        self.tick_once()
            except Exception:  # a bug must not end self-recovery silently
                log.exception("the trigger sweeper failed; trying again in %gs", self.interval)
            if sweep:
                next_sweep = time.monotonic() + self.interval
            wait = next_sweep - time.monotonic()
            if self.tick_interval:  # ticks start every tick_interval; a full batch: at once
                wait = 0.0 if self._full else min(wait, tick_wait(started, self.tick_interval))
            self._stop.wait(max(wait, 0.0))


class SweeperStep(bootsteps.StartStopStep):  # type: ignore[misc] # celery ships no types
    """The worker bootstep that runs a :class:`WorkerSweeper` in the main process.

    It starts after the pool has forked its processes and stops with the
    worker (a pool process forked later drops its parent's connections: see
    the storages' fork handling). Disabled by ``triggers_sweep_interval =
    None`` (or 0).
    """

    label = "triggers sweeper"
    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.sweeper: WorkerSweeper | None = None

    def include_if(self, worker: Any) -> bool:
        try:
            return sweep_interval(worker.app.conf) > 0
        except ValueError as exc:
            log.error("%s; the trigger sweeper is off", exc)
            return False

    def create(self, worker: Any) -> WorkerSweeper:
        conf = worker.app.conf
        try:
            lease = dispatch_lease(conf)
        except ValueError as exc:
            log.error("%s; using %gs", exc, DEFAULT_DISPATCH_LEASE)
            lease = DEFAULT_DISPATCH_LEASE
        try:
            tick = tick_interval(conf)
        except ValueError as exc:
            log.error("%s; using %gs", exc, DEFAULT_TICK_INTERVAL)
            tick = DEFAULT_TICK_INTERVAL
        self.sweeper = WorkerSweeper(worker.app, sweep_interval(conf), lease, tick)
        return self.sweeper


_INSTALL_LOCK = threading.Lock()
_signal_connected = False


def install(app: Any) -> None:
    """Add :class:`SweeperStep` to ``app``'s workers and handle hard time limits.

    Called by :func:`~triggers_celery.bind_tasks`; idempotent.
    """
    global _signal_connected  # noqa: PLW0603 - the signal handler is connected once per process
    app.steps["worker"].add(SweeperStep)
    with _INSTALL_LOCK:
        if not _signal_connected:
            signals.task_failure.connect(on_task_failure, weak=False)
            _signal_connected = True


# -- time limits -----------------------------------------------------------------------

_HANDLED: dict[str, None] = {}  # Celery task ids whose time limit was handled (bounded)
_HANDLED_LOCK = threading.Lock()
_HANDLED_MAX = 1024


def _first_time(task_id: str) -> bool:
    with _HANDLED_LOCK:
        if task_id in _HANDLED:
            return False
        _HANDLED[task_id] = None
        while len(_HANDLED) > _HANDLED_MAX:
            del _HANDLED[next(iter(_HANDLED))]
        return True


def on_task_failure(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    kwargs: Mapping[str, Any] | None = None,
    **_: Any,
) -> None:
    """Celery's ``task_failure`` signal: a hard time limit ended a trigger task's run.

    The pool process was killed mid-body, so nothing recorded an outcome: the
    worker's main process fails the instance (``TimeLimitExceeded``, the limit
    in its error and context), if it is still ``running`` under the run of
    this Celery task. Done in a short-lived thread, off the worker's event
    loop; if it fails, the instance's lease expires and a sweeper takes it over.
    """
    if not isinstance(exception, TimeLimitExceeded) or not task_id or kwargs is None:
        return
    if not getattr(sender, "trigger_task_name", None) or not _first_time(task_id):
        return
    app = sender.app
    thread = threading.Thread(
        target=_quietly,
        args=(app, dict(kwargs), task_id, exception),
        name="triggers-time-limit",
        daemon=True,
    )
    thread.start()


def _quietly(*args: Any) -> None:
    with _QUIET:  # no pool process is forked meanwhile (see _QUIET)
        _fail_timed_out(*args)


def _fail_timed_out(
    app: Any, kwargs: dict[str, Any], task_id: str, exception: BaseException
) -> None:
    limit = exception.args[0] if exception.args else None
    try:
        message = TaskMessage.from_kwargs(kwargs)
    except Exception:  # not a message of ours: nothing to record
        return
    try:
        storage = open_configured_storage(app.conf, message.storage, message.session)
        manager = manager_factory(app, message.storage)(storage)
        instance = manager.storage.get_instance(message.instance)
        worker = instance.metadata.get("worker")
        owner = lease_owner(instance)
        if (
            instance.status is not Status.RUNNING
            or owner is None
            or not isinstance(worker, Mapping)
            or worker.get("celeryTaskId") != task_id
        ):
            return  # another run holds it, or it moved on
        error = TimeLimitExceeded(
            f"hard time limit ({limit}s) exceeded: Celery killed the process running "
            f"{message.instance}"
        )
        failed = manager.fail_run(
            message.instance, owner, error, context={"timeLimit": limit, "worker": dict(worker)}
        )
    except Exception as exc:
        log.error(
            "%s of session %r hit its hard time limit; it could not be marked failed (%s: %s): "
            "its lease will expire and a sweeper will take it over",
            message.instance,
            message.session,
            type(exc).__name__,
            redact(str(exc)),
        )
        return
    if failed is not None:
        log.error(
            "%s of session %r failed: hard time limit (%ss) exceeded",
            message.instance,
            message.session,
            limit,
        )
