"""Observers: how metrics and traces watch the shell, at no cost when nothing watches.

The shell tells an :class:`Observer` what it does, at the few points where
work happens: a fire (:meth:`TriggerManager.fire_result`), each load and
compare-and-swap of the commit loop (:mod:`.commit`), every committed
transition (with the state it replaced, so an observer sees which instances
changed status), each dispatch to a runner, each run of an instance and the
cascade it fires, and what a sweep recovered. The engine is never observed:
it stays pure, and every fact an observer needs is in the
:class:`~triggers_core.engine.transition.Transition` the shell commits.

Two observers ship with the library, each behind an optional extra and
switched on by installing it:

* metrics (extra ``metrics``, ``prometheus_client``):
  :mod:`triggers_core.runtime.metrics`;
* traces (extra ``otel``, ``opentelemetry-api``):
  :mod:`triggers_core.runtime.tracing`.

:func:`current` decides once per process (and again after :func:`configure`)
which of them to use: a missing extra is never imported, so with neither
installed it returns None and every observed point costs one function call and
a comparison with None. Traces need a tracer provider as well (the
application's SDK): while none is set they are left out, and looked for again
every :data:`RECHECK_SECONDS`. The environment variables :data:`METRICS_ENV` and
:data:`TRACING_ENV` set to ``off`` switch an installed one off;
:func:`configure` does the same from code and takes a tracer provider, the
session attribute of spans (:data:`SESSION_ATTRIBUTE_ENV`) and observers of
your own.

A ``*_begin`` method returns a token that the shell hands back to the matching
``*_end`` method, in the same thread, whatever happened in between (``error``
is the exception that ended the work, or None).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import threading
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from triggers_core.engine.effects import ScheduleInstance
from triggers_core.engine.state import SessionState, TaskInstance
from triggers_core.engine.transition import Transition
from triggers_core.errors import install_extra_hint
from triggers_core.runtime.storage import Storage

__all__ = [
    "METRICS_ENV",
    "RECHECK_SECONDS",
    "SESSION_ATTRIBUTES",
    "SESSION_ATTRIBUTE_ENV",
    "TRACING_ENV",
    "Composite",
    "Observer",
    "configure",
    "current",
    "session_attribute",
    "task_of",
]

#: Environment variable: ``off`` keeps the metrics observer off although ``prometheus_client``
#: is installed.
METRICS_ENV = "TRIGGERS_METRICS"
#: Environment variable: ``off`` keeps the tracing observer off although ``opentelemetry-api``
#: is installed.
TRACING_ENV = "TRIGGERS_TRACING"
#: Environment variable: what spans say about the session: ``hash`` (the default: the first
#: 16 hex digits of the SHA-256 of the UID), ``uid`` (the UID itself) or ``none``.
SESSION_ATTRIBUTE_ENV = "TRIGGERS_TRACE_SESSION"
SESSION_ATTRIBUTES = ("hash", "uid", "none")

#: Seconds between two looks for a tracer provider while traces are wanted and there is none.
RECHECK_SECONDS = 1.0
#: The modules of the shipped observers, and the distribution each needs.
_SHIPPED = {
    "metrics": ("triggers_core.runtime.metrics", "prometheus_client", METRICS_ENV),
    "tracing": ("triggers_core.runtime.tracing", "opentelemetry", TRACING_ENV),
}


class Observer:
    """What the shell tells whoever watches it; every method here does nothing.

    Subclass and override what you need; the ``*_begin`` methods return a
    token for their ``*_end`` (see the module). An observer must not raise:
    the shell does not guard the calls.

    An observer that overrides none of the ``load_*``/``store_*`` (or
    ``dispatch_*``) methods is not called for them at all
    (:attr:`watches_storage`, :attr:`watches_dispatch`, set for each subclass).
    """

    #: Whether the ``load_*``/``store_*`` methods are overridden (else never called).
    watches_storage: bool = False
    #: Whether the ``dispatch_*`` methods are overridden (else never called).
    watches_dispatch: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)

        def overrides(*names: str) -> bool:
            return any(getattr(cls, name) is not getattr(Observer, name) for name in names)

        cls.watches_storage = overrides("load_begin", "load_end", "store_begin", "store_end")
        cls.watches_dispatch = overrides("dispatch_begin", "dispatch_end")

    def fire_begin(self, storage: Storage, trigger: str) -> Any:
        """An application fire of ``trigger`` starts (cascades are :meth:`cascade_begin`)."""

    def fire_end(
        self, token: Any, scheduled: int, duplicate: bool, error: BaseException | None
    ) -> None:
        """It ended: ``scheduled`` instances, or a ``duplicate`` keyed fire that changed nothing."""

    def fire_written(
        self, token: Any, scheduled: int, duplicate: bool, error: BaseException | None
    ) -> Any:
        """A fire into a caller's transaction (``session=``) returned: it is written in that
        transaction, not committed. The default ends it as :meth:`fire_end` does; what it
        returns goes to :meth:`fire_settled` if that transaction commits (never if it
        rolls back)."""
        self.fire_end(token, scheduled, duplicate, error)

    def fire_settled(self, pending: Any) -> None:
        """The caller's transaction of a :meth:`fire_written` fire committed."""

    def load_begin(self, storage: Storage, attempt: int) -> Any:
        """The commit loop's attempt ``attempt`` (from 0) loads its working set."""

    def load_end(self, token: Any, error: BaseException | None) -> None:
        """The load ended."""

    def store_begin(self, storage: Storage, attempt: int) -> Any:
        """The attempt compare-and-swaps its transition."""

    def store_end(self, token: Any, error: BaseException | None) -> None:
        """The compare-and-swap ended (``error`` a ``ConflictError``: another process won)."""

    def conflict(self, storage: Storage, attempt: int) -> None:
        """Attempt ``attempt`` lost to another writer; the loop backs off and starts over."""

    def committed(self, storage: Storage, before: SessionState, transition: Transition) -> None:
        """``transition`` is stored; ``before`` is the state it was computed from.

        ``before`` holds every instance ``transition.changed`` names that
        existed already, so ``before.instances.get(name)`` is its old value.
        """

    def dispatch_begin(self, session: str, effect: ScheduleInstance) -> Any:
        """An instance is handed to its runner."""

    def dispatch_end(self, token: Any, error: BaseException | None) -> None:
        """The runner took it (or refused it with ``error``)."""

    def run_begin(self, session: str, instance: str) -> Any:
        """A runner runs ``instance`` here (``run_instance``)."""

    def run_end(
        self, token: Any, outcome: TaskInstance | None, error: BaseException | None
    ) -> None:
        """The run ended: ``outcome`` as committed, None if it did not run (not scheduled)."""

    def cascade_begin(self, session: str, transition: Transition) -> Any:
        """The committed outcome of a run is performed (its cascade dispatched)."""

    def cascade_end(self, token: Any, error: BaseException | None) -> None:
        """Its hooks ran and what it scheduled was dispatched."""

    def recovered(self, task: str, action: str) -> None:
        """A sweep moved an instance of ``task`` on (``"taken over"``, ``"dispatched again"``)."""

    def swept(self, lost: int, overdue_timers: int) -> None:
        """A sweep of a store found ``lost`` instances and ``overdue_timers`` due timers."""

    def inject(self, carrier: MutableMapping[str, str]) -> None:
        """Write the current trace context into ``carrier`` (a message's headers)."""

    def attach(self, carrier: Mapping[str, str]) -> Any:
        """Make the trace context in ``carrier`` current; the token goes to :meth:`detach`."""

    def detach(self, token: Any) -> None:
        """Undo :meth:`attach`."""


