"""The event loops that run ``async def`` task bodies under the synchronous runners.

A runner thread that meets a coroutine body (the threading runner's pooled
threads, a Celery pool process's main thread, a Celery ``threads`` pool's
threads) runs it to completion on **this thread's own event loop**: one loop
per thread, created on first use and reused by every async body that thread
runs afterwards, closed when the threading runner's thread ends (or at
interpreter exit). It is never the application's loop: if the calling thread
already runs a loop (the caller is itself async code), the body runs on the
loop of a short-lived helper thread instead, and the caller's thread waits for
it, as it would for a synchronous body.

Each body runs like ``asyncio.run(body)`` on that reused loop: what the body
leaves behind when it returns (tasks it started and did not await, async
generators not closed) is cancelled and closed before the runner records the
outcome, so nothing of one body runs on into the next.

An exception raised *into the loop from outside the body* (a signal handler:
Celery's soft time limit raises ``SoftTimeLimitExceeded`` wherever the thread
happens to be, which may be the loop's own code rather than the body's)
cancels the body (it sees :class:`asyncio.CancelledError` at its current
``await`` and may clean up in ``finally``) and, once the body has ended, is
raised as the body's exception: the run is recorded exactly as a synchronous
body's would be. If the body suppresses the cancellation and returns a
result, the result stands (as for a synchronous body that catches the soft
limit). Exception types registered with :func:`interrupt_on` are handled the
same way when the signal lands inside a loop callback, where asyncio would
otherwise only log them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import os
import threading
import weakref
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

__all__ = ["close_thread_loop", "interrupt_on", "run_body", "thread_loop"]

T = TypeVar("T")

_local = threading.local()
_LOOPS: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_LOOPS_LOCK = threading.Lock()
#: Exception types that, raised in a loop callback, stop the body (see :func:`interrupt_on`).
_INTERRUPTS: tuple[type[BaseException], ...] = ()


def interrupt_on(*types: type[BaseException]) -> None:
    """Treat exceptions of ``types`` raised inside a body loop's callbacks as interrupts.

    asyncio catches an exception raised by a loop callback and only logs it; a
    signal handler that raises (Celery's soft time limit) may hit a callback.
    An exception of a registered type is instead raised as the body's
    outcome, after cancelling the body. ``triggers_celery`` registers
    ``SoftTimeLimitExceeded``.
    """
    global _INTERRUPTS  # noqa: PLW0603 - a process-wide, append-only registry
    with _LOOPS_LOCK:
        _INTERRUPTS = (*_INTERRUPTS, *(t for t in types if t not in _INTERRUPTS))


def thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's body loop (created on first use, reused afterwards)."""
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_handle_callback_error)
        _local.loop = loop
        with _LOOPS_LOCK:
            _LOOPS.add(loop)
    return loop


def close_thread_loop() -> None:
    """Close this thread's body loop, if it has one (a runner thread that ends)."""
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    _local.loop = None
    if loop is not None and not loop.is_closed() and not loop.is_running():
        loop.close()


def run_body(body: Awaitable[T]) -> T:
    """Run ``body`` to completion on a loop the runtime owns; return or raise what it did.

    Blocks the calling thread like a synchronous body. See the module docstring
    for which loop, and for exceptions raised into the loop from outside.
    """
    if _loop_running():
        return _run_in_helper_thread(body)
    return _run_on(thread_loop(), body)


def _loop_running() -> bool:
    """True if this thread runs an event loop now (the caller is async code)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _outcome(body: Awaitable[T]) -> tuple[bool, Any]:
    """``(True, result)`` or ``(False, exception)``: the exception keeps the body's frames."""
    try:
        return True, await body
    except BaseException as exc:  # the body's outcome, raised again by _run_on
        return False, exc


def _run_on(loop: asyncio.AbstractEventLoop, body: Awaitable[T]) -> T:
    task = loop.create_task(_outcome(body))
    interrupted: BaseException | None = None
    _local.task = task
    try:
        while True:
            try:
                loop.run_until_complete(task)
            except BaseException as exc:
                if not task.done():  # raised into the loop itself, not by the body
                    interrupted = interrupted or exc
                    task.cancel()
                    continue
            break
        interrupted = interrupted or getattr(_local, "interrupt", None)
    finally:
        _local.task = None
        _local.interrupt = None
        _finish(loop)
    if task.cancelled():  # cancelled before the body started
        ok, value = False, asyncio.CancelledError()
    else:
        ok, value = task.result()
    if ok:
        return cast(T, value)  # (if cancelled, the body suppressed it: its result stands)
    if interrupted is not None and isinstance(value, asyncio.CancelledError):
        # The interrupt is the outcome; its context, the cancellation, shows where the
        # body was.
        interrupted.__context__ = value
        raise interrupted
    raise value


def _handle_callback_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Log as asyncio does; an interrupt (see :func:`interrupt_on`) also stops the body."""
    exc = context.get("exception")
    task: asyncio.Task[Any] | None = getattr(_local, "task", None)
    if isinstance(exc, _INTERRUPTS) and task is not None and not task.done():
        if getattr(_local, "interrupt", None) is None:
            _local.interrupt = exc
        task.cancel()
        return
    loop.default_exception_handler(context)


def _finish(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what the body left running and close its async generators (as asyncio.run)."""
    left = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in left:
        task.cancel()
    if left:
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


def _run_in_helper_thread(body: Awaitable[T]) -> T:
    """Run ``body`` on the loop of a fresh thread (the caller's thread runs a loop)."""
    outcome: list[Any] = []

    def serve() -> None:
        try:
            outcome.append((True, _run_on(thread_loop(), body)))
        except BaseException as exc:  # handed to the caller's thread
            outcome.append((False, exc))
        finally:
            close_thread_loop()

    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(serve,), name="triggers:async-body", daemon=True
    )
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


def _close_all() -> None:
    with _LOOPS_LOCK:
        loops = list(_LOOPS)
    for loop in loops:
        if not loop.is_closed() and not loop.is_running():
            with contextlib.suppress(Exception):
                loop.close()


def _forget_after_fork() -> None:
    """In a forked child (a Celery pool process): the parent's loops are not this process's.

    They are kept referenced and never closed here: closing one would unregister its
    file descriptors from the selector the child shares with its parent.
    """
    global _local, _LOOPS_LOCK  # noqa: PLW0603 - the child's state starts afresh
    _LOOPS_LOCK = threading.Lock()  # in case another thread held it at the fork
    _ABANDONED.extend(_LOOPS)
    _LOOPS.clear()
    _local = threading.local()


#: Loops inherited from the parent process (never closed or collected in the child).
_ABANDONED: list[asyncio.AbstractEventLoop] = []
atexit.register(_close_all)
if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_after_fork)
