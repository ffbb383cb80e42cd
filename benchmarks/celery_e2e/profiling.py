"""The worker profile: cProfile in the pool processes of the first node, summarised per task.

With ``--profile`` the benchmark starts a separate set of workers whose first
node profiles its pool processes (so the measured runs carry no profiler
overhead): pool process 0 with the wall clock (where a task's *time* goes:
round trips, the 5 ms sleep, CPU), pool process 1 with the CPU clock (what it
*computes*). Each starts at its first measured message and stops when it
exits; the whole process is profiled (Celery's and billiard's own work
included), and figures are divided by the tasks it ran.
"""

from __future__ import annotations

import pstats
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Rows of each table in a summary.
TOP = 30

_SITE = re.compile(r".*/(site-packages|lib/python3\.\d+)/")
_ROOT = str(Path(__file__).resolve().parents[2]) + "/"
_INSTRUMENT = "benchmarks/celery_e2e/instrument.py"

#: Where a task's time goes: label -> function names (``file-suffix:function``) whose
#: cumulative time is shown per task, in this order (absent ones are left out).
MILESTONES: tuple[tuple[str, str], ...] = (
    ("Celery: trace one task (everything below)", "celery/app/trace.py:trace_task"),
    ("Triggers: run_message (the bound task's body)", "triggers_celery/worker.py:run_message"),
    ("  open the storage named in the message", "triggers_celery/worker.py:_open_storage"),
    ("  build the manager", "triggers_celery/worker_setup.py:build_manager"),
    ("  run_instance (mark running, run, finish)", "triggers_core/runtime/manager.py:run_instance"),
    ("    storage: load (from the runtime)", "runtime->load"),
    ("    storage: compare_and_swap (from the runtime)", "runtime->compare_and_swap"),
    ("    storage: renew_lease (from the runtime)", "runtime->renew_lease"),
    ("    back off after a lost compare-and-swap", "triggers_core/runtime/commit.py->sleep"),
    ("    the task body (effect row + 5 ms sleep)", "benchmarks/celery_e2e/tasks.py:_run"),
    ("      time.sleep in the body", "benchmarks/celery_e2e/tasks.py->sleep"),
    ("      effect row INSERT", "benchmarks/celery_e2e/tasks.py:record_effect"),
    ("    publish cascades (apply_async)", "celery/app/task.py:apply_async"),
    (
        "Celery's Django fix-up: close every cache after the task",
        "django/core/cache/__init__.py:close_caches",
    ),
    ("JSON encode", "json/encoder.py:encode"),
    ("JSON decode", "json/decoder.py:decode"),
)


def short_name(func: tuple[str, int, str]) -> str:
    """``path:line(function)`` with site-packages and the repository root cut off."""
    path, line, name = func
    if path == "~":
        return name
    path = _SITE.sub("", path)
    path = path.removeprefix(_ROOT)
    return f"{path}:{line}({name})"


def _matches(func: tuple[str, int, str], pattern: str) -> bool:
    path, _, name = func
    where, function = pattern.rsplit(":", 1)
    if where == "~":
        return path == "~" and name == function
    return path.endswith(where) and name == function


def _called_from(stats: Any, pattern: str) -> tuple[int, float] | None:
    """``caller->name``: calls of functions ``name`` made from files matching ``caller``.

    ``runtime->load`` is every call from ``triggers_core/runtime`` to a storage's
    ``load`` (in ``triggers_backends``); ``<file>->sleep`` every ``time.sleep`` from
    that file. Returns (calls, cumulative seconds of those calls).
    """
    caller_part, name = pattern.split("->")
    callers = "triggers_core/runtime/" if caller_part == "runtime" else caller_part
    calls, seconds, seen = 0, 0.0, False
    for (path, _, function), value in stats.stats.items():
        wanted = (
            path == "~" and function == "<built-in method time.sleep>"
            if name == "sleep"
            else function == name and "triggers_backends/" in path
        )
        if not wanted:
            continue
        for (caller_path, _, _), (_, caller_calls, _, cumulative) in value[4].items():
            # The counting wrapper of benchmarks/celery_e2e/instrument.py sits between the
            # runtime and the storage's methods.
            if callers in caller_path or (
                callers == "triggers_core/runtime/" and caller_path.endswith(_INSTRUMENT)
            ):
                calls, seconds, seen = calls + caller_calls, seconds + cumulative, True
    return (calls, seconds) if seen else None


def _cumulative(stats: Any, pattern: str) -> tuple[int, float] | None:
    """(calls, cumulative seconds) of the matching functions, not counting recursion twice."""
    if "->" in pattern:
        return _called_from(stats, pattern)
    found = [(f, v) for f, v in stats.stats.items() if _matches(f, pattern)]
    if not found:
        return None
    calls = sum(v[1] for _, v in found)  # primitive calls
    # A function called from another matching one (a wrapper) would be counted twice.
    names = {f for f, _ in found}
    cumulative = sum(v[3] for f, v in found if not any(caller in names for caller in v[4]))
    return calls, cumulative


def summarize(path: Path, clock: str, tasks: int, title: str) -> str:
    """A Markdown summary of one profile: milestones, then the top functions per task."""
    stats = pstats.Stats(str(path))
    per = max(1, tasks)
    lines = [
        f"#### {title}: {clock} clock, {tasks} tasks profiled",
        "",
        f"Total profiled: {stats.total_tt:.2f} s ({stats.total_tt / per * 1000:.2f} ms per task).",
        "",
        "Where a task's time goes (cumulative ms per task; calls per task):",
        "",
        "| step | ms / task | calls / task |",
        "| --- | --- | --- |",
    ]
    for label, pattern in MILESTONES:
        found = _cumulative(stats, pattern)
        if found is not None:
            calls, seconds = found
            lines.append(f"| {label} | {seconds / per * 1000:.3f} | {calls / per:.1f} |")
    lines += ["", f"Top {TOP} by own time (ms per task):", ""]
    lines += _table(stats, per, key=2)
    lines += ["", f"Top {TOP} by cumulative time (ms per task):", ""]
    lines += _table(stats, per, key=3)
    return "\n".join(lines)


def _table(stats: Any, per: int, key: int) -> list[str]:
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][key], reverse=True)[:TOP]
    lines = [
        "| function | calls / task | own ms / task | cumulative ms / task |",
        *["| --- | --- | --- | --- |"],
    ]
    for func, (_, calls, own, cumulative, _) in rows:
        lines.append(
            f"| `{short_name(func)}` | {calls / per:.1f} | {own / per * 1000:.3f} "
            f"| {cumulative / per * 1000:.3f} |"
        )
    return lines


def summaries(profiles: Iterable[dict[str, Any]], variant: str) -> list[str]:
    """Summaries of the profiles the pool processes reported (``counts-*.json`` entries)."""
    found = []
    for profile in sorted(profiles, key=lambda p: p["clock"], reverse=True):
        found.append(summarize(Path(profile["path"]), profile["clock"], profile["tasks"], variant))
    return found
