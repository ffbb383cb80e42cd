"""Metrics and traces of a fire that commits with the caller's transaction (docs/transactions.md).

Metrics count such a fire once the caller's transaction commits, never for a
rollback; the fire has its ``triggers.fire`` span (when it is written), and the
dispatch after the commit is a span of that fire's trace. On SQLite (a file):
what is observed does not depend on the database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")
pytest.importorskip("opentelemetry.sdk")

import sqlalchemy as sa
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session

from triggers_backends.sqlalchemy import SQLAlchemyStorage, create_schema, transaction
from triggers_core import TriggerManager
from triggers_core.runtime import metrics, observe
from triggers_core.testing.storage_contract import RecordingRunner

TRIGGER = f"ordered{uuid.uuid4().hex[:8]}"  # a label of its own in the process's metrics
CONFIG = {"t_order": {"after": [TRIGGER], "andEvery": TRIGGER, "run": "contract_task"}}


def sample(name: str, **labels: str) -> float:
    for family in REGISTRY.collect():
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


def fires() -> float:
    return sample("triggers_fires_total", trigger=TRIGGER)


def fire_durations() -> float:
    return sample("triggers_fire_duration_seconds_count", backend="sqlalchemy")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observe.configure(
        tracer_provider=provider, metrics=False, observers=[metrics.MetricsObserver()]
    )
    try:
        yield exporter
    finally:
        observe.configure()
        provider.shutdown()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[sa.Engine, TriggerManager, RecordingRunner]]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    create_schema(engine)
    rec = RecordingRunner()
    storage = SQLAlchemyStorage(f"obs-{uuid.uuid4().hex}", engine)
    manager = TriggerManager(storage, runners={"rec": rec}, default_runner="rec")
    manager.update_configuration(CONFIG)
    yield engine, manager, rec
    engine.dispose()


def test_metrics_count_a_fire_once_its_transaction_commits(
    spans: InMemorySpanExporter, app: tuple[sa.Engine, TriggerManager, RecordingRunner]
) -> None:
    engine, manager, rec = app
    fired, timed = fires(), fire_durations()
    with Session(engine) as session:
        manager.fire(TRIGGER, {"order": 1}, session=session)
        assert (fires(), fire_durations()) == (fired, timed)  # written, not committed
        session.commit()
    assert (fires(), fire_durations()) == (fired + 1, timed + 1)
    assert rec.dispatched == ["t_order#0"]


def test_metrics_count_nothing_for_a_rolled_back_fire(
    spans: InMemorySpanExporter, app: tuple[sa.Engine, TriggerManager, RecordingRunner]
) -> None:
    engine, manager, rec = app
    fired, timed = fires(), fire_durations()
    with Session(engine) as session:
        manager.fire(TRIGGER, {"order": 1}, session=session)
        session.rollback()

    def rolled_back() -> None:
        with transaction(engine) as tx:
            manager.fire(TRIGGER, {"order": 2}, session=tx)
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        rolled_back()
    assert (fires(), fire_durations()) == (fired, timed)
    assert rec.dispatched == []


def test_the_fire_has_its_span_and_the_dispatch_after_the_commit_is_in_its_trace(
    spans: InMemorySpanExporter, app: tuple[sa.Engine, TriggerManager, RecordingRunner]
) -> None:
    engine, manager, _ = app
    spans.clear()
    with Session(engine) as session:
        manager.fire(TRIGGER, {"order": 1}, session=session)
        names = [s.name for s in spans.get_finished_spans()]
        assert f"triggers.fire {TRIGGER}" in names
        assert not [n for n in names if n.startswith("triggers.dispatch")]
        session.commit()
    finished = spans.get_finished_spans()
    (fire,) = [s for s in finished if s.name == f"triggers.fire {TRIGGER}"]
    (dispatch,) = [s for s in finished if s.name == "triggers.dispatch t_order"]
    assert fire.attributes is not None
    assert fire.attributes["triggers.scheduled"] == 1
    assert dispatch.parent is not None
    assert dispatch.parent.span_id == fire.context.span_id
    assert dispatch.context.trace_id == fire.context.trace_id
    stores = [s for s in finished if s.name.startswith("triggers.storage")]
    assert any(s.parent is not None and s.parent.span_id == fire.context.span_id for s in stores)


def test_a_rolled_back_fire_has_its_span_and_no_dispatch_span(
    spans: InMemorySpanExporter, app: tuple[sa.Engine, TriggerManager, RecordingRunner]
) -> None:
    engine, manager, _ = app
    spans.clear()
    with Session(engine) as session:
        manager.fire(TRIGGER, {"order": 1}, session=session)
        session.rollback()
    names = [s.name for s in spans.get_finished_spans()]
    assert f"triggers.fire {TRIGGER}" in names
    assert not [n for n in names if n.startswith("triggers.dispatch")]
