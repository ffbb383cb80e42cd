"""Issue 25: the Grafana dashboard is valid and complete; the overhead benchmark runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
#: The metrics (as exposed) the panels must cover, and the panels an operator needs.
METRICS = {
    "triggers_fires_total",
    "triggers_instances_total",
    "triggers_storage_conflicts_total",
    "triggers_recovered_total",
    "triggers_instances_lost",
    "triggers_timers_overdue",
    "triggers_fire_duration_seconds_bucket",
    "triggers_task_duration_seconds_bucket",
    "triggers_schedule_to_start_seconds_bucket",
}
PANELS = ("fire rate", "status", "lost", "conflicts", "fire duration", "task duration", "start")


def test_the_dashboard_is_valid_json_with_the_panels_an_operator_needs() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = dashboard["panels"]
    titles = " | ".join(p["title"].lower() for p in panels)
    for wanted in PANELS:
        assert wanted in titles, (wanted, titles)
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = {name for expr in exprs for name in re.findall(r"triggers_[a-z_]+", expr)}
    assert used == METRICS
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
    # Never a per-session series: session uids are no labels.
    assert not any("session" in expr for expr in exprs)


def test_the_metrics_the_dashboard_uses_are_the_ones_exposed() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import REGISTRY

    from triggers_core.runtime import metrics

    metrics.metrics_observer()
    exposed = {sample.name for family in REGISTRY.collect() for sample in family.samples}
    exposed |= {f"{m.name}_bucket" for m in metrics.METRICS if m.buckets}
    exposed |= {f"{m.name}_total" for m in metrics.METRICS if not m.buckets}
    assert exposed >= METRICS


def test_the_overhead_benchmark_runs_and_reports_ratios() -> None:
    pytest.importorskip("prometheus_client")
    pytest.importorskip("opentelemetry.sdk")
    from benchmarks import observability

    samples = observability.measure(rounds=2, fires=5)
    report = observability.report(samples, 2, 5)
    assert set(samples) == set(observability.MODES)
    assert all(len(values) == 2 for values in samples.values())
    assert "| both |" in report
    assert "Target both <= 1.05 x off" in report
