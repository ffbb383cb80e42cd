"""A traced prefork worker, and the checks of one workflow's trace across processes.

Shared by ``test_observability_workers.py`` and ``docs/tools/trace_screenshot.py``
(which renders the trace that ``docs/observability.md`` shows). Spans are the
JSON records of :func:`trace_worker_app.as_record`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from processes import ROOT, STARTED, WorkerProcess, python_env

T = TypeVar("T")
Span = dict[str, Any]


class PreforkWorker(WorkerProcess):
    """``celery -A trace_worker_app worker --pool=prefork`` with its log in a file.

    ``env`` configures it (``worker_app``'s ``TRIGGERS_TEST_*`` variables and
    ``TRIGGERS_TEST_SPANS``, the file its pool processes write spans to).
    """

    def __init__(
        self,
        name: str,
        queue: str,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        concurrency: int = 1,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        command = [
            sys.executable,
            *("-m", "celery", "-A", "trace_worker_app", "worker"),
            *("--pool=prefork", f"--concurrency={concurrency}", "--without-gossip"),
            *("--without-mingle", "--without-heartbeat", "--loglevel=INFO"),
            *(f"--hostname={name}@%h", f"--queues={queue}"),
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**python_env(), **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        STARTED.append(self)


def wait_for(check: Callable[[], T], what: str, timeout: float = 60.0) -> T:
    """Poll ``check`` every 0.1 s until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class BrokenTrace(AssertionError):
    """The gathered spans of a trace do not link up as they should."""


def follow_chain(spans: Iterable[Span], names: Sequence[str]) -> list[Span]:
    """The spans named ``names``, in order, each one a child of the one before.

    The first is a root (no parent); only spans of its trace count. Raises
    :class:`BrokenTrace` at the first link that is missing or ambiguous.
    """
    spans = list(spans)
    roots = [s for s in spans if s["name"] == names[0] and s["parent"] is None]
    if len(roots) != 1:
        raise BrokenTrace(f"expected one root span {names[0]!r}, found {len(roots)}")
    chain = roots
    trace = roots[0]["trace"]
    for name in names[1:]:
        parent = chain[-1]
        children = [s for s in spans if s["trace"] == trace and s["parent"] == parent["span"]]
        named = [s for s in children if s["name"] == name]
        if len(named) != 1:
            raise BrokenTrace(
                f"{parent['name']!r} (pid {parent['pid']}) should have one child {name!r}; "
                f"its children: {sorted(s['name'] for s in children)}"
            )
        chain.append(named[0])
    return chain


def whole_trace(spans: Iterable[Span], root: Span) -> list[Span]:
    """Every span of ``root``'s trace, by start time; :class:`BrokenTrace` if one's
    parent is missing (a span of another process lost on the way)."""
    trace = [s for s in spans if s["trace"] == root["trace"]]
    ids = {s["span"] for s in trace}
    orphans = [s["name"] for s in trace if s["parent"] is not None and s["parent"] not in ids]
    if orphans:
        raise BrokenTrace(f"spans whose parent was not gathered: {orphans}")
    if [s for s in trace if s["parent"] is None] != [root]:
        raise BrokenTrace("the trace has more than one root")
    return sorted(trace, key=lambda s: (s["start"], s["end"]))
