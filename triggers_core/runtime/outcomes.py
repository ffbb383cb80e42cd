"""Running a task body and turning what it did into the transition that records it.

:meth:`Outcomes.run_task` calls the task and returns a function of the session
state: the transition the manager commits. Whatever the body returns or
raises (``KeyboardInterrupt`` and ``SystemExit`` aside, which stop the process)
becomes a transition that resolves the instance: a result becomes
``finished`` and its cascade, ``skip()`` ``skipped``, ``retry()`` a failure
and its replay, anything else ``failed`` with the exception's type, traceback
and context. An ``async def`` body is run to completion first (see
:meth:`Outcomes.run_task` and :meth:`Outcomes.arun_task`), then classified the
same way. What cannot be recorded as it is (a result that is not a
JSON-compatible mapping, one over the storage's ``max_value_bytes``, bad
retry arguments...) is recorded as a failure that says why, and a traceback
too long to store is clipped (:mod:`triggers_core.engine.sizes`): an outcome
never leaves the instance ``running``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import attrs

from triggers_core import engine
from triggers_core.engine.sizes import DEFAULT_MAX_VALUE_BYTES, bounded_mapping, clip_text
from triggers_core.engine.state import SessionState
from triggers_core.engine.transition import Transition
from triggers_core.errors import (
    InvalidKwargsError,
    InvalidTransitionError,
    SerializationError,
    StorageError,
    UnknownInstanceError,
)
from triggers_core.runtime.body_loop import run_body
from triggers_core.runtime.lifecycle import LIFECYCLE_LOGGER, log_failure
from triggers_core.runtime.storage import Storage
from triggers_core.runtime.tasks import (
    RetryTask,
    SkipTask,
    TaskContext,
    TriggerTask,
    exception_context,
    get_task,
)

__all__ = ["NOT_THE_OUTCOME", "Compute", "Outcomes", "exception_type_name", "format_exception"]

lifecycle = logging.getLogger(LIFECYCLE_LOGGER)

#: A transition still to be computed from the state a commit loads.
Compute = Callable[[SessionState], Transition]

#: Errors of the storage or of the instance itself, raised while recording an
#: outcome: there is nothing to record about the task then.
NOT_THE_OUTCOME = (
    StorageError,
    SerializationError,
    InvalidTransitionError,
    UnknownInstanceError,
)


def exception_type_name(exc: BaseException | type[BaseException]) -> str:
    """``module.Name`` of an exception (or exception class), ``builtins.`` included.

    ``RuntimeError("x")`` -> ``"builtins.RuntimeError"``; nested classes use
    their qualified name (``pkg.mod.Outer.Error``).
    """
    cls = exc if isinstance(exc, type) else type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def format_exception(exc: BaseException) -> str:
    """The traceback text of ``exc`` (its ``exceptionInfo``)."""
    return "".join(traceback.format_exception(exc))


def _is_async_body(task: TriggerTask) -> bool:
    """True if the task's ``_run`` (or an overridden ``run``) is an ``async def``."""
    return inspect.iscoroutinefunction(task._run) or inspect.iscoroutinefunction(task.run)


