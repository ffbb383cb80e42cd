"""Make ``docs/images/trace-workflow.png``: one workflow's trace across processes.

Run it from the repository root (Redis on 127.0.0.1:6379, PostgreSQL on
127.0.0.1:5432 with database ``test`` and user ``postgres``, Debian's
``/usr/bin/chromium`` and the ``playwright``, ``opentelemetry-sdk`` and test
dependencies installed)::

    python docs/tools/trace_screenshot.py

What it does, with no tracing backend (no Jaeger, no Docker):

1. This process plays the web process: it sets up the OpenTelemetry SDK as
   ``docs/observability.md`` says (a ``TracerProvider`` made global), with an
   exporter that appends every finished span to a JSON-lines file.
2. It starts a real ``celery worker --pool=prefork --concurrency=2``
   (``tests/celery/trace_worker_app.py``: the same set-up in Celery's
   ``worker_process_init``, one file per pool process).
3. It fires ``orderPlaced`` on a new session stored in PostgreSQL tables of
   its own: ``t_charge`` retries itself once, then its cascade runs ``t_ship``.
4. It gathers the spans of that fire's trace from every file and checks the
   links (fire -> dispatch -> run -> retry's dispatch -> run -> cascade's fire
   -> dispatch -> run, and every span's parent present); a broken trace stops
   it with status 1 and no picture.
5. It writes the trace as a waterfall page and screenshots it with Playwright
   driving ``/usr/bin/chromium``.

``--html PATH`` and ``--png PATH`` choose where the page and the picture go
(default: a temporary page, ``docs/images/trace-workflow.png``); ``--json PATH``
writes the trace's spans; ``--no-png`` stops before the screenshot
(``tests/celery/test_trace_screenshot.py`` runs it so).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "celery"), str(ROOT / "tests"), str(ROOT)]
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from processes import RUN_ID  # noqa: E402
from trace_worker_app import JsonLinesExporter, read_spans  # noqa: E402
from tracing_support import (  # noqa: E402
    BrokenTrace,
    PreforkWorker,
    follow_chain,
    wait_for,
    whole_trace,
)
from worker_app import CeleryTestManager, Sleep, make_app  # noqa: E402

from triggers_backends.sqlalchemy import create_schema, drop_schema, shared_engine  # noqa: E402
from triggers_celery import CeleryTaskRunner, open_manager  # noqa: E402
from triggers_core import Status  # noqa: E402
from triggers_core.testing.sample_tasks import PassThruTask, SelfRetryingTask  # noqa: E402

BROKER = "redis://127.0.0.1:6379/0"
DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CHROMIUM = "/usr/bin/chromium"
#: The flags tests/web/test_browser.py starts Chromium with (no network, quiet).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CONFIG = {
    "t_charge": {
        "after": ["orderPlaced"],
        "run": SelfRetryingTask.name,
        "withParams": {"retries": {"max": 1}},
    },
    # celerytest.Sleep: routed to the ``.slow`` queue, where the shipping worker listens.
    "t_ship": {
        "after": ["t_charge"],
        "run": Sleep.name,
        "withParams": {"sleepRequested": {"seconds": 0.02}},
    },
}
#: One task for each worker.
WARM_UP = {
    "t_warmA": {"after": ["warmUp"], "run": PassThruTask.name},
    "t_warmB": {
        "after": ["warmUp"],
        "run": Sleep.name,
        "withParams": {"sleepRequested": {"seconds": 0}},
    },
}
#: The links the trace must have, from the root down.
CHAIN = [
    "triggers.fire orderPlaced",
    "triggers.dispatch t_charge",
    "triggers.run t_charge",  # t_charge#0 asks for a retry
    "triggers.dispatch t_charge",
    "triggers.run t_charge",  # t_charge#1 finishes
    "triggers.fire t_charge",  # its cascade
    "triggers.dispatch t_ship",
    "triggers.run t_ship",
]
#: Attributes shown on each row (without the ``triggers.`` prefix).
SHOWN = ("instance", "attempt", "status", "scheduled", "cascade", "exception_type")


def gather(work: Path) -> tuple[list[dict[str, Any]], str]:
    """Fire the workflow on a real prefork worker; every span written, and the session."""
    queue = f"trace-shot-{RUN_ID}"
    prefix = f"ts{RUN_ID}_"
    engine = shared_engine(DATABASE)
    create_schema(engine, prefix)
    storages = {"default": f"{DATABASE}?triggers_prefix={prefix}"}
    web_file = work / "web.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(str(web_file))))
    trace.set_tracer_provider(provider)  # as docs/observability.md says
    env = {
        "TRIGGERS_TEST_BROKER": BROKER,
        "TRIGGERS_TEST_QUEUE": queue,
        "TRIGGERS_TEST_STORAGES": json.dumps(storages),
        "TRIGGERS_METRICS": "off",
        "TRIGGERS_TRACING": "",
    }
    workers = [
        PreforkWorker(
            f"{name}-{RUN_ID}",
            listens,
            {**env, "TRIGGERS_TEST_SPANS": str(work / f"{name}-{{pid}}.jsonl")},
            work,
        )
        for name, listens in (("orders", queue), ("shipping", f"{queue}.slow"))
    ]
    sender = make_app(BROKER, queue, storages)
    try:
        for worker in workers:
            worker.wait_ready()
        # Warm up: both pool processes and this one connect to the broker and the
        # database once, so the picture shows steady-state latencies.
        warm_up = _session(sender, "warm-up")
        warm_up.update_configuration(WARM_UP)
        warm_up.fire("warmUp")
        wait_for(lambda: _finished(warm_up, *WARM_UP), "the warm-up", timeout=60)
        manager = _session(sender, "order")
        manager.update_configuration(CONFIG)
        manager.fire("orderPlaced", {"total": 42})
        wait_for(lambda: _finished(manager, "t_ship"), "t_ship#0 to finish", timeout=60)

        def all_spans() -> list[dict[str, Any]]:
            return [
                {**span, "process": path.stem.split("-")[0]}  # web, orders or shipping
                for path in sorted(work.glob("*.jsonl"))
                for span in read_spans(str(path))
            ]

        # A run's span ends after everything it caused in its process.
        wait_for(
            lambda: any(s["name"] == "triggers.run t_ship" for s in all_spans()),
            "the worker's spans",
            timeout=15,
        )
        return all_spans(), manager.uid
    finally:
        provider.shutdown()
        sender.close()
        for worker in workers:
            worker.stop()
        drop_schema(engine, prefix)


def _session(sender: Any, label: str) -> CeleryTestManager:
    manager = open_manager(
        f"{label}-{uuid.uuid4().hex[:8]}",
        "default",
        app=sender,
        manager=CeleryTestManager.registry_key,
        runners={"celery": CeleryTaskRunner(sender)},
    )
    assert isinstance(manager, CeleryTestManager)
    return manager


def _finished(manager: CeleryTestManager, *tasks: str) -> bool:
    instances = manager.storage.instances
    return all(
        f"{task}#0" in instances and instances[f"{task}#0"].status is Status.FINISHED
        for task in tasks
    )


def waterfall(spans: Sequence[dict[str, Any]]) -> str:
    """The trace as an HTML page: one row per span, a bar at its offset."""
    by_id = {s["span"]: s for s in spans}

    def depth(span: dict[str, Any]) -> int:
        return 0 if span["parent"] is None else 1 + depth(by_id[span["parent"]])

    ordered: list[dict[str, Any]] = []

    def walk(parent: str | None) -> None:
        for span in sorted((s for s in spans if s["parent"] == parent), key=lambda s: s["start"]):
            ordered.append(span)
            walk(span["span"])

    walk(None)
    start = min(s["start"] for s in spans)
    total = max(s["end"] for s in spans) - start
    processes = sorted({(s["process"] != "web", s["process"], s["pid"]) for s in spans})
    palette = ["#2f6fbf", "#2e9a5d", "#c77c11", "#8a4fbf", "#b03a6a", "#555555"]
    colours = {pid: palette[min(n, len(palette) - 1)] for n, (_, _, pid) in enumerate(processes)}
    sessions = sorted({str(s["attributes"].get("triggers.session")) for s in spans} - {"None"})
    rows = []
    for span in ordered:
        offset = (span["start"] - start) / total * 100
        width = max((span["end"] - span["start"]) / total * 100, 0.3)
        process = span["process"] if span["process"] == "web" else f"{span['process']} worker"
        attributes = " ".join(
            f"<b>{html.escape(key)}</b>={html.escape(str(span['attributes'][f'triggers.{key}']))}"
            for key in SHOWN
            if f"triggers.{key}" in span["attributes"]
        )
        error = " error" if span["status"] == "ERROR" else ""
        rows.append(
            "<tr>"
            f'<td class="name" style="padding-left:{8 + 16 * depth(span)}px">'
            f"{html.escape(span['name'])}</td>"
            f'<td class="proc"><span class="dot" style="background:{colours[span["pid"]]}">'
            f"</span>{html.escape(process)} {span['pid']}</td>"
            f'<td class="num">{(span["start"] - start) / 1e6:.1f}</td>'
            f'<td class="num">{(span["end"] - span["start"]) / 1e6:.1f}</td>'
            f'<td class="lane"><div class="bar{error}" style="left:{offset:.2f}%;'
            f'width:{width:.2f}%;background:{colours[span["pid"]]}"></div></td>'
            f'<td class="attrs">{attributes}</td>'
            "</tr>"
        )
    title = (
        f"trace {html.escape(spans[0]['trace'])} · {len(spans)} spans · "
        f"{len(processes)} processes · "
        f"{total / 1e6:.0f} ms · triggers.session={html.escape(', '.join(sessions))}"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title><style>
body {{ font: 13px/1.35 system-ui, sans-serif; margin: 16px; color: #1d2330; }}
h1 {{ font-size: 15px; margin: 0 0 10px; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ white-space: nowrap; }}
th {{ text-align: left; font-weight: 600; border-bottom: 2px solid #ccd; padding: 4px 8px; }}
td {{ border-bottom: 1px solid #e6e8ef; padding: 3px 8px; white-space: nowrap; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.lane {{ position: relative; width: 34%; min-width: 300px; }}
.bar {{ position: absolute; top: 5px; height: 12px; border-radius: 2px; }}
.bar.error {{ outline: 2px solid #d0312d; }}
.dot {{ display: inline-block; width: 9px; height: 9px; border-radius: 50%; margin-right: 5px; }}
td.attrs {{ color: #4a5063; font-size: 12px; }}
</style></head><body>
<h1>{title}</h1>
<table><thead><tr><th>span</th><th>process (pid)</th><th>start (ms)</th><th>took (ms)</th>
<th>timeline</th><th>attributes (triggers.…)</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""


def screenshot(page_path: Path, png: Path) -> None:
    """A full-page screenshot of ``page_path`` by Playwright driving Debian's Chromium."""
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 400})
            page.goto(page_path.as_uri())
            png.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, help="where to write the waterfall page")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "images" / "trace-workflow.png")
    parser.add_argument("--no-png", action="store_true", help="no screenshot")
    parser.add_argument("--json", type=Path, help="where to write the trace's spans")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRIGGERS_METRICS", "off")  # traces only
    with tempfile.TemporaryDirectory(prefix="trace-shot-") as directory:
        work = Path(directory)
        spans, uid = gather(work)
        try:
            chain = follow_chain(spans, CHAIN)
            spans = whole_trace(spans, chain[0])
        except BrokenTrace as broken:
            print(f"the trace is broken: {broken}", file=sys.stderr)
            return 1
        crossed = [span["process"] for span in chain]
        if crossed != [*["web"] * 2, *["orders"] * 5, "shipping"]:
            print(f"the chain ran in {crossed}: not web, orders, shipping", file=sys.stderr)
            return 1
        page = args.html or work / "trace.html"
        page.write_text(waterfall(spans), encoding="utf-8")
        if args.json:
            args.json.write_text(json.dumps(spans, indent=1), encoding="utf-8")
        if not args.no_png:
            screenshot(page, args.png)
    shown = "no screenshot" if args.no_png else args.png
    print(f"session {uid}: {len(spans)} spans in trace {chain[0]['trace']} -> {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