class Composite(Observer):
    """Two observers as one: begins in order, ends in reverse order (nest for more)."""

    def __init__(self, first: Observer, second: Observer) -> None:
        self.first = first
        self.second = second
        self.watches_storage = first.watches_storage or second.watches_storage
        self.watches_dispatch = first.watches_dispatch or second.watches_dispatch

    @classmethod
    def of(cls, parts: Iterable[Observer]) -> Observer | None:
        """One observer watching for all of ``parts`` (None if there are none)."""
        found = list(parts)
        if not found:
            return None
        combined = found[-1]
        for part in reversed(found[:-1]):
            combined = cls(part, combined)
        return combined

    def fire_begin(self, storage: Storage, trigger: str) -> Any:
        return self.first.fire_begin(storage, trigger), self.second.fire_begin(storage, trigger)

    def fire_end(
        self, token: Any, scheduled: int, duplicate: bool, error: BaseException | None
    ) -> None:
        self.second.fire_end(token[1], scheduled, duplicate, error)
        self.first.fire_end(token[0], scheduled, duplicate, error)

    def fire_written(
        self, token: Any, scheduled: int, duplicate: bool, error: BaseException | None
    ) -> Any:
        second = self.second.fire_written(token[1], scheduled, duplicate, error)
        return self.first.fire_written(token[0], scheduled, duplicate, error), second

    def fire_settled(self, pending: Any) -> None:
        self.first.fire_settled(pending[0])
        self.second.fire_settled(pending[1])

    def load_begin(self, storage: Storage, attempt: int) -> Any:
        return self.first.load_begin(storage, attempt), self.second.load_begin(storage, attempt)

    def load_end(self, token: Any, error: BaseException | None) -> None:
        self.second.load_end(token[1], error)
        self.first.load_end(token[0], error)

    def store_begin(self, storage: Storage, attempt: int) -> Any:
        return self.first.store_begin(storage, attempt), self.second.store_begin(storage, attempt)

    def store_end(self, token: Any, error: BaseException | None) -> None:
        self.second.store_end(token[1], error)
        self.first.store_end(token[0], error)

    def conflict(self, storage: Storage, attempt: int) -> None:
        self.first.conflict(storage, attempt)
        self.second.conflict(storage, attempt)

    def committed(self, storage: Storage, before: SessionState, transition: Transition) -> None:
        self.first.committed(storage, before, transition)
        self.second.committed(storage, before, transition)

    def dispatch_begin(self, session: str, effect: ScheduleInstance) -> Any:
        return self.first.dispatch_begin(session, effect), self.second.dispatch_begin(
            session, effect
        )

    def dispatch_end(self, token: Any, error: BaseException | None) -> None:
        self.second.dispatch_end(token[1], error)
        self.first.dispatch_end(token[0], error)

    def run_begin(self, session: str, instance: str) -> Any:
        return self.first.run_begin(session, instance), self.second.run_begin(session, instance)

    def run_end(
        self, token: Any, outcome: TaskInstance | None, error: BaseException | None
    ) -> None:
        self.second.run_end(token[1], outcome, error)
        self.first.run_end(token[0], outcome, error)

    def cascade_begin(self, session: str, transition: Transition) -> Any:
        return self.first.cascade_begin(session, transition), self.second.cascade_begin(
            session, transition
        )

    def cascade_end(self, token: Any, error: BaseException | None) -> None:
        self.second.cascade_end(token[1], error)
        self.first.cascade_end(token[0], error)

    def recovered(self, task: str, action: str) -> None:
        self.first.recovered(task, action)
        self.second.recovered(task, action)

    def swept(self, lost: int, overdue_timers: int) -> None:
        self.first.swept(lost, overdue_timers)
        self.second.swept(lost, overdue_timers)

    def inject(self, carrier: MutableMapping[str, str]) -> None:
        self.first.inject(carrier)
        self.second.inject(carrier)

    def attach(self, carrier: Mapping[str, str]) -> Any:
        return self.first.attach(carrier), self.second.attach(carrier)

    def detach(self, token: Any) -> None:
        self.second.detach(token[1])
        self.first.detach(token[0])


