"""``docs/tools/trace_screenshot.py`` (the trace picture of docs/observability.md)
without its screenshot: a fire in one process, runs on two real prefork workers.

The script runs as users would run it (its own process, the tracer provider set
up as the docs say); the test reads the trace it gathered back and follows its
parent links itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from processes import BROKERS, ROOT, python_env
from services import require_service
from tracing_support import follow_chain, whole_trace

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("playwright")

pytestmark = [pytest.mark.service, pytest.mark.slow]

SCRIPT = ROOT / "docs" / "tools" / "trace_screenshot.py"


def test_the_script_gathers_one_unbroken_trace_across_three_processes(tmp_path: Path) -> None:
    _label, host, port, _url = BROKERS["redis"]
    require_service("Redis", host, port)
    require_service("PostgreSQL", "127.0.0.1", 5432)
    page, spans_path = tmp_path / "trace.html", tmp_path / "trace.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--no-png", "--html", str(page), "--json", str(spans_path)],
        check=False,
        cwd=tmp_path,
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no screenshot" in done.stdout
    spans = json.loads(spans_path.read_text())
    chain = follow_chain(
        spans,
        [
            "triggers.fire orderPlaced",
            "triggers.dispatch t_charge",
            "triggers.run t_charge",
            "triggers.dispatch t_charge",
            "triggers.run t_charge",
            "triggers.fire t_charge",
            "triggers.dispatch t_ship",
            "triggers.run t_ship",
        ],
    )
    assert whole_trace(spans, chain[0]) == sorted(spans, key=lambda s: (s["start"], s["end"]))
    fire, _, first, retry, second, cascade, _, ship = chain
    assert [first["attributes"]["triggers.status"], second["attributes"]["triggers.status"]] == [
        "replayed",
        "finished",
    ]
    assert retry["attributes"]["triggers.instance"] == "t_charge#1"
    assert cascade["attributes"]["triggers.cascade"] is True
    # Three processes: this script (the web process) and a pool process of each worker.
    assert [fire["process"], first["process"], ship["process"]] == ["web", "orders", "shipping"]
    assert len({fire["pid"], first["pid"], ship["pid"]}) == 3
    html = page.read_text()
    assert html.count("<tr>") == len(spans) + 1  # the header and one row per span
    assert "orders worker" in html
    assert "shipping worker" in html


def test_the_waterfall_escapes_what_it_shows() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from trace_screenshot import waterfall
    finally:
        sys.path.remove(str(SCRIPT.parent))
    hostile = "<img src=x onerror=alert(1)>"
    span = {
        "name": f"triggers.fire {hostile}",
        "trace": "0" * 32,
        "span": "1" * 16,
        "parent": None,
        "attributes": {"triggers.session": hostile, "triggers.instance": hostile},
        "status": "ERROR",
        "pid": 7,
        "process": hostile,
        "start": 1_000,
        "end": 2_000_000,
    }
    page = waterfall([span])
    assert "<img" not in page
    assert page.count("&lt;img src=x onerror=alert(1)&gt;") >= 4
    assert 'class="bar error"' in page
