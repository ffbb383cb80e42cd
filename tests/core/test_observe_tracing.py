"""Issue 25: OpenTelemetry spans of fires, storage round trips, dispatches and runs.

Spans go to the SDK's in-memory exporter through a tracer provider given to
``observe.configure`` (the global provider is left alone).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")


from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import triggers_core.testing.sample_tasks  # noqa: F401 - registers the sample tasks
from triggers_core import ConflictError, Status, ThreadingTaskRunner, TriggerManager
from triggers_core.runtime import observe
from triggers_core.runtime.lifecycle import LIFECYCLE_LOGGER
from triggers_core.runtime.memory import MemoryStorage

CONFIG = {
    "t_a": {"after": ["go"], "run": "triggers.PassThruTask"},
    "t_b": {"after": ["t_a"], "run": "triggers.DevNullTask"},
    "t_bad": {"after": ["bad"], "run": "triggers.FailingTask"},
}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observe.configure(tracer_provider=provider, metrics=False)
    try:
        yield exporter
    finally:
        observe.configure()
        provider.shutdown()


def session(storage: MemoryStorage | None = None) -> tuple[TriggerManager, ThreadingTaskRunner]:
    runner = ThreadingTaskRunner()
    manager = TriggerManager(
        storage or MemoryStorage(f"trace-{uuid.uuid4().hex}"), runners={"threading": runner}
    )
    manager.update_configuration(CONFIG)
    return manager, runner


def by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in finished:
        found.setdefault(span.name, []).append(span)
    return found


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_a_fire_and_its_cascade_on_threads_make_one_trace(spans: InMemorySpanExporter) -> None:
    manager, runner = session()
    spans.clear()
    manager.fire("go", {"x": 1})
    runner.join_all()
    found = by_name(spans.get_finished_spans())
    (fire,) = found["triggers.fire go"]
    (dispatch_a,) = found["triggers.dispatch t_a"]
    (run_a,) = found["triggers.run t_a"]
    (cascade,) = found["triggers.fire t_a"]
    (dispatch_b,) = found["triggers.dispatch t_b"]
    (run_b,) = found["triggers.run t_b"]
    chain = [fire, dispatch_a, run_a, cascade, dispatch_b, run_b]
    assert fire.parent is None
    for parent, child in itertools.pairwise(chain):
        assert parent_of(child) == parent.context.span_id, (parent.name, child.name)
    assert {s.context.trace_id for s in spans.get_finished_spans()} == {fire.context.trace_id}

    uid_hash = hashlib.sha256(manager.uid.encode()).hexdigest()[:16]
    assert fire.attributes is not None
    assert dict(fire.attributes) == {
        "triggers.session": uid_hash,
        "triggers.trigger": "go",
        "triggers.backend": "memory",
        "triggers.scheduled": 1,
        "triggers.duplicate": False,
    }
    assert run_a.attributes is not None
    assert run_a.attributes["triggers.instance"] == "t_a#0"
    assert run_a.attributes["triggers.status"] == "finished"
    assert run_a.attributes["triggers.attempt"] == 0
    assert cascade.attributes is not None
    assert cascade.attributes["triggers.cascade"] is True
    # The storage round trips of the fire are its children.
    loads = [s for s in found["triggers.storage.load"] if parent_of(s) == fire.context.span_id]
    commits = [s for s in found["triggers.storage.commit"] if parent_of(s) == fire.context.span_id]
    assert len(loads) == 1
    assert len(commits) == 1
    assert commits[0].attributes is not None
    assert dict(commits[0].attributes) == {"triggers.backend": "memory", "triggers.attempt": 0}
    # A run alone in its session reads once (the start) and writes twice (the start and
    # the outcome, computed on what the start left): no load span for a load not made.
    under_run = [s for s in spans.get_finished_spans() if parent_of(s) == run_a.context.span_id]
    assert [s.name for s in under_run].count("triggers.storage.load") == 1
    assert [s.name for s in under_run].count("triggers.storage.commit") == 2


def test_a_failed_run_is_an_error_span_with_its_exception_type(
    spans: InMemorySpanExporter,
) -> None:
    manager, runner = session()
    manager.fire("bad")
    runner.join_all()
    (run,) = by_name(spans.get_finished_spans())["triggers.run t_bad"]
    assert run.status.status_code.name == "ERROR"
    assert run.attributes is not None
    assert run.attributes["triggers.exception_type"] == "builtins.RuntimeError"
    assert [e.attributes for e in run.events if e.name == "exception"] == [
        {"exception.type": "builtins.RuntimeError"}
    ]


def test_an_exception_escaping_a_fire_is_recorded(spans: InMemorySpanExporter) -> None:
    manager, _ = session()
    with pytest.raises(ValueError, match="trigger_kwargs"):
        manager.fire("go", {"x": float("nan")})
    (fire,) = by_name(spans.get_finished_spans())["triggers.fire go"]
    assert fire.status.status_code.name == "ERROR"
    assert [e.name for e in fire.events] == ["exception"]


class ConflictOnce(MemoryStorage):
    """Loses its first compare-and-swap, as if another process had written first."""

    lost = False

    def compare_and_swap(self, *args: Any, **kwargs: Any) -> Any:
        if not self.lost:
            self.lost = True
            raise ConflictError("another writer won", backend="memory", session=self.uid)
        return super().compare_and_swap(*args, **kwargs)


def test_a_conflict_shows_as_a_retried_attempt(spans: InMemorySpanExporter) -> None:
    manager, _ = session()
    storage = ConflictOnce(manager.uid)
    manager = TriggerManager(storage, runners={"threading": ThreadingTaskRunner()})
    spans.clear()
    manager.update_configuration(CONFIG)
    commits = by_name(spans.get_finished_spans())["triggers.storage.commit"]
    attributes = [dict(s.attributes or {}) for s in commits]
    assert attributes == [
        {"triggers.backend": "memory", "triggers.attempt": 0, "triggers.conflict": True},
        {"triggers.backend": "memory", "triggers.attempt": 1},
    ]


def test_the_session_attribute_follows_the_setting(spans: InMemorySpanExporter) -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for setting, expected in (("uid", "uid"), ("none", None)):
        observe.configure(tracer_provider=provider, metrics=False, session_attribute=setting)
        manager, _ = session()
        exporter.clear()
        manager.fire("nothing-here")
        (fire,) = by_name(exporter.get_finished_spans())["triggers.fire nothing-here"]
        value = (fire.attributes or {}).get("triggers.session")
        assert value == (manager.uid if expected == "uid" else None)
    with pytest.raises(ValueError, match="session_attribute"):
        observe.configure(session_attribute="plain")


def test_lifecycle_records_carry_the_trace_and_span_ids(
    spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    manager, runner = session()
    with caplog.at_level(logging.INFO, logger=LIFECYCLE_LOGGER):
        manager.fire("go")
        runner.join_all()
    found = by_name(spans.get_finished_spans())
    (fire,) = found["triggers.fire go"]
    (run,) = found["triggers.run t_a"]
    records = [r for r in caplog.records if r.name == LIFECYCLE_LOGGER]
    fired = next(r for r in records if getattr(r, "trigger", None) == "go")
    assert fired.otelTraceID == format(fire.context.trace_id, "032x")
    assert fired.otelSpanID == format(fire.context.span_id, "016x")
    finished = next(
        r
        for r in records
        if getattr(r, "status", None) == Status.FINISHED.value
        and getattr(r, "instance", None) == "t_a#0"
    )
    assert finished.otelSpanID == format(run.context.span_id, "016x")


def test_no_ids_without_a_span(caplog: pytest.LogCaptureFixture) -> None:
    observe.configure(metrics=False)  # tracing on, but no SDK: nothing is current
    try:
        manager, runner = session()
        with caplog.at_level(logging.INFO, logger=LIFECYCLE_LOGGER):
            manager.fire("go")
            runner.join_all()
    finally:
        observe.configure()
    records = [r for r in caplog.records if r.name == LIFECYCLE_LOGGER]
    assert records
    assert not any(hasattr(r, "otelTraceID") for r in records)
