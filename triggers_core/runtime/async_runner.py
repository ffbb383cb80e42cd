"""The in-process runner of the asynchronous manager: each instance an asyncio task.

:class:`AsyncioTaskRunner` (registered as ``"asyncio"``, the default runner of
:class:`~triggers_core.runtime.async_manager.AsyncTriggerManager`) runs a
scheduled instance as a task on the event loop of the call that scheduled
it: the task awaits ``manager.run_instance(name)``, which commits the instance
``running``, runs its body (an ``async def _run`` on the loop, a plain one in
a worker thread), commits the outcome and performs its cascade, exactly as
the synchronous manager does (the shell core, :mod:`triggers_core.runtime.shell_run`).
:meth:`AsyncioTaskRunner.join` waits for every instance and its cascades.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from triggers_core.engine.effects import ScheduleInstance
from triggers_core.runtime.ports import SessionManager, TaskRunner

__all__ = ["AsyncioTaskRunner"]

log = logging.getLogger("triggers_core.runners")


class AsyncioTaskRunner(TaskRunner):
    """Runs the instances of an async manager as asyncio tasks of the running loop.

    Dispatch never blocks: it creates the task and returns. The runner keeps a
    reference to its tasks until they end (asyncio keeps only weak ones); an
    error that escapes a task (a hook that raised during a cascade) is logged
    and raised again by :meth:`join`.
    """

    name = "asyncio"
    #: Dispatch creates a task on the running loop (the async manager calls it there).
    runs_coroutines = True

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._errors: list[BaseException] = []

    def dispatch(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        if not inspect.iscoroutinefunction(manager.run_instance):
            raise TypeError(
                "the 'asyncio' runner runs the instances of an AsyncTriggerManager; "
                f"{type(manager).__qualname__} is synchronous (use the 'threading' runner)"
            )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "the 'asyncio' runner needs a running event loop (dispatch from a coroutine)"
            ) from None
        run: Any = manager.run_instance(effect.instance_name)
        task = loop.create_task(run, name=f"triggers:{effect.instance_name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("error while running %s", task.get_name(), exc_info=error)
            self._errors.append(error)

    @property
    def pending(self) -> int:
        """Instances dispatched and not yet done."""
        return len(self._tasks)

    async def join(self, timeout: float | None = 60.0) -> None:
        """Wait until every dispatched instance (and its cascades) is done.

        Raises ``TimeoutError`` after ``timeout`` seconds, and re-raises the
        first error a task hit.
        """
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.wait(list(self._tasks))
        errors, self._errors = self._errors, []
        if errors:
            raise errors[0]
