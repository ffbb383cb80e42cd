"""Issue 25 end to end: one trace from a fire through a real prefork worker and back.

The test process traces into the SDK's in-memory exporter; the worker (prefork,
Redis broker, PostgreSQL storage) traces into a JSON-lines file
(``trace_worker_app``) and serves its metrics (multiprocess mode) through the
``triggers_metrics_port`` bootstep.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("prometheus_client")


from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from processes import BROKERS, RUN_ID
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sessions import open_test_manager
from trace_worker_app import as_record, read_spans
from tracing_support import PreforkWorker, follow_chain, wait_for, whole_trace
from worker_app import make_app

from triggers_core import Status
from triggers_core.runtime import observe
from triggers_core.testing.sample_tasks import (
    DevNullTask,
    FailingTask,
    PassThruTask,
    SelfRetryingTask,
    SelfSkippingTask,
)

pytestmark = [pytest.mark.service, pytest.mark.slow]

QUEUE = f"tc-{RUN_ID}-observe"
CONFIG = {
    "t_obsA": {"after": ["go"], "run": PassThruTask.name},
    "t_obsB": {"after": ["t_obsA"], "run": DevNullTask.name},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url() -> str:
    from services import require_service

    label, host, port, url = BROKERS["redis"]
    require_service(label, host, port)
    return url


@pytest.fixture(scope="module")
def traced(
    redis_url: str,
    storages: dict[str, str],
    log_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("observe")
    (work / "metrics").mkdir()
    spans_file = work / "spans.jsonl"
    port = _free_port()
    env = {
        "TRIGGERS_TEST_BROKER": redis_url,
        "TRIGGERS_TEST_QUEUE": QUEUE,
        "TRIGGERS_TEST_STORAGES": json.dumps(storages),
        "TRIGGERS_TEST_CONF": json.dumps({"triggers_metrics_port": port}),
        "TRIGGERS_TEST_SPANS": str(spans_file),
        "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
        "TRIGGERS_METRICS": "",
        "TRIGGERS_TRACING": "",
    }
    worker = PreforkWorker(f"observe-{RUN_ID}", QUEUE, env, log_dir)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observe.configure(tracer_provider=provider)
    sender = make_app(redis_url, QUEUE, storages)
    try:
        worker.wait_ready()
        yield {
            "sender": sender,
            "exporter": exporter,
            "spans_file": str(spans_file),
            "port": port,
            "worker": worker,
        }
    finally:
        observe.configure()
        provider.shutdown()
        sender.close()
        worker.stop()


def test_one_fire_is_one_trace_across_the_worker(traced: dict[str, Any]) -> None:
    manager = open_test_manager(traced["sender"], "observe")
    manager.update_configuration(CONFIG)
    traced["exporter"].clear()
    manager.fire("go", {"n": 1})
    wait_for(
        lambda: (
            manager.storage["t_obsB#0"].status is Status.FINISHED
            if "t_obsB#0" in manager.storage.instances
            else False
        ),
        "t_obsB#0 to finish",
    )
    assert manager.storage["t_obsA#0"].status is Status.FINISHED
    here = [as_record(span) for span in traced["exporter"].get_finished_spans()]
    there = wait_for(
        lambda: (
            [
                s
                for s in read_spans(traced["spans_file"])
                if s["attributes"].get("triggers.instance") == "t_obsB#0"
                and s["name"] == "triggers.run t_obsB"
            ]
            and read_spans(traced["spans_file"])
        ),
        "the worker's spans",
        timeout=15,
    )
    spans = here + there
    chain = follow_chain(
        spans,
        [
            "triggers.fire go",
            "triggers.dispatch t_obsA",
            "triggers.run t_obsA",
            "triggers.fire t_obsA",
            "triggers.dispatch t_obsB",
            "triggers.run t_obsB",
        ],
    )
    fire, dispatch_a, run_a, cascade, dispatch_b, run_b = chain
    assert fire in here
    trace = whole_trace(spans, fire)  # every span's parent is there too
    # The fire and its dispatch ran here; the runs and the cascade in a prefork child.
    worker_pids = {run_a["pid"], cascade["pid"], run_b["pid"]}
    assert fire["pid"] not in worker_pids
    assert dispatch_a["pid"] == fire["pid"]
    assert dispatch_b["pid"] in worker_pids
    assert run_a["attributes"]["triggers.status"] == "finished"
    assert run_b["attributes"]["triggers.instance"] == "t_obsB#0"
    # Every span the worker made for this session belongs to the fire's trace.
    session_spans = [
        s for s in there if s["attributes"].get("triggers.instance", "").startswith("t_obs")
    ]
    assert {s["trace"] for s in session_spans} == {fire["trace"]}
    storage_spans = [s for s in trace if s["name"].startswith("triggers.storage.")]
    assert {s["attributes"]["triggers.backend"] for s in storage_spans} == {"sqlalchemy"}

    # The worker's metrics, added up over its processes by the bootstep's server.
    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{traced['port']}/metrics", timeout=5) as r:
            return str(r.read().decode())

    text = wait_for(lambda: 'task="t_obsB"' in scrape() and scrape(), "the worker's metrics")
    assert 'triggers_instances_total{status="finished",task="t_obsA"} 1.0' in text
    assert 'triggers_instances_total{status="finished",task="t_obsB"} 1.0' in text
    assert 'triggers_instances_total{status="scheduled",task="t_obsB"} 1.0' in text
    assert 'triggers_fires_total{trigger="t_obsA"} 1.0' in text
    assert 'triggers_task_duration_seconds_count{status="finished",task="t_obsA"} 1.0' in text
    assert 'triggers_schedule_to_start_seconds_count{task="t_obsB"} 1.0' in text


WORKFLOW = {
    "t_wfFail": {"after": ["start"], "run": FailingTask.name},
    "t_wfRetry": {
        "after": ["start"],
        "run": SelfRetryingTask.name,
        "withParams": {"retries": {"max": 2}},
    },
    "t_wfSkip": {"after": ["start"], "run": SelfSkippingTask.name},
    "t_wfOk": {"after": ["start"], "run": PassThruTask.name},
}


def _instances_total(text: str) -> dict[tuple[str, str], float]:
    """``triggers_instances_total`` by (task, status) from an exposition."""
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "triggers_instances_total":
                key = (sample.labels["task"], sample.labels["status"])
                found[key] = found.get(key, 0.0) + sample.value
    return found


def test_counters_of_both_processes_match_the_status_histories(traced: dict[str, Any]) -> None:
    """Failure, retry, skip and replay on the worker; the sum of both processes' counts."""
    manager = open_test_manager(traced["sender"], "counters")
    manager.update_configuration(WORKFLOW)
    before = _instances_total(generate_latest(REGISTRY).decode())

    def settled() -> bool:
        instances = manager.storage.instances.values()
        return bool(instances) and all(
            i.status not in (Status.SCHEDULED, Status.RUNNING, Status.UNSTARTED) for i in instances
        )

    manager.fire("start")
    wait_for(lambda: settled() and "t_wfRetry#2" in manager.storage.instances, "the first runs")
    manager.replay_failed_instance("t_wfFail#0")
    wait_for(lambda: settled() and "t_wfFail#1" in manager.storage.instances, "the replay")
    manager.skip_failed_instance("t_wfFail#1")
    instances = list(manager.storage.instances.values())
    assert {i.name: i.status.value for i in instances} == {
        "t_wfFail#0": "replayed",
        "t_wfFail#1": "skipped",
        "t_wfRetry#0": "replayed",
        "t_wfRetry#1": "replayed",
        "t_wfRetry#2": "finished",
        "t_wfSkip#0": "skipped",
        "t_wfOk#0": "finished",
    }
    expected: dict[tuple[str, str], float] = {}
    for instance in instances:
        for status in instance.metadata["timestamps"]:
            key = (instance.task_name, status)
            expected[key] = expected.get(key, 0.0) + 1.0

    def counted() -> dict[tuple[str, str], float]:
        after = _instances_total(generate_latest(REGISTRY).decode())
        here = {k: v - before.get(k, 0.0) for k, v in after.items() if k[0].startswith("t_wf")}
        url = f"http://127.0.0.1:{traced['port']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            there = _instances_total(response.read().decode())
        total: dict[tuple[str, str], float] = {}
        for part in (here, there):
            for key, value in part.items():
                if key[0].startswith("t_wf") and value:
                    total[key] = total.get(key, 0.0) + value
        return total

    # The worker's last commit may still be on its way to its metrics file.
    wait_for(lambda: counted() == expected, "the counts to match", timeout=10)
    assert counted() == expected
    assert expected[("t_wfFail", "failed")] == 2.0
    assert expected[("t_wfRetry", "replayed")] == 2.0


