"""OpenTelemetry spans of the shell (extra ``otel``): an :class:`~.observe.Observer`.

Imported only when ``opentelemetry-api`` is installed (see :mod:`.observe`);
the SDK, its exporters and its sampling are the application's choice. Without
a tracer provider (no SDK: the API's no-op tracer) this observer is left out
altogether (see :func:`~.observe.current`); a span that is not recording (not
sampled) gets nothing more: no attributes, no context attached.

==============================  ========  ==============================================
span                            kind      attributes (all prefixed ``triggers.``)
==============================  ========  ==============================================
``triggers.fire {trigger}``     internal  ``session``, ``trigger``, ``backend``,
                                          ``scheduled`` (instances), ``duplicate``;
                                          ``cascade`` (True) for a finished task's cascade
``triggers.storage.load``       client    ``backend``, ``attempt`` (0, then conflict retries)
``triggers.storage.commit``     client    ``backend``, ``attempt``, ``conflict`` (lost the race)
``triggers.dispatch {task}``    producer  ``session``, ``instance``, ``task``, ``runner``
``triggers.run {task}``         consumer  ``session``, ``instance``, ``task``, ``attempt``
                                          (retries so far), ``status``, ``exception_type``
==============================  ========  ==============================================

``session`` is the session UID, its hash or absent, per
:data:`~.observe.SESSION_ATTRIBUTE_ENV`. A failed run's span has status ERROR
and an ``exception`` event with ``exception.type`` (the recorded
``exceptionType``); an exception that escapes any span is recorded on it.

Message propagation uses the W3C trace context only (``traceparent``,
``tracestate``; never baggage, which may hold application data):
:meth:`TracingObserver.inject` and :meth:`TracingObserver.attach`.
While tracing is on, lifecycle log records (logger ``triggers.lifecycle``) carry
``otelTraceID`` and ``otelSpanID`` when a span is current
(:class:`TraceLogFilter`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from triggers_core.engine.effects import ScheduleInstance, TriggerFired
from triggers_core.engine.state import Status, TaskInstance
from triggers_core.engine.transition import Transition
from triggers_core.runtime.lifecycle import LIFECYCLE_LOGGER
from triggers_core.runtime.observe import Observer, session_attribute, task_of
from triggers_core.runtime.storage import Storage

__all__ = ["TRACER_NAME", "TraceLogFilter", "TracingObserver", "provider_is_set"]

#: The instrumentation scope of every span.
TRACER_NAME = "triggers"
#: Characters of a trigger or task name kept in a span name.
_NAME_LENGTH = 100

_propagator = TraceContextTextMapPropagator()
_Token = tuple[Span, object] | None


class TraceLogFilter(logging.Filter):
    """Adds ``otelTraceID`` / ``otelSpanID`` (hex) to records made while a span is current."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = trace.get_current_span().get_span_context()
        if found.is_valid:
            record.otelTraceID = format(found.trace_id, "032x")
            record.otelSpanID = format(found.span_id, "016x")
        return True


