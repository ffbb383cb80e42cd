"""The task API: what users subclass, and the context a task runs with.

The same :class:`TriggerTask` subclass runs under the in-process runner and on
a Celery worker. Subclassing with a ``name`` registers the task; a
configuration's ``run`` directive is looked up in this registry and is never
treated as an import path.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Awaitable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TypeVar

import attrs

from triggers_core.engine.leases import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_LOST_RETRIES,
    LostPolicy,
    check_lease_seconds,
)
from triggers_core.errors import TriggersError, UnknownTaskError

if TYPE_CHECKING:
    from triggers_core.engine.state import TaskInstance
    from triggers_core.runtime.ports import SessionManager

__all__ = [
    "RetryTask",
    "SkipTask",
    "TaskContext",
    "TaskLogger",
    "TaskPolicy",
    "TaskResult",
    "TriggerTask",
    "get_task",
    "get_task_class",
    "mark_traceback_logged",
    "register_task",
    "registered_tasks",
    "set_task_defaults",
    "task_defaults",
    "task_policy",
    "traceback_was_logged",
    "with_context",
]

_CONTEXT_ATTR = "__triggers_context__"
_LOGGED_ATTR = "__triggers_traceback_logged__"
_REGISTRY: dict[str, type[TriggerTask]] = {}
_REGISTRY_LOCK = threading.Lock()

E = TypeVar("E", bound=BaseException)

#: What ``_run`` returns: a result mapping, None, or (an ``async def`` body) an
#: awaitable of one.
TaskResult = Mapping[str, Any] | None | Awaitable[Mapping[str, Any] | None]


def with_context(exc: E, context: Mapping[str, Any]) -> E:
    """Attach a context dict to an exception; it lands in ``exceptionContext``."""
    setattr(exc, _CONTEXT_ATTR, dict(context))
    return exc


def exception_context(exc: BaseException) -> dict[str, Any]:
    """The context attached with :func:`with_context` (``{}`` if none)."""
    context = getattr(exc, _CONTEXT_ATTR, None)
    return dict(context) if isinstance(context, Mapping) else {}


def mark_traceback_logged(exc: BaseException) -> None:
    """Remember that ``exc``'s traceback reached a log, so it is not logged twice."""
    # An exception class with __slots__ cannot be marked: its traceback may be logged twice.
    with contextlib.suppress(AttributeError):
        setattr(exc, _LOGGED_ATTR, True)


def traceback_was_logged(exc: BaseException) -> bool:
    """True once :func:`mark_traceback_logged` was called for ``exc``."""
    return bool(getattr(exc, _LOGGED_ATTR, False))


class SkipTask(TriggersError):
    """Raised by :meth:`TriggerTask.skip`: the instance ends ``skipped``, no cascade."""

    def __init__(self, metadata: Mapping[str, Any] | None = None) -> None:
        self.metadata = dict(metadata or {})
        super().__init__("task skipped itself")


# Stored sessions name these classes in ``exceptionType`` by the module they were first
# defined in; that path still imports them (a thin re-export), so the names stay.
SkipTask.__module__ = "triggers_core.tasks"


class RetryTask(TriggersError):
    """Raised by :meth:`TriggerTask.retry`: fail, then replay after ``cooldown``."""

    def __init__(
        self,
        exc: BaseException | None = None,
        metadata: Mapping[str, Any] | None = None,
        replacement_kwargs: Mapping[str, Any] | None = None,
        cooldown: float | None = None,
    ) -> None:
        self.exc = exc
        self.metadata = dict(metadata or {})
        self.replacement_kwargs = replacement_kwargs
        self.cooldown = cooldown
        super().__init__(f"task asked to retry ({exc!r})" if exc else "task asked to retry")


RetryTask.__module__ = "triggers_core.tasks"


class TaskLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger adapter that tracks the highest level logged.

    Its records carry the ``extra`` fields ``context`` (a dict), ``session``
    (the session UID) and ``instance`` (the instance name).
    """

    def __init__(self, logger: logging.Logger, context: Mapping[str, Any], owner: TaskContext):
        extra = {
            "context": dict(context),
            "session": owner.manager.uid,
            "instance": owner.instance_name,
        }
        super().__init__(logger, extra)
        self._owner = owner

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        self._owner._note_level(level)
        super().log(level, msg, *args, **kwargs)


class TaskContext:
    """What a running task gets: the manager, its kwargs, its name and retry count.

    ``run_key`` is the same for an instance and every clone replayed from it
    (after a ``retry()``, a lost worker, or an operator's replay), and differs
    between sessions and between instances a fire created: use it to make the
    task's own side effects idempotent, since a body may run again after its
    worker died (``"{session}#{first instance}"``, e.g. ``"s-42#t_pay#0"``).

    In an ``async def`` body, ``manager`` is still the synchronous manager that
    runs the instance (the threading runner's, a Celery worker's): its methods
    block the body's own event loop while they wait for the storage; use
    :meth:`afire` to fire without blocking it.
    """

    def __init__(
        self,
        manager: SessionManager,
        trigger_kwargs: Mapping[str, Any],
        instance_name: str,
        retries: int = 0,
        logger: logging.Logger | None = None,
        *,
        run_key: str | None = None,
    ) -> None:
        self.manager = manager
        self.trigger_kwargs = trigger_kwargs
        self.instance_name = instance_name
        self.retries = retries
        self.run_key = run_key if run_key is not None else f"{manager.uid}#{instance_name}"
        self.logger = logger or logging.getLogger("triggers.tasks")
        self._log_level = logging.NOTSET
        self._lock = threading.Lock()

    async def afire(
        self,
        trigger_name: str,
        trigger_kwargs: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> list[TaskInstance]:
        """``manager.fire(...)`` from an ``async def`` body, without blocking its loop.

        Under the threading runner and on Celery workers ``self.manager`` is the
        synchronous :class:`~triggers_core.TriggerManager`: calling its methods
        from an async body blocks the body's event loop (only that body's: each
        runner thread has its own) until the storage answers. ``afire`` runs
        the synchronous ``fire`` in a worker thread (:func:`asyncio.to_thread`)
        and awaits it; a manager whose ``fire`` is a coroutine is awaited
        directly. Returns what ``fire`` returns.
        """
        fire = self.manager.fire
        if inspect.iscoroutinefunction(fire):
            fired: list[TaskInstance] = await fire(
                trigger_name, trigger_kwargs, idempotency_key=idempotency_key
            )
            return fired
        return await asyncio.to_thread(
            fire, trigger_name, trigger_kwargs, idempotency_key=idempotency_key
        )

    @property
    def log_level(self) -> int:
        """The highest level logged through this context so far (NOTSET if none)."""
        return self._log_level

    def _note_level(self, level: int) -> None:
        with self._lock:
            self._log_level = max(self._log_level, level)

    @contextmanager
    def get_logger_context(self, context: Mapping[str, Any] | None = None) -> Iterator[TaskLogger]:
        """Yield a logger whose records carry ``context``; log exceptions raised inside.

        An exception leaving the block is logged once, with its traceback and
        this context (nested blocks and the manager's ``failed`` record do not
        repeat the traceback). The highest level emitted becomes the
        instance's ``log_level``.
        """
        merged = {"instance": self.instance_name, **(context or {})}
        adapter = TaskLogger(self.logger, merged, self)
        try:
            yield adapter
        except (SkipTask, RetryTask):
            raise
        except Exception as exc:
            if not traceback_was_logged(exc):
                adapter.exception("%s raised %s: %s", self.instance_name, type(exc).__name__, exc)
                mark_traceback_logged(exc)
            raise


class TriggerTask:
    """Base class of trigger tasks. Subclass, set ``name``, implement ``_run``.

    ``_run(context)`` returns a mapping (or None) that becomes the result and
    the kwargs of the cascade; raising ``self.skip(...)`` or ``self.retry(...)``
    ends it skipped or retried; any other exception fails it. ``_run`` may be
    an ``async def``: the runner runs it to completion on an event loop the
    runtime owns (:mod:`triggers_core.runtime.body_loop`) and records its
    outcome the same way.
    """

    #: The registry key that configurations name in ``run``.
    name: ClassVar[str]
    #: How many times :meth:`retry` may replay the instance.
    max_retries: ClassVar[int] = 3
    #: What happens to an instance whose worker was lost (its lease expired):
    #: ``"retry"`` replays it as a clone, ``"fail"`` leaves it ``failed``. This and
    #: the next two, when a task class leaves them unset, take the process's
    #: defaults (:func:`set_task_defaults`).
    on_lost: ClassVar[str] = "retry"
    #: How many lost runs of one chain of clones are replayed before it stays ``failed``.
    max_lost_retries: ClassVar[int] = DEFAULT_MAX_LOST_RETRIES
    #: Seconds a run's lease lasts; the runner renews it every third of that while
    #: the body runs, so a dead worker's instance is taken over after at most this.
    lease_seconds: ClassVar[float] = DEFAULT_LEASE_SECONDS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            register_task(cls)

    def _run(self, context: TaskContext) -> TaskResult:
        raise NotImplementedError(f"{type(self).__name__} must implement _run(context)")

    def run(self, context: TaskContext) -> TaskResult:
        """Called by runners; wraps ``_run`` (override ``_run``, not this).

        Returns what ``_run`` returns: for an ``async def`` body, the coroutine
        (the runner awaits it).
        """
        return self._run(context)

    def skip(self, metadata: Mapping[str, Any] | None = None) -> NoReturn:
        """End this instance ``skipped`` with ``metadata``; nothing cascades."""
        raise SkipTask(metadata)

    def retry(
        self,
        exc: BaseException | None = None,
        metadata: Mapping[str, Any] | None = None,
        replacement_kwargs: Mapping[str, Any] | None = None,
        cooldown: float | None = None,
    ) -> NoReturn:
        """Fail this instance and replay it after ``cooldown`` seconds.

        The clone waits for its cooldown unstarted, on a durable timer in the
        storage (metadata ``delayedUntil``; the clock that applies ``delay``
        schedules it), so a restart loses nothing; its ``unless`` triggers still
        abandon it meanwhile. Without a cooldown it is scheduled at once. Once
        the instance's retries reach ``max_retries`` it fails with
        ``MaxRetriesExceeded`` instead.
        """
        raise RetryTask(exc, metadata, replacement_kwargs, cooldown)


@attrs.frozen
class TaskPolicy:
    """How the runtime treats the runs of a task: its lease and what happens when lost."""

    lease_seconds: float = DEFAULT_LEASE_SECONDS
    lost: LostPolicy = attrs.field(factory=LostPolicy)


#: The process's defaults for the lease attributes a task class does not set itself.
_POLICY_ATTRIBUTES = ("on_lost", "max_lost_retries", "lease_seconds")
_DEFAULTS: dict[str, Any] = {
    "on_lost": "retry",
    "max_lost_retries": DEFAULT_MAX_LOST_RETRIES,
    "lease_seconds": DEFAULT_LEASE_SECONDS,
}


def _checked(where: str, on_lost: Any, max_lost_retries: Any, lease_seconds: Any) -> TaskPolicy:
    if on_lost not in ("retry", "fail"):
        raise ValueError(f"{where}on_lost must be 'retry' or 'fail', got {on_lost!r}")
    lost = max_lost_retries
    if not isinstance(lost, int) or isinstance(lost, bool) or lost < 0:
        raise ValueError(f"{where}max_lost_retries must be an integer >= 0, got {lost!r}")
    try:
        seconds = check_lease_seconds(lease_seconds)
    except ValueError as exc:
        raise ValueError(f"{where}{exc}") from None
    return TaskPolicy(seconds, LostPolicy(on_lost == "retry", lost))


def set_task_defaults(
    *,
    on_lost: str | None = None,
    max_lost_retries: int | None = None,
    lease_seconds: float | None = None,
) -> None:
    """Set this process's defaults for the tasks that do not set these attributes themselves.

    A task class (or a base class of the project's) that sets ``on_lost``,
    ``max_lost_retries`` or ``lease_seconds`` keeps its own value; every other
    task takes the default given here (out of the box: ``"retry"``, 3, 30 s).
    Set the same defaults in every process that runs or sweeps tasks (with
    Celery: the ``triggers_task_defaults`` setting does it where tasks are
    bound). A bad value raises :class:`ValueError` naming it, and nothing changes.
    """
    given = {
        "on_lost": on_lost,
        "max_lost_retries": max_lost_retries,
        "lease_seconds": lease_seconds,
    }
    merged = {**_DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
    _checked("task defaults: ", **merged)
    with _REGISTRY_LOCK:
        _DEFAULTS.update(merged)


def task_defaults() -> dict[str, Any]:
    """This process's defaults for ``on_lost``, ``max_lost_retries`` and ``lease_seconds``."""
    with _REGISTRY_LOCK:
        return dict(_DEFAULTS)


def _attribute(cls: type[TriggerTask], attribute: str) -> Any:
    """``cls``'s own (or a base's, below :class:`TriggerTask`) value, else the default."""
    for klass in cls.__mro__:
        if klass is TriggerTask:
            break
        if attribute in klass.__dict__:
            return klass.__dict__[attribute]
    return _DEFAULTS[attribute]


def _policy_of(cls: type[TriggerTask]) -> TaskPolicy:
    """The class's policy; :class:`ValueError` naming the attribute that is wrong."""
    where = f"{cls.__module__}.{cls.__qualname__}."
    return _checked(where, *(_attribute(cls, name) for name in _POLICY_ATTRIBUTES))


def task_policy(name: str) -> TaskPolicy:
    """The policy of the task registered under ``name``; the defaults if there is none.

    A sweeper may run where a task is not registered (a web process): it then
    applies the process's defaults (:func:`set_task_defaults`; out of the box a
    30 s lease, lost runs replayed 3 times).
    """
    try:
        cls = get_task_class(name)
    except UnknownTaskError:
        return _checked("task defaults: ", *(_DEFAULTS[attr] for attr in _POLICY_ATTRIBUTES))
    return _policy_of(cls)


def register_task(cls: type[TriggerTask], name: str | None = None) -> type[TriggerTask]:
    """Register ``cls`` under ``name`` (default ``cls.name``); usable as a decorator.

    A class whose ``on_lost``, ``max_lost_retries`` or ``lease_seconds`` is
    out of range is refused with :class:`ValueError` naming the attribute.
    """
    _policy_of(cls)
    key = name or cls.__dict__.get("name")
    if not isinstance(key, str) or not key:
        raise TypeError(f"{cls.__qualname__}: trigger tasks need a non-empty string name")
    with _REGISTRY_LOCK:
        existing = _REGISTRY.get(key)
        same = existing is not None and (existing.__module__, existing.__qualname__) == (
            cls.__module__,
            cls.__qualname__,
        )
        if existing is not None and not same:
            raise TypeError(
                f"trigger task name {key!r} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}"
            )
        _REGISTRY[key] = cls
    return cls


def get_task_class(name: str) -> type[TriggerTask]:
    """The task class registered under ``name`` (:class:`UnknownTaskError` if none)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownTaskError(name, _REGISTRY) from None


def get_task(name: str) -> TriggerTask:
    """A fresh instance of the task registered under ``name``."""
    return get_task_class(name)()


def registered_tasks() -> dict[str, type[TriggerTask]]:
    """A copy of the task registry."""
    with _REGISTRY_LOCK:
        return dict(_REGISTRY)
