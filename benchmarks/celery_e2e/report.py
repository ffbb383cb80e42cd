"""The Markdown report of an end-to-end run (tables of figures; the profile summaries).

A run with a floor variant (Celery alone) also gets a table that sets each
Triggers run beside the floor's run on the same broker, size and mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.celery_e2e.variants import VARIANTS, broker_of, is_floor


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _operation(result: dict[str, Any], name: str) -> str:
    per_instance = result.get("operations_per_instance", {}).get(name)
    round_trips = result.get("round_trips_per_call", {}).get(name)
    if per_instance is None:
        return "-"
    return _f(per_instance, 2) + (f" ({_f(round_trips, 1)})" if round_trips is not None else "")


def _mode(result: dict[str, Any]) -> str:
    if result["mode"] == "paced":
        return f"paced {result['pace'] * result['producers']:g}/s"
    return "saturated"


def _operations(results: Sequence[dict[str, Any]]) -> list[str]:
    names = sorted({k for r in results for k in r.get("operations_per_instance", {})})
    return [
        "",
        "Storage operations per instance, workers and producers (in brackets: storage round "
        "trips per call; conflict: a compare-and-swap that lost to another writer, so the "
        "commit loop backed off and started over; other: round trips outside these calls):",
        "",
        *_table(
            ["variant", "sessions", "fires", *names, "other round trips"],
            [
                [
                    VARIANTS[r["variant"]],
                    f"{r['sessions']:,}",
                    _mode(r),
                    *(_operation(r, n) for n in names),
                    _f(r.get("round_trips_outside_per_instance"), 2),
                ]
                for r in results
            ],
        ),
    ]


def render(
    header: Sequence[str], results: Sequence[dict[str, Any]], profiles: Sequence[str]
) -> str:
    lines = [*header, "", "Throughput and latency:", ""]
    rows = [
        [
            VARIANTS[r["variant"]],
            f"{r['sessions']:,}",
            _mode(r),
            _f(r["sessions_per_s"]),
            _f(r["seconds"]),
            f"{_f(r['latency_p50_ms'], 0)} / {_f(r['latency_p99_ms'], 0)}",
            f"{_f(r['fire_p50_ms'], 2)} / {_f(r['fire_p99_ms'], 2)}",
            r["load"],
        ]
        for r in results
    ]
    lines += _table(
        [
            "variant",
            "sessions",
            "fires",
            "sessions/s",
            "span s",
            "completion p50 / p99 ms",
            "producer fire p50 / p99 ms",
            "load average before -> after",
        ],
        rows,
    )
    lines += ["", "Cost per session and per instance:", ""]
    rows = [
        [
            VARIANTS[r["variant"]],
            f"{r['sessions']:,}",
            _mode(r),
            f"{_f(r['worker_cpu_ms'])} ({_f(r['worker_main_cpu_ms'])} + "
            f"{_f(r['worker_pool_cpu_ms'])})",
            _f(r["producer_cpu_ms"]),
            f"{_f(r.get('storage_rt_per_instance'), 2)} "
            f"({_f(r.get('storage_rt_per_instance_workers'), 2)} on workers)",
            _f(r.get("storage_rt_per_fire_producers"), 2),
            _f(r.get("published_per_instance"), 2),
            _f(r.get("broker_rt_per_instance"), 2),
        ]
        for r in results
    ]
    lines += _table(
        [
            "variant",
            "sessions",
            "fires",
            "worker CPU ms / session (main + pool)",
            "producer CPU ms / session",
            "storage round trips / instance (workers' share)",
            "producer storage round trips / fire",
            "messages published / instance",
            "Redis broker round trips / instance",
        ],
        rows,
    )
    stored = [r for r in results if not is_floor(r["variant"])]  # the floor has no storage
    if stored:
        lines += _operations(stored)
    lines += _beside_the_floor(results)
    sql = [r for r in results if r.get("sql")]
    if sql:
        lines += ["", "PostgreSQL round trips per instance, by kind (workers and producers):", ""]
        lines += _table(
            ["sessions", "fires", "statements", "transactions (BEGIN + COMMIT each)", "pings"],
            [
                [
                    f"{r['sessions']:,}",
                    _mode(r),
                    _f(r["sql"].get("sql_statements"), 2),
                    _f(r["sql"].get("sql_transactions"), 2),
                    _f(r["sql"].get("sql_pings"), 2),
                ]
                for r in sql
            ],
        )
    lines += ["", "Exactness (checked after every run; a failure stops the benchmark):", ""]
    for r in results:
        exact = r["exact"]
        if is_floor(r["variant"]):
            lines.append(
                f"- {VARIANTS[r['variant']]}, {r['sessions']:,} sessions, {_mode(r)}: "
                f"{exact['sessions']:,} sessions x 5 task instance names, "
                f"{exact['effect_rows']:,} effect rows (one per instance name), 0 lost, "
                f"0 doubled; {r.get('tasks_run', '?'):,} task messages run; "
                f"{r['queue_left']} message(s) left in the queue"
            )
            continue
        lines.append(
            f"- {VARIANTS[r['variant']]}, {r['sessions']:,} sessions, {_mode(r)}: "
            f"{exact['sessions']:,} sessions x 5 instances finished, {exact['effect_rows']:,} "
            f"effect rows (one per instance), 0 lost, 0 doubled; {r.get('tasks_run', '?'):,} task "
            f"messages run; {r['queue_left']} message(s) left in the queue"
        )
    for summary in profiles:
        lines += ["", summary]
    return "\n".join(lines) + "\n"


def _pair(triggers: float | None, alone: float | None, digits: int = 1) -> str:
    """``triggers / alone (ratio x)``."""
    if triggers is None or alone is None:
        return "-"
    ratio = f" ({triggers / alone:.2f}x)" if alone else ""
    return f"{_f(triggers, digits)} / {_f(alone, digits)}{ratio}"


def _beside_the_floor(results: Sequence[dict[str, Any]]) -> list[str]:
    """Each Triggers run beside Celery alone on its broker, size and mode (if both ran)."""
    floors = {
        (broker_of(r["variant"]), r["sessions"], _mode(r)): r
        for r in results
        if is_floor(r["variant"])
    }
    rows = []
    for r in results:
        f = floors.get((broker_of(r["variant"]), r["sessions"], _mode(r)))
        if f is None or is_floor(r["variant"]):
            continue
        rows.append(
            [
                VARIANTS[r["variant"]],
                VARIANTS[f["variant"]],
                f"{r['sessions']:,}",
                _mode(r),
                _pair(r["sessions_per_s"], f["sessions_per_s"]),
                _pair(r["worker_cpu_ms"], f["worker_cpu_ms"]),
                _pair(r["worker_main_cpu_ms"], f["worker_main_cpu_ms"]),
                _pair(r["worker_pool_cpu_ms"], f["worker_pool_cpu_ms"]),
                _pair(r["producer_cpu_ms"], f["producer_cpu_ms"]),
                _pair(r["latency_p50_ms"], f["latency_p50_ms"], 0),
                _pair(r["latency_p99_ms"], f["latency_p99_ms"], 0),
            ]
        )
    if not rows:
        return []
    return [
        "",
        "Triggers beside Celery alone (the floor: the same workers, producers, plan, effect "
        "rows and 5 ms, five plain Celery messages per session, one of them published by a "
        "worker; no storage). Each cell: Triggers / Celery alone (ratio). The floor's "
        "completion runs from the session's observationsReceived fire to t_computeScore's "
        "effect row, taken before its 5 ms sleep (it waits for no other fire); Triggers' from "
        "the last fire t_computeScore waits for to its finished time:",
        "",
        *_table(
            [
                "variant",
                "floor",
                "sessions",
                "fires",
                "sessions/s",
                "worker CPU ms / session",
                "main",
                "pool",
                "producer CPU ms / session",
                "completion p50 ms",
                "completion p99 ms",
            ],
            rows,
        ),
    ]
