"""Task runners perform ``ScheduleInstance`` effects: they run instances somewhere.

:class:`ThreadingTaskRunner` runs each instance in a thread of this process
(tests, demos, the embedded default). The Celery runner lives in
``triggers_celery``. Runners are found by name through
:data:`triggers_core.runtime.registry.runners` (entry point group ``triggers.runners``).
"""

from __future__ import annotations

import atexit
import collections
import contextvars
import logging
import os
import threading
import time
import weakref
from collections import deque

from triggers_core.engine.effects import ScheduleInstance
from triggers_core.runtime.body_loop import close_thread_loop
from triggers_core.runtime.observe import current as observer
from triggers_core.runtime.ports import SessionManager, TaskRunner

__all__ = ["ThreadingTaskRunner"]

# The logger keeps the name it had before the package was split by layer.
log = logging.getLogger("triggers_core.runners")


class _Worker:
    """One pooled thread's hand-off slot: the dispatcher fills ``item``, then releases ``wake``."""

    __slots__ = ("item", "wake")

    def __init__(self, item: tuple[SessionManager, ScheduleInstance]) -> None:
        self.item: tuple[SessionManager, ScheduleInstance] | None = item
        self.wake = threading.Lock()
        self.wake.acquire()  # held until a dispatcher hands this worker an instance


