"""Issue 25: without the extras (or with them switched off) nothing of them is imported.

Each case runs a fire with a cascade in a fresh interpreter and lists the modules
of ``prometheus_client`` and ``opentelemetry`` it loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
for name in {blocked!r}:
    sys.modules[name] = None  # what an interpreter without the distribution sees
import triggers_core.testing.sample_tasks
if {sdk!r}:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    trace.set_tracer_provider(TracerProvider())
from triggers_core import TriggerManager
from triggers_core.runtime import observe
manager = TriggerManager("memory://", "imports")
manager.update_configuration({{
    "t_a": {{"after": ["go"], "run": "triggers.PassThruTask"}},
    "t_b": {{"after": ["t_a"], "run": "triggers.DevNullTask"}},
}})
manager.fire("go")
manager.get_runner().join_all()
assert manager.storage["t_b#0"].status.value == "finished"
loaded = sorted(
    name for name, module in sys.modules.items()
    if module is not None and name.split(".")[0] in ("prometheus_client", "opentelemetry")
)
print(json.dumps({{"loaded": loaded, "observer": type(observe.current()).__name__}}))
"""


def run(blocked: tuple[str, ...], sdk: bool = False, **env: str) -> dict[str, object]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(blocked=blocked, sdk=sdk)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_neither_extra_installed_imports_nothing_of_them() -> None:
    result = run(("prometheus_client", "opentelemetry"))
    assert result == {"loaded": [], "observer": "NoneType"}


def test_extras_switched_off_by_the_environment_import_nothing_of_them() -> None:
    result = run((), TRIGGERS_METRICS="off", TRIGGERS_TRACING="off")
    assert result == {"loaded": [], "observer": "NoneType"}


def test_installed_extras_are_used() -> None:
    pytest.importorskip("prometheus_client")
    pytest.importorskip("opentelemetry.sdk")
    result = run((), sdk=True, TRIGGERS_METRICS="", TRIGGERS_TRACING="")
    assert result["observer"] == "Composite"
    loaded = result["loaded"]
    assert isinstance(loaded, list)
    assert "prometheus_client" in loaded
    assert "opentelemetry.trace" in loaded


def test_traces_wait_for_a_tracer_provider() -> None:
    pytest.importorskip("prometheus_client")
    pytest.importorskip("opentelemetry.trace")
    # The API alone (no SDK set up): spans would all be no-ops, so only metrics watch.
    result = run((), TRIGGERS_METRICS="", TRIGGERS_TRACING="")
    assert result["observer"] == "MetricsObserver"


def test_one_extra_alone() -> None:
    pytest.importorskip("prometheus_client")
    result = run(("opentelemetry",), TRIGGERS_METRICS="", TRIGGERS_TRACING="")
    assert result["observer"] == "MetricsObserver"
    loaded = result["loaded"]
    assert isinstance(loaded, list)
    assert not any(name.startswith("opentelemetry") for name in loaded)


LATER = """
import time
import triggers_core.testing.sample_tasks
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from triggers_core import TriggerManager
from triggers_core.runtime import observe
manager = TriggerManager("memory://", "later")
manager.fire("nothing")
before = type(observe.current()).__name__
trace.set_tracer_provider(TracerProvider())
time.sleep(observe.RECHECK_SECONDS + 0.2)
manager.fire("nothing")
print(before, type(observe.current()).__name__)
"""


def test_a_tracer_provider_set_after_the_first_fire_is_used() -> None:
    pytest.importorskip("prometheus_client")
    pytest.importorskip("opentelemetry.sdk")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRIGGERS_METRICS": "", "TRIGGERS_TRACING": ""}
    done = subprocess.run(
        [sys.executable, "-c", LATER],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["MetricsObserver", "Composite"]


FORKED = """
import os
import triggers_core.testing.sample_tasks
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from triggers_core import TriggerManager
from triggers_core.runtime import observe
manager = TriggerManager("memory://", "forked")
manager.fire("nothing")  # no tracer provider: looked for again in a second
with observe._settings.lock:  # as if another thread were resolving at the fork
    pid = os.fork()
    if pid == 0:  # a pool process, set up as docs/observability.md says
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        manager.fire("nothing")  # at once, not a second later
        names = [span.name for span in exporter.get_finished_spans()]
        os._exit(0 if "triggers.fire nothing" in names else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_process_traces_its_first_fire_with_the_provider_it_sets_up() -> None:
    pytest.importorskip("opentelemetry.sdk")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRIGGERS_METRICS": "off", "TRIGGERS_TRACING": ""}
    done = subprocess.run(
        [sys.executable, "-c", FORKED],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"], "the child's fire was not traced (or it hung)"
