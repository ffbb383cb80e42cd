"""The workload of issue 22: the seed's example, six fires and five instances per session.

Session UIDs are ``<run>.<label>.<n>``: the label names the measured run, so
counters in worker processes can be attributed to it from the message alone
(:func:`label_of`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

#: Registered names of the trigger tasks (:mod:`benchmarks.celery_e2e.tasks`).
CREATE_APPLICANT = "bench.CreateApplicant"
COMPUTE_SCORE = "bench.ComputeScore"
IMPORT_PAGE = "bench.ImportPage"

#: The configuration every session gets (the seed's example).
CONFIG: Mapping[str, Mapping[str, Any]] = {
    "t_createApplicant": {
        "after": ["startSession", "observationsReceived"],
        "run": CREATE_APPLICANT,
    },
    "t_computeScore": {"after": ["t_createApplicant", "sessionFinalized"], "run": COMPUTE_SCORE},
    "t_page": {"after": ["startSession"], "andEvery": "pageReceived", "run": IMPORT_PAGE},
}

#: The fires of one session, in the order a client would send them (they are shuffled).
SESSION_TRIGGERS = (
    "startSession",
    "pageReceived",
    "pageReceived",
    "pageReceived",
    "observationsReceived",
    "sessionFinalized",
)

#: What every session must end with, whatever order its fires came in.
EXPECTED_INSTANCES = frozenset(
    {"t_createApplicant#0", "t_computeScore#0", "t_page#0", "t_page#1", "t_page#2"}
)

#: The external fires ``t_computeScore`` waits for (directly or through ``t_createApplicant``):
#: completion latency runs from the last of them to its finish.
SCORE_DEPENDS_ON = frozenset({"startSession", "observationsReceived", "sessionFinalized"})
SCORE_INSTANCE = "t_computeScore#0"
#: Labels of warm-up runs start with this (workers never profile them).
WARMUP_LABEL = "warmup"


@attrs.frozen
class Fire:
    """One fire a producer sends."""

    session: str
    trigger: str
    kwargs: Mapping[str, Any]


def session_uid(run: str, label: str, n: int) -> str:
    """The UID of session ``n`` of the measured run ``label`` (no dots in either part)."""
    if "." in run or "." in label:
        raise ValueError(f"run and label may not contain dots: {run!r}, {label!r}")
    return f"{run}.{label}.{n:05d}"


def label_of(session: str) -> str | None:
    """The measured run a session belongs to (None for a UID this benchmark did not make)."""
    parts = session.split(".")
    return parts[1] if len(parts) == 3 else None


def session_fires(session: str, n: int) -> list[Fire]:
    """The six fires of one session, with small kwargs like a web form's."""
    fires: list[Fire] = []
    page = 0
    for trigger in SESSION_TRIGGERS:
        kwargs: dict[str, Any]
        if trigger == "startSession":
            kwargs = {"applicant": n, "locale": "en"}
        elif trigger == "pageReceived":
            kwargs = {"page": page, "answers": [page, page + 1, page + 2]}
            page += 1
        elif trigger == "observationsReceived":
            kwargs = {"answers": [1, 2, 3, n % 7]}
        else:
            kwargs = {"finalized": True}
        fires.append(Fire(session, trigger, kwargs))
    return fires


def plan(sessions: Sequence[str], producers: int, seed: int) -> list[list[Fire]]:
    """Every session's fires shuffled together, dealt round-robin to ``producers``.

    Dealing round-robin keeps the global order: with pacing, fire ``j`` of the
    shuffled list goes out at about ``j / (producers * pace)`` seconds.
    """
    if producers < 1:
        raise ValueError(f"producers must be >= 1, got {producers}")
    fires = [fire for n, uid in enumerate(sessions) for fire in session_fires(uid, n)]
    random.Random(seed).shuffle(fires)
    return [fires[p::producers] for p in range(producers)]
