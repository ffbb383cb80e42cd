"""The app of the observability test's workers (``celery -A trace_worker_app``).

``worker_app``'s app and tasks, plus tracing in every prefork child, set up
the way ``docs/observability.md`` tells applications to (the SDK's tracer
provider made global in Celery's ``worker_process_init``): spans go to a
test-only exporter that appends one JSON line per span to the file named by
``TRIGGERS_TEST_SPANS`` (``{pid}`` in it becomes the process id), which the
test process reads back. With ``TRIGGERS_TEST_OTEL_CELERY`` set,
OpenTelemetry's Celery instrumentation too.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from celery.signals import worker_process_init
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from worker_app import app

__all__ = ["JsonLinesExporter", "app", "read_spans"]


class JsonLinesExporter(SpanExporter):
    """Appends each finished span to a file as one JSON object per line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(as_record(span)) + "\n" for span in spans)
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing is held open."""


def as_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as JSON-ready data (times in nanoseconds since the epoch)."""
    context = span.get_span_context()
    return {
        "name": span.name,
        "trace": format(context.trace_id, "032x") if context else None,
        "span": format(context.span_id, "016x") if context else None,
        "parent": format(span.parent.span_id, "016x") if span.parent else None,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "kind": span.kind.name,
        "start": span.start_time,
        "end": span.end_time,
        "pid": os.getpid(),
    }


def read_spans(path: str) -> list[dict[str, Any]]:
    """The spans written so far to ``path``."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as found:
        return [json.loads(line) for line in found if line.strip()]


def _trace_to_file(**_: Any) -> None:
    path = os.environ.get("TRIGGERS_TEST_SPANS")
    if path:
        provider = TracerProvider()
        exporter = JsonLinesExporter(path.replace("{pid}", str(os.getpid())))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        if os.environ.get("TRIGGERS_TEST_OTEL_CELERY"):
            from opentelemetry.instrumentation.celery import CeleryInstrumentor

            CeleryInstrumentor().instrument(tracer_provider=provider)


worker_process_init.connect(_trace_to_file, weak=False)
