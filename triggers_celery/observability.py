"""Traces across the broker and metrics of a worker (see docs/observability.md).

**Trace context in messages.** While an observer traces
(:mod:`triggers_core.runtime.observe`), a trigger task message carries the W3C
trace context of its ``triggers.dispatch`` span in one message header,
:data:`TRACE_HEADER` (``{"traceparent": ..., "tracestate": ...}``; never
baggage). A worker reads it back before the task runs (Celery's
``task_prerun`` signal), so the worker's ``triggers.run`` span is a child of
the dispatch, and what the run dispatches (its cascade) continues the same
trace. A message is untrusted input: a header that is not a mapping of the two
known keys to short strings is ignored (the run starts a trace of its own).

When ``opentelemetry-instrumentation-celery`` instruments the process, it
propagates the context itself (its ``apply_async``/``run`` spans): the header
is not sent and not read, and the instrumentation's ``run/{task}`` span is the
parent of ``triggers.run``, so nothing is propagated twice and no span has two
parents. Instrument the processes that fire and the workers alike (a worker
instrumented alone starts a trace per message).

**Metrics of a worker.** :class:`MetricsServer`, a worker bootstep added by
:func:`~triggers_celery.bind_tasks`, serves ``prometheus_client``'s exposition
on the port of the :data:`METRICS_PORT_SETTING` setting (off unless set), on
:data:`METRICS_ADDRESS_SETTING` (default ``127.0.0.1``). Under the prefork
pool the tasks run in child processes: set ``PROMETHEUS_MULTIPROC_DIR`` (an
empty directory, in the environment of the ``celery worker`` command) so
every process writes its metrics there and the server adds them up.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from celery import bootsteps
from celery.signals import task_postrun, task_prerun, worker_process_shutdown

from triggers_core.errors import install_extra_hint
from triggers_core.runtime.observe import current as observer

__all__ = [
    "METRICS_ADDRESS_SETTING",
    "METRICS_PORT_SETTING",
    "TRACE_HEADER",
    "MetricsServer",
    "install_worker_steps",
    "message_headers",
    "trace_carrier",
]

log = logging.getLogger(__name__)

#: The message header holding the trace context of a dispatch.
TRACE_HEADER = "triggers_trace"
#: Celery setting: the port a worker serves its metrics on (unset or None: no server).
METRICS_PORT_SETTING = "triggers_metrics_port"
#: Celery setting: the address that server listens on (default ``127.0.0.1``).
METRICS_ADDRESS_SETTING = "triggers_metrics_address"

#: The keys a trace header may hold, and the longest value of each that is accepted.
_CARRIER_LIMITS = {"traceparent": 128, "tracestate": 512}
#: Tokens of the contexts attached for running tasks, by Celery task id.
_attached: dict[str, Any] = {}


def _instrumented() -> bool:
    """True if ``opentelemetry-instrumentation-celery`` instruments this process."""
    module = sys.modules.get("opentelemetry.instrumentation.celery")
    if module is None:
        return False
    try:
        return bool(module.CeleryInstrumentor().is_instrumented_by_opentelemetry)
    except Exception:  # a version we do not know: assume it does its job
        return True


def message_headers() -> dict[str, Any] | None:
    """The headers that carry the current trace context to a worker, or None."""
    watcher = observer()
    if watcher is None or _instrumented():
        return None
    carrier: dict[str, str] = {}
    watcher.inject(carrier)
    found = {key: carrier[key] for key in _CARRIER_LIMITS if isinstance(carrier.get(key), str)}
    return {TRACE_HEADER: found} if "traceparent" in found else None


def trace_carrier(request: Any) -> dict[str, str] | None:
    """The trace context a received message carries, checked; None if absent or malformed.

    Reads :data:`TRACE_HEADER` (a task's request attribute, or its ``headers``),
    else the bare ``traceparent`` that OpenTelemetry's own Celery
    instrumentation sends. Anything but short strings under the known keys is
    dropped.
    """
    raw = getattr(request, TRACE_HEADER, None)
    if raw is None:
        headers = getattr(request, "headers", None)
        if isinstance(headers, Mapping):
            raw = headers.get(TRACE_HEADER)
    if raw is None:
        raw = {key: getattr(request, key, None) for key in _CARRIER_LIMITS}
    if not isinstance(raw, Mapping):
        return None
    carrier: dict[str, str] = {}
    for key, limit in _CARRIER_LIMITS.items():
        value = raw.get(key)
        if isinstance(value, str) and 0 < len(value) <= limit and value.isascii():
            carrier[key] = value
    return carrier if "traceparent" in carrier else None


def _on_prerun(sender: Any = None, task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if not getattr(task, "trigger_task_name", None) or task_id is None:
        return
    watcher = observer()
    if watcher is None or _instrumented():
        return  # OpenTelemetry's Celery instrumentation makes its run span current itself
    carrier = trace_carrier(getattr(task, "request", None))
    if carrier is not None:
        _attached[task_id] = watcher.attach(carrier)


def _on_postrun(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    if task_id is None or task_id not in _attached:
        return
    token = _attached.pop(task_id)
    watcher = observer()
    if watcher is not None:
        watcher.detach(token)


def _on_process_shutdown(**_: Any) -> None:
    """A prefork child exits: its live gauges leave the multiprocess directory."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ and "prometheus_client" in sys.modules:
        from prometheus_client import multiprocess  # noqa: PLC0415 - loaded already

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


task_prerun.connect(_on_prerun, weak=False, dispatch_uid="triggers-trace-prerun")
task_postrun.connect(_on_postrun, weak=False, dispatch_uid="triggers-trace-postrun")
worker_process_shutdown.connect(
    _on_process_shutdown, weak=False, dispatch_uid="triggers-metrics-process-shutdown"
)


class MetricsServer(bootsteps.StartStopStep):  # type: ignore[misc] # celery ships no types
    """Serves the worker's metrics over HTTP (see the module); off unless configured."""

    label = "triggers metrics"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.server: Any = None

    def include_if(self, parent: Any) -> bool:
        return parent.app.conf.get(METRICS_PORT_SETTING) is not None

    def start(self, parent: Any) -> None:
        conf = parent.app.conf
        port = conf.get(METRICS_PORT_SETTING)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(
                f"the Celery setting {METRICS_PORT_SETTING!r} must be a port number, got {port!r}"
            )
        address = conf.get(METRICS_ADDRESS_SETTING) or "127.0.0.1"
        try:
            from prometheus_client import REGISTRY, CollectorRegistry, start_http_server  # noqa: PLC0415
        except ImportError as exc:
            raise ImportError(
                f"{METRICS_PORT_SETTING} is set but prometheus_client is not installed: "
                + install_extra_hint("metrics")
            ) from exc
        registry: Any = REGISTRY
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess  # noqa: PLC0415 - optional extra

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        elif getattr(parent, "pool_cls", None) is not None and "prefork" in str(parent.pool_cls):
            log.warning(
                "serving metrics of a prefork worker without PROMETHEUS_MULTIPROC_DIR: the "
                "tasks' metrics stay in the child processes; set it (see docs/observability.md)"
            )
        self.server, _thread = start_http_server(port, addr=address, registry=registry)
        log.info("serving triggers metrics on http://%s:%d/metrics", address, port)

    def stop(self, parent: Any) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def install_worker_steps(app: Any) -> None:
    """Add :class:`MetricsServer` to ``app``'s worker (once; it runs only if configured)."""
    steps = app.steps["worker"]
    if MetricsServer not in steps:
        steps.add(MetricsServer)