@pytest.fixture(scope="module")
def instrumented(
    redis_url: str,
    storages: dict[str, str],
    log_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """Both sides instrumented by opentelemetry-instrumentation-celery as well."""
    celery_instrumentation = pytest.importorskip("opentelemetry.instrumentation.celery")
    queue = f"{QUEUE}-instrumented"
    spans_file = tmp_path_factory.mktemp("instrumented") / "spans.jsonl"
    env = {
        "TRIGGERS_TEST_BROKER": redis_url,
        "TRIGGERS_TEST_QUEUE": queue,
        "TRIGGERS_TEST_STORAGES": json.dumps(storages),
        "TRIGGERS_TEST_SPANS": str(spans_file),
        "TRIGGERS_TEST_OTEL_CELERY": "1",
        "TRIGGERS_METRICS": "off",
        "TRIGGERS_TRACING": "",
    }
    worker = PreforkWorker(f"instrumented-{RUN_ID}", queue, env, log_dir)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observe.configure(tracer_provider=provider, metrics=False)
    instrumentor = celery_instrumentation.CeleryInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    sender = make_app(redis_url, queue, storages)
    try:
        worker.wait_ready()
        yield {"sender": sender, "exporter": exporter, "spans_file": str(spans_file)}
    finally:
        instrumentor.uninstrument()
        observe.configure()
        provider.shutdown()
        sender.close()
        worker.stop()


def test_with_opentelemetry_celery_instrumentation_the_context_travels_once(
    instrumented: dict[str, Any],
) -> None:
    manager = open_test_manager(instrumented["sender"], "instrumented")
    manager.update_configuration(CONFIG)
    instrumented["exporter"].clear()
    manager.fire("go")
    wait_for(
        lambda: (
            "t_obsB#0" in manager.storage.instances
            and manager.storage["t_obsB#0"].status is Status.FINISHED
        ),
        "t_obsB#0 to finish",
    )
    here = [as_record(span) for span in instrumented["exporter"].get_finished_spans()]
    there = wait_for(
        lambda: (
            any(s["name"] == "triggers.run t_obsB" for s in read_spans(instrumented["spans_file"]))
            and read_spans(instrumented["spans_file"])
        ),
        "the worker's spans",
        timeout=15,
    )
    spans = here + there
    by_id = {s["span"]: s for s in spans}
    (fire,) = [s for s in here if s["name"] == "triggers.fire go"]
    # The worker's sweeper may run what other tests left in the shared store (another
    # session, its own trace): the traces of this session's spans are the ones that count.
    ours = observe.session_attribute(manager.uid)
    assert ours is not None
    traces = {s["trace"] for s in spans if s["attributes"].get("triggers.session") == ours}
    assert traces == {fire["trace"]}

    def ancestry(span: dict[str, Any]) -> list[str]:
        names = []
        while span["parent"] is not None:
            span = by_id[span["parent"]]
            names.append(span["name"])
        return names

    (run_b,) = [s for s in there if s["name"] == "triggers.run t_obsB"]
    task = PassThruTask.name
    assert ancestry(run_b) == [
        f"run/{DevNullTask.name}",
        f"apply_async/{DevNullTask.name}",
        "triggers.dispatch t_obsB",
        "triggers.fire t_obsA",
        "triggers.run t_obsA",
        f"run/{task}",
        f"apply_async/{task}",
        "triggers.dispatch t_obsA",
        "triggers.fire go",
    ]
