"""The workflow tools against size: ``triggers check`` on N tasks, ``inspect`` on N instances.

* *check*: a configuration of N tasks in a chain (each after the one before and an
  external trigger, every tenth through a group, every seventh with an ``unless``
  that shares a name with its ``after``, numbered names that are one edit apart);
  ``lint()`` on it, as ``triggers check`` runs it.
* *inspect*: a session of N unstarted instances of an ``andEvery`` task waiting for
  the cascade of another task (itself with N/10 instances), and N/10 failed and
  replayed ones; the command's whole work (load, explain every instance, print the
  table), run as a child process so its peak memory is its own.

Nothing here asserts a timing; the targets of issue 23 are reported as met or not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from triggers_core import SessionState, Status, TaskInstance
from triggers_core import engine as pure
from triggers_core.engine.scopes import Changes
from triggers_core.runtime.registry import open_storage
from triggers_core.tools.lint import lint

INSPECT_CONFIG = {
    "t_source": {"after": ["start"], "andEvery": "item", "run": "bench_task"},
    "t_page": {"after": ["t_source", "approved"], "andEvery": "page", "run": "bench_task"},
}


def check_config(n: int) -> dict[str, Any]:
    """``n`` tasks in a chain, with groups, unless conditions and near-identical names."""
    config: dict[str, Any] = {}
    for i in range(n):
        name = f"t_step{i:05d}"
        after: list[Any] = [f"ext{i % 50}"]
        if i:
            previous = f"t_step{i - 1:05d}"
            if i % 10 == 0 and i > 1:
                after.append({"anyOf": [previous, f"t_step{i - 2:05d}", f"alt{i % 13}"]})
            else:
                after.append(previous)
        task: dict[str, Any] = {"after": after, "run": "bench.task"}
        if i % 7 == 0:
            task["unless"] = [f"cancel{i % 5}", f"ext{i % 50}"]
        config[name] = task
    return config


def time_check(n: int) -> tuple[float, float, int, int]:
    """``lint`` on :func:`check_config` (n): (seconds, CPU seconds, size in bytes, findings)."""
    config = check_config(n)
    size = len(json.dumps(config))
    began, cpu = time.perf_counter(), time.process_time()
    findings = lint(config)
    return time.perf_counter() - began, time.process_time() - cpu, size, len(findings)


def inspect_state(n: int) -> SessionState:
    """``n`` waiting ``t_page`` instances, ``n // 10`` ``t_source`` ones (failed, replayed)."""
    tasks = pure.update_configuration(SessionState(), INSPECT_CONFIG).state.tasks
    start = datetime(2024, 1, 1, tzinfo=UTC)
    instances: dict[str, TaskInstance] = {}
    sources = max(1, n // 10)
    for i in range(sources):
        stamp = (start + timedelta(seconds=i)).isoformat()
        failed = i % 2 == 0 and i + 1 < sources
        instances[f"t_source#{i}"] = TaskInstance(
            name=f"t_source#{i}",
            task_name="t_source",
            status=Status.REPLAYED if failed else Status.FINISHED,
            kwargs={"start": {}, "item": {"i": i}},
            metadata={
                "created": stamp,
                "lastModified": stamp,
                "timestamps": {"unstarted": stamp, "failed": stamp} if failed else {},
                "depth": 0,
                **(
                    {
                        "exceptionType": "builtins.RuntimeError",
                        "exceptionInfo": f"Traceback (most recent call last):\n  x\nError: {i}",
                        "replayedAs": f"t_source#{i + 1}",
                    }
                    if failed
                    else {}
                ),
                **({"parent": f"t_source#{i - 1}"} if i % 2 == 1 else {}),
            },
        )
    for i in range(n):
        stamp = (start + timedelta(seconds=i)).isoformat()
        instances[f"t_page#{i}"] = TaskInstance(
            name=f"t_page#{i}",
            task_name="t_page",
            status=Status.UNSTARTED,
            kwargs={"page": {"i": i, "payload": "x" * 32}},
            metadata={"created": stamp, "lastModified": stamp, "timestamps": {"unstarted": stamp}},
        )
    return SessionState(
        tasks=tasks,
        instances=instances,
        latest_kwargs={"page": {"i": n - 1}, "item": {"i": sources - 1}},
        counters={"t_source": sources, "t_page": n},
    )


def store_inspect_session(path: Path, n: int) -> str:
    """Write :func:`inspect_state` (n) as session ``inspect`` of a SQLite file; its URL."""
    url = f"sqlite:///{path}"
    storage = open_storage(url, "inspect")
    state = inspect_state(n)
    names = frozenset(state.instances)
    storage.compare_and_swap(None, state, Changes(instances=names, created=names, config=True))
    storage.close()
    return url


_CHILD = """
import resource, sys, time
from triggers_core.cli import main
sys.argv = ["triggers", "inspect", sys.argv[1], "inspect", "--now", "2024-06-01T00:00:00+00:00"]
began = time.perf_counter()
cpu = resource.getrusage(resource.RUSAGE_SELF)
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
took = time.perf_counter() - began
usage = resource.getrusage(resource.RUSAGE_SELF)
spent = usage.ru_utime + usage.ru_stime - cpu.ru_utime - cpu.ru_stime
peak = usage.ru_maxrss  # KB; on Linux it may include the parent's before exec: use VmHWM
try:
    with open("/proc/self/status") as status:
        peak = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    pass
sys.stderr.write(f"{took} {spent} {peak}\\n")
"""


def time_inspect(n: int) -> tuple[float, float, float, int]:
    """``triggers inspect`` on n instances: (seconds, CPU seconds, peak MB of the
    process, lines printed). CPU time is what the command cost, however loaded the
    machine is."""
    with tempfile.TemporaryDirectory() as workdir:
        url = store_inspect_session(Path(workdir) / "inspect.db", n)
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, url],
            capture_output=True,
            text=True,
            check=True,
            timeout=1800,
        )
    took, cpu, peak = done.stderr.strip().splitlines()[-1].split()
    return float(took), float(cpu), int(peak) / 1024, len(done.stdout.splitlines())


