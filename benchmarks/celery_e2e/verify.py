"""Pure checks and figures over what a run left behind: no I/O here, so tests can feed it.

:func:`check_exact` is the benchmark's correctness assertion: every session
ends with exactly its five instances, all ``finished``, and exactly one effect
row per instance (none missing: nothing lost; none twice: nothing doubled);
anything else raises :class:`BenchmarkFailure` naming the sessions. On the
floor (Celery alone) there is no storage, so only the effect rows are checked.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet

import attrs

from benchmarks.celery_e2e.workload import EXPECTED_INSTANCES, SCORE_DEPENDS_ON

#: How many problems a failure message lists (the count is always given).
SHOWN_PROBLEMS = 20


class BenchmarkFailure(Exception):
    """The run is wrong (lost or doubled instances) or stuck; the message says what."""


@attrs.frozen
class Exactness:
    """What :func:`check_exact` verified."""

    sessions: int
    instances: int
    effect_rows: int


def check_exact(
    label: str,
    sessions: Sequence[str],
    statuses: Mapping[str, Mapping[str, str]] | None,
    effects: Mapping[tuple[str, str], int],
) -> Exactness:
    """Raise unless every session has exactly the expected finished instances, each run once.

    ``statuses``: session -> {instance name: status}, as stored (None: no storage,
    the floor; only the effect rows are checked); ``effects``: (session, instance)
    -> number of effect rows the task bodies inserted.
    """
    problems: list[str] = []
    wanted = set(sessions)
    for uid in sessions:
        found = statuses.get(uid) if statuses is not None else None
        if statuses is not None and found is None:
            problems.append(f"{uid}: no such session in the storage")
            continue
        if found is not None:
            problems += _stored_problems(uid, found)
        for name in sorted(EXPECTED_INSTANCES):
            rows = effects.get((uid, name), 0)
            if rows == 0:
                problems.append(f"{uid}: {name} has no effect row (its body never ran: lost)")
            elif rows > 1:
                problems.append(
                    f"{uid}: {name} has {rows} effect rows (its body ran twice: doubled)"
                )
    for (uid, name), rows in sorted(effects.items()):
        if uid not in wanted or name not in EXPECTED_INSTANCES:
            problems.append(f"{uid}: {rows} effect row(s) for {name}, which should not exist")
    if problems:
        shown = "\n  ".join(problems[:SHOWN_PROBLEMS])
        more = len(problems) - SHOWN_PROBLEMS
        raise BenchmarkFailure(
            f"run {label}: {len(problems)} problem(s) with lost or doubled instances:\n  {shown}"
            + (f"\n  ... and {more} more" if more > 0 else "")
        )
    return Exactness(len(sessions), len(sessions) * len(EXPECTED_INSTANCES), sum(effects.values()))


def _stored_problems(uid: str, found: Mapping[str, str]) -> list[str]:
    """What is wrong with the stored instances of session ``uid``."""
    problems: list[str] = []
    missing = sorted(EXPECTED_INSTANCES - found.keys())
    extra = sorted(found.keys() - EXPECTED_INSTANCES)
    if missing:
        problems.append(f"{uid}: instances missing (lost): {missing}")
    if extra:
        problems.append(f"{uid}: unexpected instances (doubled): {extra}")
    unfinished = {n: s for n, s in sorted(found.items()) if s != "finished"}
    if unfinished:
        problems.append(f"{uid}: instances not finished: {unfinished}")
    return problems


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between the two nearest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def completion_latencies(
    fires: Iterable[tuple[str, str, float]],
    finished: Mapping[str, float],
    depends_on: AbstractSet[str] = SCORE_DEPENDS_ON,
) -> dict[str, float]:
    """Per session: ``t_computeScore``'s finish minus the start of the last fire it waits for.

    ``fires``: (session, trigger, wall-clock start of the fire call);
    ``finished``: session -> wall-clock finish of its ``t_computeScore``;
    ``depends_on``: the fires it waits for (the floor's score waits for fewer).
    """
    last: dict[str, float] = {}
    for session, trigger, start in fires:
        if trigger in depends_on:
            last[session] = max(last.get(session, -math.inf), start)
    missing = sorted(set(finished) - set(last))
    if missing:
        raise BenchmarkFailure(f"no recorded fire for sessions {missing[:5]} (of {len(missing)})")
    return {session: finished[session] - last[session] for session in finished}