class _Settings:
    """What :func:`configure` set; None: decided by the environment and what is installed."""

    def __init__(self) -> None:
        self.resolved = False
        self.active: Observer | None = None
        self.metrics: bool | None = None
        self.tracing: bool | None = None
        self.tracer_provider: Any = None
        self.session_attribute: str | None = None
        self.extra: tuple[Observer, ...] = ()
        self.lock = threading.Lock()
        #: The shipped observers wanted (installed, not switched off), decided once.
        self.kinds: tuple[str, ...] | None = None
        self.tracer: Observer | None = None
        #: While traces are wanted but no tracer provider is set: when to look again.
        self.recheck_at = 0.0


_settings = _Settings()


def _after_fork_in_child() -> None:
    """In a forked process (a Celery prefork pool process): a fresh lock, since
    another thread may have held the inherited one, and, while no tracer provider
    had been found, look again at once: the pool process sets its own up in
    ``worker_process_init`` and its first run must already be traced."""
    _settings.lock = threading.Lock()
    if _settings.recheck_at:
        _settings.resolved = False


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


def current() -> Observer | None:
    """The observer of this process, or None when nothing watches (decided once).

    While ``opentelemetry-api`` is installed but no tracer provider is set (no
    SDK: every span would be a no-op), traces are left out and looked for
    again every :data:`RECHECK_SECONDS`.
    """
    settings = _settings
    if settings.resolved and not (settings.recheck_at and time.monotonic() >= settings.recheck_at):
        return settings.active
    return _resolve()