def provider_is_set() -> bool:
    """True once the application set a global tracer provider (an SDK)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _install_log_filter() -> None:
    logger = logging.getLogger(LIFECYCLE_LOGGER)
    if not any(isinstance(f, TraceLogFilter) for f in logger.filters):
        logger.addFilter(TraceLogFilter())


def _end(token: _Token, error: BaseException | None) -> None:
    if token is None:
        return
    span, attached = token
    if error is not None:
        span.record_exception(error)
        span.set_status(StatusCode.ERROR, f"{type(error).__name__}")
    span.end()
    context.detach(attached)  # type: ignore[arg-type] # the token attach returned


class TracingObserver(Observer):
    """Spans for fires, storage round trips, dispatches and runs (see the module)."""

    def __init__(self, tracer_provider: Any = None) -> None:
        if tracer_provider is None:
            self.tracer = trace.get_tracer(TRACER_NAME)
        else:
            self.tracer = tracer_provider.get_tracer(TRACER_NAME)
        _install_log_filter()

    def _start(self, name: str, kind: SpanKind, session: str | None = None) -> _Token:
        span = self.tracer.start_span(name, kind=kind)
        if not span.is_recording():
            return None  # not sampled: nothing to record, nothing to parent
        if session is not None:
            value = session_attribute(session)
            if value is not None:
                span.set_attribute("triggers.session", value)
        return span, context.attach(trace.set_span_in_context(span))

    def fire_begin(self, storage: Storage, trigger: str) -> Any:
        token = self._start(
            f"triggers.fire {trigger[:_NAME_LENGTH]}", SpanKind.INTERNAL, storage.uid
        )
        if token is not None:
            token[0].set_attributes(
                {"triggers.trigger": trigger, "triggers.backend": storage.backend_name}
            )
        return token

    def fire_end(
        self, token: Any, scheduled: int, duplicate: bool, error: BaseException | None
    ) -> None:
        if token is not None:
            span = token[0]
            span.set_attribute("triggers.scheduled", scheduled)
            span.set_attribute("triggers.duplicate", duplicate)
        _end(token, error)

    def load_begin(self, storage: Storage, attempt: int) -> Any:
        return self._storage("triggers.storage.load", storage, attempt)

    def _storage(self, name: str, storage: Storage, attempt: int) -> _Token:
        token = self._start(name, SpanKind.CLIENT)
        if token is not None:
            token[0].set_attributes(
                {"triggers.backend": storage.backend_name, "triggers.attempt": attempt}
            )
        return token

    def load_end(self, token: Any, error: BaseException | None) -> None:
        _end(token, error)

    def store_begin(self, storage: Storage, attempt: int) -> Any:
        return self._storage("triggers.storage.commit", storage, attempt)

    def store_end(self, token: Any, error: BaseException | None) -> None:
        if token is not None and error is not None and type(error).__name__ == "ConflictError":
            token[0].set_attribute("triggers.conflict", True)
            _end(token, None)  # losing a race is how optimistic concurrency works
            return
        _end(token, error)

    def dispatch_begin(self, session: str, effect: ScheduleInstance) -> Any:
        name = f"triggers.dispatch {effect.task_name[:_NAME_LENGTH]}"
        token = self._start(name, SpanKind.PRODUCER, session)
        if token is not None:
            token[0].set_attributes(
                {
                    "triggers.instance": effect.instance_name,
                    "triggers.task": effect.task_name,
                    "triggers.runner": effect.using or "default",
                }
            )
        return token

    def dispatch_end(self, token: Any, error: BaseException | None) -> None:
        _end(token, error)

    def run_begin(self, session: str, instance: str) -> Any:
        task = task_of(instance)
        token = self._start(f"triggers.run {task[:_NAME_LENGTH]}", SpanKind.CONSUMER, session)
        if token is not None:
            token[0].set_attributes({"triggers.instance": instance, "triggers.task": task})
        return token

    def run_end(
        self, token: Any, outcome: TaskInstance | None, error: BaseException | None
    ) -> None:
        if token is not None:
            span = token[0]
            if outcome is None:
                span.set_attribute("triggers.status", "not run")
            else:
                span.set_attribute("triggers.status", outcome.status.value)
                span.set_attribute("triggers.attempt", outcome.retries)
                if outcome.status is Status.FAILED:
                    kind = str(outcome.metadata.get("exceptionType") or "unknown")
                    span.set_attribute("triggers.exception_type", kind)
                    span.add_event("exception", {"exception.type": kind})
                    span.set_status(StatusCode.ERROR, kind)
        _end(token, error)

    def cascade_begin(self, session: str, transition: Transition) -> Any:
        for effect in transition.effects:
            if type(effect) is TriggerFired:
                name = f"triggers.fire {effect.trigger_name[:_NAME_LENGTH]}"
                token = self._start(name, SpanKind.INTERNAL, session)
                if token is not None:
                    token[0].set_attributes(
                        {
                            "triggers.trigger": effect.trigger_name,
                            "triggers.cascade": True,
                            "triggers.scheduled": len(effect.scheduled),
                        }
                    )
                return token
        return None

    def cascade_end(self, token: Any, error: BaseException | None) -> None:
        _end(token, error)

    def inject(self, carrier: MutableMapping[str, str]) -> None:
        _propagator.inject(carrier)

    def attach(self, carrier: Mapping[str, str]) -> Any:
        if trace.get_current_span().get_span_context().is_valid:
            return None  # a span is current already (OpenTelemetry's Celery instrumentation)
        found = _propagator.extract(carrier)
        if not trace.get_current_span(found).get_span_context().is_valid:
            return None
        return context.attach(found)

    def detach(self, token: Any) -> None:
        if token is not None:
            context.detach(token)