class ThreadingTaskRunner(TaskRunner):
    """Runs instances in threads of this process; :meth:`join_all` waits for all of them.

    Threads are pooled but never limited: an instance goes to an idle thread of
    this runner if there is one, else to a new thread, so a task may wait for
    another task without ever starving it. A thread that stays idle for
    ``keep_alive`` seconds (default 5) ends.

    ``join_all`` also waits for instances scheduled by cascades from those
    threads, and refuses to be called from a task thread (it would wait for
    itself forever).

    Work is never lost silently when the interpreter exits: the task threads
    are daemon threads, but at exit (``atexit``) the process waits up to
    ``exit_timeout`` seconds (default 30) for every runner's instances and
    their cascades, then logs the instances still unfinished (they stay
    ``scheduled`` or ``running`` in storage; ``get_stale_instances`` finds
    them). While the interpreter exits, new work runs in the thread that
    dispatched it, after that thread's current instance (Python 3.12+ refuses
    new threads then).

    An ``async def`` body runs to completion on its thread's own event loop,
    reused by the async bodies that thread runs later and closed when the
    thread ends (:mod:`~triggers_core.runtime.body_loop`).
    """

    name = "threading"

    #: Seconds the interpreter waits at exit for unfinished instances (None: no bound).
    exit_timeout: float | None = 30.0
    #: Seconds an idle thread waits for more work before it ends.
    keep_alive: float = 5.0

    def __init__(
        self, *, exit_timeout: float | None = None, keep_alive: float | None = None
    ) -> None:
        # A plain lock (never taken twice by one thread): cheaper than the default RLock.
        self._cond = threading.Condition(threading.Lock())
        self._pending: collections.Counter[str] = collections.Counter()
        self._errors: list[BaseException] = []
        self._local = threading.local()
        self._exiting = False
        #: Idle workers, the most recently idle last (reused first; the others age out).
        self._idle: dict[_Worker, None] = {}
        #: The context of each dispatch while an observer watches, by (session, instance).
        self._contexts: dict[tuple[str, str], contextvars.Context] = {}
        if exit_timeout is not None:
            self.exit_timeout = exit_timeout
        if keep_alive is not None:
            if not keep_alive > 0:  # False for NaN too
                raise ValueError(f"keep_alive must be a number of seconds > 0, got {keep_alive!r}")
            self.keep_alive = keep_alive
        _track(self)

    def dispatch(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        name = effect.instance_name
        # While an observer watches, the run continues the dispatching thread's trace.
        context = contextvars.copy_context() if observer() is not None else None
        with self._cond:
            if context is not None:
                self._contexts[manager.uid, name] = context
            self._pending[name] += 1
            exiting = self._exiting
            worker = self._idle.popitem()[0] if self._idle and not exiting else None
        if worker is not None:  # claimed under the lock: it waits for exactly this hand-off
            worker.item = (manager, effect)
            worker.wake.release()
            return
        if exiting:
            queue: deque[tuple[SessionManager, ScheduleInstance]] | None = getattr(
                self._local, "queue", None
            )
            if queue is not None:  # a task thread: run it after the current instance
                queue.append((manager, effect))
            else:  # the exiting main thread (e.g. an atexit handler fired a trigger)
                self._run_here(manager, effect)
            return
        thread = threading.Thread(
            target=self._serve,
            args=(_Worker((manager, effect)),),
            name=f"triggers:{name}",
            daemon=True,
        )
        try:
            thread.start()
        except BaseException:
            self._contexts.pop((manager.uid, name), None)
            self._done(name)
            raise

    def _serve(self, worker: _Worker) -> None:
        """A pooled thread: run what it is handed, then wait idle up to ``keep_alive``."""
        queue: deque[tuple[SessionManager, ScheduleInstance]] = deque()
        self._local.queue = queue
        self._local.in_task = True
        thread = threading.current_thread()
        item, worker.item = worker.item, None
        while item is not None:
            thread.name = f"triggers:{item[1].instance_name}"
            while True:
                self._run_one(*item)
                with self._cond:
                    self._finished(item[1].instance_name)
                    if not queue:
                        # Idle before join_all can see the instance done: sequential work
                        # always finds this thread again.
                        self._idle[worker] = None
                        break
                item = queue.popleft()  # dispatched by this thread while the interpreter exits
            item = self._next(worker)
        close_thread_loop()  # the loop its async bodies ran on, if any

    def _next(self, worker: _Worker) -> tuple[SessionManager, ScheduleInstance] | None:
        """Wait for the next hand-off; None once idle for ``keep_alive`` seconds."""
        if not worker.wake.acquire(timeout=self.keep_alive):
            with self._cond:
                if worker in self._idle:  # nobody claimed it: end the thread
                    del self._idle[worker]
                    return None
            worker.wake.acquire()  # claimed just now: the hand-off follows at once
        item, worker.item = worker.item, None
        return item

    def _run_here(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        """Run an instance (and what it dispatches meanwhile) in the calling thread."""
        queue = self._local.queue = deque([(manager, effect)])
        self._local.in_task = True
        try:
            while queue:
                item_manager, item = queue.popleft()
                try:
                    self._run_one(item_manager, item)
                finally:
                    self._done(item.instance_name)
        finally:
            self._local.queue = None
            self._local.in_task = False

    def _run_one(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        try:
            with self._cond:
                context = self._contexts.pop((manager.uid, effect.instance_name), None)
            if context is None:
                manager.run_instance(effect.instance_name)
            else:
                context.run(manager.run_instance, effect.instance_name)
        except BaseException as exc:  # reported by join_all, never lost silently
            log.exception("error while running %s", effect.instance_name)
            with self._cond:
                self._errors.append(exc)

    def _done(self, name: str) -> None:
        with self._cond:
            self._finished(name)

    def _finished(self, name: str) -> None:
        """Count one dispatch of ``name`` as done (the caller holds ``_cond``)."""
        pending = self._pending
        pending[name] -= 1
        if pending[name] <= 0:
            del pending[name]
        self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Instances dispatched and not yet done."""
        with self._cond:
            return self._pending.total()

    def pending_instances(self) -> list[str]:
        """Names of the instances dispatched and not yet done, sorted."""
        with self._cond:
            return sorted(self._pending.elements())

    def join_all(self, timeout: float | None = 60.0) -> None:
        """Wait until every dispatched instance (and its cascades) is done.

        Raises ``TimeoutError`` if that takes longer than ``timeout`` seconds,
        and re-raises the first unexpected error a task thread hit (for
        example a ``_post_fire`` hook that raised during a cascade).
        """
        if getattr(self._local, "in_task", False):
            raise RuntimeError("join_all() was called from a task thread; it would wait for itself")
        if not self._wait(timeout):
            raise TimeoutError(
                f"{self.pending} task instance(s) still running after {timeout}s: "
                f"{', '.join(self.pending_instances())}"
            )
        with self._cond:
            errors, self._errors = self._errors, []
        if errors:
            raise errors[0]

    def _wait(self, timeout: float | None) -> bool:
        """Wait until nothing is pending; False if ``timeout`` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def _begin_exit(self) -> None:
        with self._cond:
            self._exiting = True

    def _wait_at_exit(self, started: float) -> None:
        """Wait until ``exit_timeout`` after ``started`` (the exit), then log what is left."""
        left = self.pending_instances()
        if not left:
            return
        timeout = self.exit_timeout
        log.info(
            "interpreter exit: waiting up to %ss for %d task instance(s): %s",
            timeout,
            len(left),
            ", ".join(left),
        )
        remaining = None if timeout is None else max(0.0, started + timeout - time.monotonic())
        if not self._wait(remaining):
            log.error(
                "interpreter exit: gave up after %ss; %d task instance(s) did not finish and "
                "stay scheduled or running in storage (find them with get_stale_instances): %s",
                timeout,
                self.pending,
                ", ".join(self.pending_instances()),
            )


_RUNNERS: weakref.WeakSet[ThreadingTaskRunner] = weakref.WeakSet()
_RUNNERS_LOCK = threading.Lock()
_ATEXIT_REGISTERED = False


def _track(runner: ThreadingTaskRunner) -> None:
    global _ATEXIT_REGISTERED  # noqa: PLW0603 - one exit hook per process
    with _RUNNERS_LOCK:
        _RUNNERS.add(runner)
        if not _ATEXIT_REGISTERED:
            atexit.register(_wait_for_runners_at_exit)
            if hasattr(os, "register_at_fork"):  # not on Windows
                os.register_at_fork(after_in_child=_forget_threads_after_fork)
            _ATEXIT_REGISTERED = True


def _forget_threads_after_fork() -> None:
    """A forked child has none of its parent's pooled threads: never hand work to them."""
    for runner in list(_RUNNERS):
        runner._idle = {}
        runner._cond = threading.Condition(threading.Lock())  # in case a thread held it


def _wait_for_runners_at_exit() -> None:
    started = time.monotonic()
    with _RUNNERS_LOCK:
        runners = list(_RUNNERS)
    for runner in runners:  # first, so that no runner starts threads any more
        runner._begin_exit()
    for runner in runners:
        runner._wait_at_exit(started)