def _wanted(kind: str, choice: bool | None) -> bool:
    _module, distribution, env = _SHIPPED[kind]
    if choice is False:
        return False
    if choice is None and os.environ.get(env, "").strip().lower() in ("off", "0", "false", "no"):
        return False
    try:
        spec = importlib.util.find_spec(distribution)  # looks, does not import
    except (ImportError, ValueError):  # blocked (``sys.modules[name] = None``)
        spec = None
    if spec is None:
        if choice:
            raise ImportError(f"{kind} needs {distribution!r}: {install_extra_hint(_extra(kind))}")
        return False
    return True


def _extra(kind: str) -> str:
    return "metrics" if kind == "metrics" else "otel"


def _resolve() -> Observer | None:
    settings = _settings
    with settings.lock:
        due = settings.recheck_at and time.monotonic() >= settings.recheck_at
        if settings.resolved and not due:
            return settings.active
        if settings.kinds is None:
            choices = (("metrics", settings.metrics), ("tracing", settings.tracing))
            settings.kinds = tuple(kind for kind, choice in choices if _wanted(kind, choice))
        parts: list[Observer] = []
        settings.recheck_at = 0.0
        for kind in settings.kinds:
            module = importlib.import_module(_SHIPPED[kind][0])  # an optional extra, by name
            if kind == "metrics":
                parts.append(module.metrics_observer())
                continue
            if settings.tracer is None:
                settings.tracer = module.TracingObserver(settings.tracer_provider)
            if settings.tracer_provider is not None or module.provider_is_set():
                parts.append(settings.tracer)
            else:
                settings.recheck_at = time.monotonic() + RECHECK_SECONDS
        parts.extend(settings.extra)
        active = Composite.of(parts)
        settings.active = active
        settings.resolved = True
        return active


def configure(
    *,
    metrics: bool | None = None,
    tracing: bool | None = None,
    tracer_provider: Any = None,
    session_attribute: str | None = None,
    observers: Iterable[Observer] = (),
) -> Observer | None:
    """Choose what watches this process; return the observer now in use.

    ``metrics`` / ``tracing``: True (the extra must be installed, else
    :class:`ImportError`), False (off), None (on when installed, unless its
    environment variable says ``off``). ``tracer_provider``: the OpenTelemetry
    tracer provider spans go to (default: the global one).
    ``session_attribute``: ``"hash"``, ``"uid"`` or ``"none"`` (see
    :data:`SESSION_ATTRIBUTE_ENV`). ``observers`` are added after the shipped
    ones. Each call replaces every earlier choice.
    """
    if session_attribute is not None and session_attribute not in SESSION_ATTRIBUTES:
        raise ValueError(
            f"session_attribute must be one of {list(SESSION_ATTRIBUTES)}, "
            f"got {session_attribute!r}"
        )
    extra = tuple(observers)
    for observer in extra:
        if not isinstance(observer, Observer):
            raise TypeError(f"observers must be Observer instances, got {observer!r}")
    with _settings.lock:
        _settings.metrics = metrics
        _settings.tracing = tracing
        _settings.tracer_provider = tracer_provider
        _settings.session_attribute = session_attribute
        _settings.extra = extra
        _settings.resolved = False
        _settings.active = None
        _settings.kinds = None
        _settings.tracer = None
        _settings.recheck_at = 0.0
    return current()


def session_attribute(uid: str) -> str | None:
    """What a span says about session ``uid``: its hash, the UID, or None (see the setting)."""
    mode = _settings.session_attribute
    if mode is None:
        mode = os.environ.get(SESSION_ATTRIBUTE_ENV, "hash").strip().lower() or "hash"
    if mode == "uid":
        return uid
    if mode == "none":
        return None
    return hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def task_of(instance: str) -> str:
    """The task of an instance name (``t_x#3`` -> ``t_x``)."""
    return instance.rpartition("#")[0] or instance