@attrs.frozen
class Outcomes:
    """Builds the transitions that record what a task did, for one session."""

    #: The session UID (for log records).
    session: str
    #: The manager's clock.
    now: Callable[[], datetime]
    #: Instances a finish makes ready deeper than this fail instead (see the engine).
    max_cascade_depth: int
    #: The owner token of the run (its lease), so a run that was taken over
    #: cannot record its outcome; None for a run without a lease.
    owner: str | None = None
    #: The storage's bound on one value's encoded size (results, metadata, tracebacks).
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    #: The longest timer the storage keeps (a retry's cooldown is one); None: no bound.
    max_timer_seconds: float | None = None

    @classmethod
    def of(
        cls,
        storage: Storage,
        now: Callable[[], datetime],
        max_cascade_depth: int,
        owner: str | None,
    ) -> Outcomes:
        """The outcomes of a run in ``storage``'s session, within the storage's limits."""
        return cls(
            storage.uid,
            now,
            max_cascade_depth,
            owner,
            max_value_bytes=storage.max_value_bytes,
            max_timer_seconds=storage.max_timer_seconds,
        )

    def failure(
        self,
        name: str,
        exc: BaseException,
        info: str,
        context: TaskContext,
        exception_context: Mapping[str, Any] | None = None,
        *,
        info_is_traceback: bool = False,
    ) -> Compute:
        """The transition recording that ``name`` failed with ``exc`` (``info`` explains).

        The log record quotes ``info`` unless it is only the traceback, which
        the record carries anyway (once).
        """
        info = clip_text(info, self.max_value_bytes)
        log_failure(lifecycle, self.session, name, exc, None if info_is_traceback else info)
        exc_type = exception_type_name(exc)
        level = max(context.log_level, logging.ERROR)
        return lambda s: engine.fail(
            s,
            name,
            now=self.now(),
            exception_type=exc_type,
            exception_info=info,
            exception_context=exception_context,
            log_level=level,
            owner=self.owner,
        )

    def run_task(
        self, name: str, run: str, context: TaskContext, guard_cascade: bool = False
    ) -> Compute:
        """Run the task and return the transition that records its outcome.

        Whatever the task returns or raises (KeyboardInterrupt and SystemExit
        aside, which stop the process) becomes a transition that resolves the
        instance: what cannot be recorded as it is (a result that is not a
        JSON-compatible mapping, bad retry arguments...) is recorded as a failure
        that says why. With ``guard_cascade`` a finish records its cascade
        (see :func:`~triggers_core.engine.finish`). An ``async def`` body is run
        to completion on this thread's body loop (:mod:`~triggers_core.runtime.body_loop`),
        never on a loop of the application's; the calling thread waits for it.
        """
        max_retries: object = 0
        try:
            task = get_task(run)
            max_retries = task.max_retries
            result = task.run(context)
            if inspect.isawaitable(result):
                result = run_body(result)
        except (KeyboardInterrupt, SystemExit):
            raise  # the process is stopping; get_stale_instances() finds the instance
        except BaseException as exc:
            return self.raised(name, run, exc, max_retries, context)
        return self.returned(name, run, result, context, guard_cascade)

    async def arun_task(
        self, name: str, run: str, context: TaskContext, guard_cascade: bool = False
    ) -> Compute:
        """:meth:`run_task` for a caller on a running event loop (the async manager).

        An ``async def`` body is awaited on the current loop; a synchronous body
        runs in a thread (:func:`asyncio.to_thread`), so the loop is never
        blocked by it. The outcome is classified exactly as by :meth:`run_task`.
        A cancellation of the caller (not one the body raised by itself)
        propagates instead of being recorded (a synchronous body's thread
        cannot be stopped: it runs on to its end, and its outcome is dropped).
        """
        max_retries: object = 0
        try:
            task = get_task(run)
            max_retries = task.max_retries
            if _is_async_body(task):
                result: object = task.run(context)
            else:
                result = await asyncio.to_thread(task.run, context)
            if inspect.isawaitable(result):
                result = await result
        except (KeyboardInterrupt, SystemExit):
            raise
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the caller is cancelled: there is no outcome to record
            return self.raised(name, run, exc, max_retries, context)
        except BaseException as exc:
            return self.raised(name, run, exc, max_retries, context)
        return self.returned(name, run, result, context, guard_cascade)

    def raised(
        self, name: str, run: str, exc: BaseException, max_retries: object, context: TaskContext
    ) -> Compute:
        """The transition for a body that raised ``exc``: skipped, retried or failed."""
        if isinstance(exc, SkipTask):
            try:
                metadata = bounded_mapping(exc.metadata, "metadata", self.max_value_bytes)
            except InvalidKwargsError as bad:
                return self.failure(
                    name,
                    bad,
                    f"{run} skipped itself with metadata that cannot be stored: {bad}",
                    context,
                )
            return lambda s: engine.skip_self(
                s,
                name,
                now=self.now(),
                metadata=metadata,
                log_level=context.log_level,
                owner=self.owner,
            )
        if isinstance(exc, RetryTask):
            return self.retry(name, run, exc, max_retries, context)
        info, exc_context = format_exception(exc), exception_context(exc)
        try:
            exc_context = bounded_mapping(exc_context, "exception_context", self.max_value_bytes)
        except InvalidKwargsError as bad:
            info += f"\n(its with_context() data was dropped: {bad})"
            exc_context = {}
        return self.failure(name, exc, info, context, exc_context, info_is_traceback=True)

    def returned(
        self, name: str, run: str, result: object, context: TaskContext, guard_cascade: bool
    ) -> Compute:
        """The transition for a body that returned ``result``: finished, or failed if unstorable."""
        if result is not None and not isinstance(result, Mapping):
            problem = InvalidKwargsError(
                "result", f"a task must return a mapping or None, got {type(result).__name__}"
            )
            return self.failure(name, problem, f"{run} returned bad data: {problem}", context)
        try:
            data = bounded_mapping(result, "result", self.max_value_bytes)
        except InvalidKwargsError as exc:
            detail = f"{run} returned a result that cannot be stored: {exc}"
            return self.failure(name, exc, detail, context)
        return lambda s: engine.finish(
            s,
            name,
            data,
            now=self.now(),
            log_level=context.log_level,
            max_cascade_depth=self.max_cascade_depth,
            guard_cascade=guard_cascade,
            owner=self.owner,
        )

    def retry(
        self, name: str, run: str, retry: RetryTask, max_retries: object, context: TaskContext
    ) -> Compute:
        """The transition for ``retry()``, or a failure naming the argument that is wrong."""
        cause = retry.exc
        try:
            if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
                raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
            cooldown = engine.check_cooldown(retry.cooldown)
            longest = self.max_timer_seconds
            if cooldown is not None and longest is not None and cooldown > longest:
                raise ValueError(
                    f"cooldown {cooldown:g} is longer than the storage's timeout "
                    f"({longest:g} seconds): the session could expire before its timer fires"
                )
            limit = self.max_value_bytes
            metadata = bounded_mapping(retry.metadata, "metadata", limit)
            replacement = (
                None
                if retry.replacement_kwargs is None
                else bounded_mapping(retry.replacement_kwargs, "replacement_kwargs", limit)
            )
            retry_context = (
                bounded_mapping(exception_context(cause), "exception_context", limit)
                if cause
                else None
            )
        except ValueError as exc:  # InvalidKwargsError is a ValueError too
            info = f"{run} asked to retry, but {exc}"
            if cause is not None:
                info += f"\nThe retry was for:\n{format_exception(cause)}"
            return self.failure(name, exc, info, context)
        # Without an exception, the RetryTask itself is what the task raised.
        retry_type = exception_type_name(cause or retry)
        retry_info = clip_text(format_exception(cause or retry), self.max_value_bytes)
        return lambda s: engine.retry_self(
            s,
            name,
            now=self.now(),
            max_retries=max_retries,
            exception_type=retry_type,
            exception_info=retry_info,
            exception_context=retry_context,
            metadata=metadata,
            replacement_kwargs=replacement,
            cooldown=cooldown,
            log_level=context.log_level,
            owner=self.owner,
        )