#: Issue 23's targets: ``inspect`` on 12,000 instances, ``check`` on 3,000 tasks.
INSPECT_TARGET = (12_000, 2.0, 200.0)  # instances, seconds, MB
CHECK_TARGET = (3_000, 2.0)  # tasks, seconds


def report(quick: bool) -> list[str]:
    """The report's section: both tables and the targets (measured in CPU seconds, which
    a neighbour's load does not inflate; wall-clock seconds beside them)."""
    check_sizes = (20, 40) if quick else (750, 3_000, 6_000)
    inspect_sizes = (30, 60) if quick else (3_000, 6_000, 12_000)
    lines = ["", "### Workflow tools against size (issue 23)", ""]
    lines += [
        "| `triggers check` (lint) | KB | findings | CPU s | wall s |",
        "| --- | --- | --- | --- | --- |",
    ]
    checks = {}
    for n in check_sizes:
        wall, cpu, size, found = time_check(n)
        checks[n] = cpu
        lines.append(f"| {n:,} tasks | {size // 1024} | {found:,} | {cpu:.2f} | {wall:.2f} |")
    lines += [
        "",
        "| `triggers inspect` | lines | CPU s | wall s | peak MB |",
        "| --- | --- | --- | --- | --- |",
    ]
    inspects = {}
    for n in inspect_sizes:
        wall, cpu, peak, printed = time_inspect(n)
        inspects[n] = (cpu, peak)
        lines.append(f"| {n:,} instances | {printed:,} | {cpu:.2f} | {wall:.2f} | {peak:.0f} |")
    lines += ["", "### Targets of issue 23 (tooling)", ""]
    if quick:
        lines.append("n/a (--quick sizes)")
        return lines
    n, seconds, megabytes = INSPECT_TARGET
    cpu, peak = inspects[n]
    met = cpu < seconds and peak < megabytes
    lines.append(
        f"- inspect on {n:,} instances < {seconds:.0f} s and < {megabytes:.0f} MB: "
        f"{cpu:.2f} CPU s, {peak:.0f} MB: {'**met**' if met else '**NOT met**'}"
    )
    tasks, seconds = CHECK_TARGET
    lines.append(
        f"- check on {tasks:,} tasks < {seconds:.0f} s: {checks[tasks]:.2f} CPU s: "
        f"{'**met**' if checks[tasks] < seconds else '**NOT met**'}"
    )
    return lines
