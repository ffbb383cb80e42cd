"""The "Celery alone" reference (the floor): the workload's message flow with no Triggers in it.

The floor variants (``floor-redis``, ``floor-rabbitmq``) run the same workers,
producers, plan and effect rows as the Triggers variants, but every message
is a plain Celery task, :data:`FLOOR_TASK`, with the options of a trigger
task (JSON, ``acks_late``, ``reject_on_worker_lost``) and keyword arguments
of the same shape as a trigger task message (manager, storage, session,
instance). The flow is the least a session of the seed's workload needs:

* ``pageReceived`` (3 per session): the producer publishes one message, for
  ``t_page#<page>``;
* ``observationsReceived``: the producer publishes ``t_createApplicant#0``;
* ``startSession`` and ``sessionFinalized``: nothing is published (the fire
  is still timed, and costs what an empty loop step costs);
* the ``t_createApplicant#0`` task, after its effect row and its 5 ms, publishes
  ``t_computeScore#0`` (the cascade, from a worker).

So 5 messages and 5 effect rows per session, one message published by a
worker, as with Triggers. No storage is read or written; what a floor task
costs is Celery's (receive, decode, run, ack, publish) plus the effect row
and the sleep that every variant's task bodies have.

Its completion latency runs from the start of the session's
``observationsReceived`` fire to ``t_computeScore#0``'s effect row (its
``at``, taken before the task's 5 ms sleep). The floor's score does not wait
for ``sessionFinalized`` (nothing would carry that fact without a storage), so
the Triggers variants' "last of the fires it waits for" would make it negative
whenever ``sessionFinalized`` comes last.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from benchmarks.celery_e2e.tasks import TASK_SLEEP, record_effect
from benchmarks.celery_e2e.workload import SCORE_INSTANCE

#: The floor's only Celery task.
FLOOR_TASK = "bench.floor"
#: What the messages' ``manager`` and ``storage`` carry (never read: the shape is what counts).
MANAGER_KEY = "bench-e2e"
STORAGE_KEY = "bench"
CREATE_APPLICANT_INSTANCE = "t_createApplicant#0"
#: The fires the floor's score is reached from (see the module docstring).
SCORE_STARTS_AT = frozenset({"observationsReceived"})
#: ``apply_async`` options of every floor message (a trigger task's, without trace headers).
PUBLISH_OPTIONS: Mapping[str, Any] = {"serializer": "json", "retry": True}


def message(session: str, instance: str) -> dict[str, str]:
    """Keyword arguments of the shape of a trigger task message."""
    return {
        "manager": MANAGER_KEY,
        "storage": STORAGE_KEY,
        "session": session,
        "instance": instance,
    }


def instance_for(trigger: str, kwargs: Mapping[str, Any]) -> str | None:
    """The instance a producer's fire publishes on the floor (None: publishes nothing)."""
    if trigger == "pageReceived":
        return f"t_page#{int(kwargs['page'])}"
    if trigger == "observationsReceived":
        return CREATE_APPLICANT_INSTANCE
    return None


def fire(app: Any, session: str, trigger: str, kwargs: Mapping[str, Any]) -> None:
    """What a producer does for one fire of the plan on the floor."""
    instance = instance_for(trigger, kwargs)
    if instance is not None:
        app.tasks[FLOOR_TASK].apply_async(kwargs=message(session, instance), **PUBLISH_OPTIONS)


def register(app: Any) -> None:
    """Register :data:`FLOOR_TASK` on ``app``."""

    @app.task(  # type: ignore[misc] # celery is untyped
        name=FLOOR_TASK,
        shared=False,  # this app's only: every app of the process registers its own
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        serializer="json",
        ignore_result=True,
    )
    def floor(self: Any, manager: str, storage: str, session: str, instance: str) -> None:
        record_effect(session, instance)
        time.sleep(TASK_SLEEP)
        if instance == CREATE_APPLICANT_INSTANCE:
            self.apply_async(kwargs=message(session, SCORE_INSTANCE), **PUBLISH_OPTIONS)
