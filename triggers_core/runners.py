"""Task runners perform ``ScheduleInstance`` effects: they run instances somewhere.

:class:`ThreadingTaskRunner` runs each instance in a thread of this process
(tests, demos, the embedded default). The Celery runner lives in
``triggers_celery``. Runners are found by name through
:data:`triggers_core.registry.runners` (entry point group ``triggers.runners``).
"""

from __future__ import annotations

import abc
import logging
import threading
import time
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
    """

    name = "threading"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending = 0
        self._errors: list[BaseException] = []
        self._local = threading.local()

    def dispatch(self, manager: TriggerManager, effect: ScheduleInstance) -> None:
        with self._cond:
            self._pending += 1
        thread = threading.Thread(
            target=self._work,
            args=(manager, effect),
            name=f"triggers:{effect.instance_name}",
            daemon=True,
        )
        try:
            thread.start()
        except BaseException:
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()
            raise

    def _work(self, manager: TriggerManager, effect: ScheduleInstance) -> None:
        self._local.in_task = True
        try:
            if effect.cooldown:
                time.sleep(effect.cooldown)
            manager.run_instance(effect.instance_name)
        except BaseException as exc:  # reported by join_all, never lost silently
            log.exception("error while running %s", effect.instance_name)
            with self._cond:
                self._errors.append(exc)
        finally:
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Instances dispatched and not yet done."""
        with self._cond:
            return self._pending

    def join_all(self, timeout: float | None = 60.0) -> None:
        """Wait until every dispatched instance (and its cascades) is done.

        Raises ``TimeoutError`` if that takes longer than ``timeout`` seconds,
        and re-raises the first unexpected error a task thread hit (for
        example a ``_post_fire`` hook that raised during a cascade).
        """
        if getattr(self._local, "in_task", False):
            raise RuntimeError("join_all() was called from a task thread; it would wait for itself")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"{self._pending} task instance(s) still running after {timeout}s"
                    )
                self._cond.wait(remaining)
            errors, self._errors = self._errors, []
        if errors:
            raise errors[0]
