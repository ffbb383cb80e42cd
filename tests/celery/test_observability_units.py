"""Issue 25: the trace header of trigger task messages, checked like the untrusted input it is."""

from __future__ import annotations

import itertools
import types
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")


from celery import Celery
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from worker_app import CeleryTestManager, make_app

from triggers_celery import CeleryTaskRunner
from triggers_celery.observability import (
    TRACE_HEADER,
    MetricsServer,
    message_headers,
    trace_carrier,
)
from triggers_core import MemoryStorage, MemoryStore
from triggers_core.engine.effects import ScheduleInstance
from triggers_core.runtime import observe

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    found = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(found))
    observe.configure(tracer_provider=provider, metrics=False)
    try:
        yield found
    finally:
        observe.configure()
        provider.shutdown()


def request(**fields: Any) -> Any:
    return types.SimpleNamespace(**fields)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {TRACE_HEADER: "00-abc"},
        {TRACE_HEADER: ["traceparent", PARENT]},
        {TRACE_HEADER: {"traceparent": 12}},
        {TRACE_HEADER: {"traceparent": "x" * 129}},
        {TRACE_HEADER: {"traceparent": "é" * 55}},
        {TRACE_HEADER: {"tracestate": "a=b"}},
        {"headers": {TRACE_HEADER: None}},
        {"traceparent": {"nested": PARENT}},
    ],
)
def test_a_malformed_or_missing_header_is_ignored(fields: dict[str, Any]) -> None:
    assert trace_carrier(request(**fields)) is None


def test_a_well_formed_header_keeps_only_the_known_keys() -> None:
    raw = {"traceparent": PARENT, "tracestate": "k=v", "baggage": "user=alice"}
    assert trace_carrier(request(**{TRACE_HEADER: raw})) == {
        "traceparent": PARENT,
        "tracestate": "k=v",
    }
    assert trace_carrier(request(headers={TRACE_HEADER: raw})) == {
        "traceparent": PARENT,
        "tracestate": "k=v",
    }
    # What OpenTelemetry's own Celery instrumentation sends: a bare traceparent.
    assert trace_carrier(request(traceparent=PARENT)) == {"traceparent": PARENT}


def test_a_garbage_traceparent_starts_no_trace(exporter: InMemorySpanExporter) -> None:
    watcher = observe.current()
    assert watcher is not None
    assert watcher.attach({"traceparent": "00-zz-zz-01"}) is None


def test_headers_carry_the_current_context_while_tracing(exporter: InMemorySpanExporter) -> None:
    assert message_headers() is None  # no span is current
    watcher = observe.current()
    assert watcher is not None
    effect = ScheduleInstance(
        instance_name="t_x#0",
        task_name="t_x",
        run="triggers.DevNullTask",
        using="celery",
        trigger_kwargs={},
    )
    token = watcher.dispatch_begin("session", effect)
    try:
        headers = message_headers()
    finally:
        watcher.dispatch_end(token, None)
    (span,) = exporter.get_finished_spans()
    assert headers is not None
    assert set(headers) == {TRACE_HEADER}
    assert headers[TRACE_HEADER]["traceparent"].split("-")[1:3] == [
        format(span.context.trace_id, "032x"),
        format(span.context.span_id, "016x"),
    ]
    runner = CeleryTaskRunner(make_app("memory://", "q"))
    token = watcher.dispatch_begin("session", effect)
    try:
        assert runner.publish_options(effect)["headers"] == message_headers()
    finally:
        watcher.dispatch_end(token, None)


def test_no_headers_without_an_observer() -> None:
    observe.configure(metrics=False, tracing=False)
    try:
        assert message_headers() is None
    finally:
        observe.configure()


def test_eager_runs_continue_the_trace(exporter: InMemorySpanExporter) -> None:
    app: Celery = make_app("memory://", f"eager-{uuid.uuid4().hex}", task_always_eager=True)
    try:
        manager = CeleryTestManager(
            MemoryStorage(f"eager-{uuid.uuid4().hex}", MemoryStore()),
            runners={"celery": CeleryTaskRunner(app)},
        )
        manager.update_configuration(
            {
                "t_a": {"after": ["go"], "run": "triggers.PassThruTask"},
                "t_b": {"after": ["t_a"], "run": "triggers.DevNullTask"},
            }
        )
        exporter.clear()
        manager.fire("go")
    finally:
        app.close()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    chain = [
        "triggers.fire go",
        "triggers.dispatch t_a",
        "triggers.run t_a",
        "triggers.fire t_a",
        "triggers.dispatch t_b",
        "triggers.run t_b",
    ]
    for parent, child in itertools.pairwise(chain):
        found = spans[child].parent
        assert found is not None
        assert found.span_id == spans[parent].context.span_id, (parent, child)


def test_the_metrics_bootstep_is_off_unless_a_port_is_set() -> None:
    app = make_app("memory://", "q")
    worker = types.SimpleNamespace(app=app)
    step = MetricsServer(worker)
    assert step.include_if(worker) is False
    app.conf.triggers_metrics_port = "9000"
    assert step.include_if(worker) is True
    with pytest.raises(ValueError, match="triggers_metrics_port"):
        step.start(worker)
    assert MetricsServer in app.steps["worker"]
