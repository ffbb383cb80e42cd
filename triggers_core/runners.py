"""Task runners perform ``ScheduleInstance`` effects: they run instances somewhere.

:class:`ThreadingTaskRunner` runs each instance in a thread of this process
(tests, demos, the embedded default). The Celery runner lives in
``triggers_celery``. Runners are found by name through
:data:`triggers_core.registry.runners` (entry point group ``triggers.runners``).
"""

from __future__ import annotations

import abc
import atexit
import collections
import logging
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, ClassVar

from triggers_core.effects import ScheduleInstance

if TYPE_CHECKING:
    from triggers_core.manager import TriggerManager

__all__ = ["TaskRunner", "ThreadingTaskRunner"]

log = logging.getLogger(__name__)


class TaskRunner(abc.ABC):
    """Runs scheduled instances. ``dispatch`` must not block on the task itself."""

    #: Registry name (the value of a task's ``using`` directive).
    name: ClassVar[str]

    @abc.abstractmethod
    def dispatch(self, manager: TriggerManager, effect: ScheduleInstance) -> None:
        """Arrange for ``manager.run_instance(effect.instance_name)`` to happen.

        Raising means the instance was *not* dispatched; the manager then marks
        it failed (replayable) and re-raises to the caller.
        """


class ThreadingTaskRunner(TaskRunner):
    """Runs each instance in its own thread; :meth:`join_all` waits for all of them.

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
    """

    name = "threading"

    #: Seconds the interpreter waits at exit for unfinished instances (None: no bound).
    exit_timeout: float | None = 30.0

    def __init__(self, *, exit_timeout: float | None = None) -> None:
        self._cond = threading.Condition()
        self._pending: collections.Counter[str] = collections.Counter()
        self._errors: list[BaseException] = []
        self._local = threading.local()
        self._exiting = False
        if exit_timeout is not None:
            self.exit_timeout = exit_timeout
        _track(self)

    def dispatch(self, manager: TriggerManager, effect: ScheduleInstance) -> None:
        with self._cond:
            self._pending[effect.instance_name] += 1
            exiting = self._exiting
        if exiting:
            queue: deque[tuple[TriggerManager, ScheduleInstance]] | None = getattr(
                self._local, "queue", None
            )
            if queue is not None:  # a task thread: run it after the current instance
                queue.append((manager, effect))
            else:  # the exiting main thread (e.g. an atexit handler fired a trigger)
                self._work(manager, effect)
            return
        thread = threading.Thread(
            target=self._work,
            args=(manager, effect),
            name=f"triggers:{effect.instance_name}",
            daemon=True,
        )
        try:
            thread.start()
        except BaseException:
            self._done(effect.instance_name)
            raise

    def _work(self, manager: TriggerManager, effect: ScheduleInstance) -> None:
        queue = self._local.queue = deque([(manager, effect)])
        self._local.in_task = True
        try:
            while queue:
                item_manager, item = queue.popleft()
                self._run_one(item_manager, item)
        finally:
            self._local.queue = None
            self._local.in_task = False

    def _run_one(self, manager: TriggerManager, effect: ScheduleInstance) -> None:
        try:
            if effect.cooldown:
                time.sleep(effect.cooldown)
            manager.run_instance(effect.instance_name)
        except BaseException as exc:  # reported by join_all, never lost silently
            log.exception("error while running %s", effect.instance_name)
            with self._cond:
                self._errors.append(exc)
        finally:
            self._done(effect.instance_name)

    def _done(self, name: str) -> None:
        with self._cond:
            self._pending[name] -= 1
            if self._pending[name] <= 0:
                del self._pending[name]
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
            _ATEXIT_REGISTERED = True


def _wait_for_runners_at_exit() -> None:
    started = time.monotonic()
    with _RUNNERS_LOCK:
        runners = list(_RUNNERS)
    for runner in runners:  # first, so that no runner starts threads any more
        runner._begin_exit()
    for runner in runners:
        runner._wait_at_exit(started)
