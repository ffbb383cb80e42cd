"""Registering trigger tasks with a Celery app, under their own names.

Two styles:

* **class style**: subclass :class:`~triggers_core.TriggerTask` as usual, then
  call :func:`bind_tasks(app) <bind_tasks>` once the app is configured. It
  binds every registered trigger task (per-class Celery options come from the
  ``celery_options`` class attribute), and binds tasks registered later when a
  worker starts (e.g. modules listed in the ``imports`` setting).
* **decorator style**: :func:`trigger_task` turns a function into a trigger
  task class and binds it.

Either way, the Celery task's name is the trigger task's ``name``, so Celery
routing and per-task options work by that name.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from celery import signals

from triggers_celery.app import set_default_app
from triggers_celery.errors import BindingError
from triggers_celery.observability import install_worker_steps
from triggers_celery.sweeper import install as install_sweeper
from triggers_celery.worker import TriggerCeleryTask, run_message
from triggers_celery.worker_setup import watch_app
from triggers_core.runtime.tasks import (
    TaskContext,
    TaskResult,
    TriggerTask,
    get_task_class,
    registered_tasks,
    set_task_defaults,
    task_defaults,
)

__all__ = ["FORBIDDEN_OPTIONS", "bind_tasks", "trigger_task"]

#: Celery task options a trigger task may not set, and why.
FORBIDDEN_OPTIONS: Mapping[str, str] = {
    "name": "the Celery task is named after the trigger task",
    "base": "the base class runs the trigger task",
    "bind": "the base class runs the trigger task",
    "serializer": "trigger task messages are always JSON",
    "autoretry_for": "Celery retries would run an instance twice; use self.retry() in the task",
    "retry_backoff": "Celery retries would run an instance twice; use self.retry() in the task",
    "retry_kwargs": "Celery retries would run an instance twice; use self.retry() in the task",
    "retry_jitter": "Celery retries would run an instance twice; use self.retry() in the task",
    "pydantic": "trigger task messages have a fixed shape",
    "typing": "trigger task messages have a fixed shape",
}

_auto_bound: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.RLock()


def _check_options(name: str, options: Mapping[str, Any]) -> None:
    for option in options:
        reason = FORBIDDEN_OPTIONS.get(option)
        if reason is not None and not (option == "serializer" and options[option] == "json"):
            raise BindingError(f"trigger task {name!r}: Celery option {option!r}: {reason}")


def _bind_one(app: Any, name: str, cls: type[TriggerTask], options: Mapping[str, Any]) -> Any:
    merged = {**dict(getattr(cls, "celery_options", None) or {}), **options}
    _check_options(name, merged)
    merged.pop("serializer", None)
    existing = app.tasks.get(name)
    if existing is not None:
        if getattr(existing, "trigger_task_name", None) == name:
            differ = sorted(k for k, v in options.items() if getattr(existing, k, None) != v)
            if differ:
                raise BindingError(
                    f"trigger task {name!r} is already bound to this app without the options "
                    f"{differ}; give options at the first binding (or in celery_options)"
                )
            return existing
        raise BindingError(
            f"cannot bind trigger task {name!r}: the Celery app already has another task "
            f"with that name ({type(existing).__module__}.{type(existing).__qualname__})"
        )
    return app.task(
        run_message,
        name=name,
        base=TriggerCeleryTask,
        bind=True,
        shared=False,
        lazy=False,
        trigger_task_name=name,
        __doc__=cls.__doc__ or f"Runs trigger task {name!r}.",
        **merged,
    )


def bind_tasks(app: Any, *tasks: type[TriggerTask] | str, **options: Any) -> dict[str, Any]:
    """Register trigger tasks as Celery tasks of ``app``; return name -> Celery task.

    With no ``tasks``, binds every registered trigger task now, and again when
    a worker of ``app`` starts (so tasks defined in modules the worker imports
    later are bound too). ``options`` are Celery task options (``queue``,
    ``rate_limit``, ``time_limit``...) applied to the named tasks, over each
    class's ``celery_options``. Binding is idempotent. ``app`` becomes the app
    that :class:`~triggers_celery.CeleryTaskRunner` uses by default.

    Call it after the app is configured: Celery reads some task defaults from
    the settings when a task is bound. It also installs the worker-side checks
    of :func:`~triggers_celery.worker_setup.watch_app` (the ``triggers_storages``
    setting is sealed so that ``celery inspect conf`` cannot reveal the URLs)
    and the worker's sweeper (:mod:`triggers_celery.sweeper`), and applies the
    ``triggers_task_defaults`` setting (a mapping of ``on_lost``,
    ``max_lost_retries``, ``lease_seconds``: the defaults of the tasks that do not
    set them, see :func:`~triggers_core.set_task_defaults`).
    """
    set_default_app(app)
    watch_app(app)
    install_sweeper(app)
    install_worker_steps(app)
    _apply_task_defaults(app)
    with _lock:
        if tasks:
            classes = {}
            for task in tasks:
                cls = get_task_class(task) if isinstance(task, str) else task
                classes[task if isinstance(task, str) else cls.name] = cls
        else:
            classes = registered_tasks()
            _bind_on_worker_start(app)
        return {name: _bind_one(app, name, cls, options) for name, cls in sorted(classes.items())}


#: The Celery setting holding the process's task defaults (see bind_tasks).
TASK_DEFAULTS_SETTING = "triggers_task_defaults"


def _apply_task_defaults(app: Any) -> None:
    given = app.conf.get(TASK_DEFAULTS_SETTING)
    if given is None:
        return
    if not isinstance(given, Mapping):
        raise BindingError(
            f"{TASK_DEFAULTS_SETTING} must be a mapping of on_lost, max_lost_retries and "
            f"lease_seconds, got {type(given).__name__}"
        )
    unknown = sorted(str(key) for key in given if key not in task_defaults())
    if unknown:
        raise BindingError(
            f"{TASK_DEFAULTS_SETTING}: unknown {', '.join(map(repr, unknown))}; "
            "known: 'lease_seconds', 'max_lost_retries', 'on_lost'"
        )
    try:
        set_task_defaults(**given)
    except ValueError as exc:
        raise BindingError(f"{TASK_DEFAULTS_SETTING}: {exc}") from None


def _bind_on_worker_start(app: Any) -> None:
    if app in _auto_bound:
        return
    _auto_bound.add(app)
    app_ref = weakref.ref(app)

    def bind_late(sender: Any = None, **_kwargs: Any) -> None:
        bound_app = app_ref()
        if bound_app is not None and getattr(sender, "app", None) is bound_app:
            bind_tasks(bound_app)

    signals.worker_init.connect(bind_late, weak=False)


#: A decorated task function: returns a result mapping or None, or is an ``async def``.
TaskFunction = Callable[..., TaskResult]


def trigger_task(
    app: Any = None,
    *,
    name: str,
    bind: bool = False,
    max_retries: int | None = None,
    **options: Any,
) -> Callable[[TaskFunction], type[TriggerTask]]:
    """Decorator: make a function a trigger task called ``name`` (and bind it to ``app``).

    The function receives the :class:`~triggers_core.TaskContext`; with
    ``bind=True`` it receives the task object first (for ``task.skip(...)`` and
    ``task.retry(...)``). The decorator returns the generated
    :class:`~triggers_core.TriggerTask` subclass, which runs unchanged under
    the threading runner. ``options`` are Celery task options; without
    ``app`` they are kept for a later :func:`bind_tasks`.
    """
    celery_options = dict(options)
    _check_options(name, celery_options)

    def decorate(fn: TaskFunction) -> type[TriggerTask]:
        def _run(self: TriggerTask, context: TaskContext) -> TaskResult:
            return fn(self, context) if bind else fn(context)

        namespace: dict[str, Any] = {
            "name": name,
            "_run": _run,
            "celery_options": celery_options,
            "__module__": fn.__module__,
            "__qualname__": fn.__qualname__,
            "__doc__": fn.__doc__,
        }
        if max_retries is not None:
            namespace["max_retries"] = max_retries
        cls: type[TriggerTask] = type(fn.__name__, (TriggerTask,), namespace)
        if app is not None:
            bind_tasks(app, cls)
        return cls

    return decorate
