"""The questionnaire workflow every Celery test drives, and the outcome it must reach.

Shared by the eager tests and the real-worker tests so both prove the same
behaviour: ``after`` in either order, ``andEvery`` over several pages,
``unless`` abandoning, cascades with result kwargs, ``withParams``, a failure
replayed with replacement kwargs, a skip with cascade, a self-skip, a
self-retry with cooldown, and ``MaxRetriesExceeded``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from triggers_core import Status, Storage, TaskInstance, TriggerManager

CONFIG = {
    "t_createApplicant": {
        "after": ["startSession", "observationsReceived"],
        "run": "triggers.PassThruTask",
    },
    "t_computeScore": {
        "after": ["t_createApplicant", "sessionFinalized"],
        "run": "celerytest.Score",
        "withParams": {"model": {"name": "m1", "weight": 2}},
    },
    "t_page": {
        "after": ["startSession"],
        "andEvery": "pageReceived",
        "run": "triggers.PassThruTask",
    },
    "t_reminder": {
        "after": ["startSession", "reminderDue"],
        "unless": ["sessionFinalized"],
        "run": "triggers.PassThruTask",
    },
    "t_divide": {"after": ["divideRequested"], "run": "celerytest.Divide"},
    "t_optional": {"after": ["sessionFinalized"], "run": "triggers.FailingTask"},
    "t_afterOptional": {"after": ["t_optional"], "run": "triggers.PassThruTask"},
    "t_shout": {"after": ["words"], "run": "celerytest.shout"},
    "t_afterShout": {"after": ["t_shout"], "run": "triggers.PassThruTask"},
    "t_cooldown": {"after": ["retryRequested"], "run": "celerytest.CooldownRetry"},
    "t_exhaust": {
        "after": ["retryRequested"],
        "run": "triggers.SelfRetryingTask",
        "withParams": {"retries": {"max": 5}},
    },
}

OPEN_STATUSES = (Status.SCHEDULED, Status.RUNNING)


def _busy(instance: TaskInstance) -> bool:
    if instance.status in OPEN_STATUSES:
        return True
    # A retry's clone waiting for its cooldown (a timer in the storage).
    return instance.status is Status.UNSTARTED and "retryCooldown" in instance.metadata


def settle(
    storage: Storage, timeout: float = 60.0, *, tick: Callable[[], object] | None = None
) -> None:
    """Poll until no instance is scheduled, running or waiting for a retry's cooldown.

    The store's clock (a worker's, or the in-process clock thread) fires the
    cooldowns; where none runs (eager mode), ``tick`` applies what fell due.
    """
    deadline = time.monotonic() + timeout
    while True:
        busy = [i.name for i in storage.get_unresolved_instances() if _busy(i)]
        if not busy:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"still scheduled/running/cooling after {timeout}s: {busy}")
        if tick is not None:
            tick()
        time.sleep(0.05)


def drive(
    manager: TriggerManager,
    *,
    applicant_first: bool,
    wait: Callable[[], None],
) -> None:
    """Fire the whole questionnaire, then replay and skip the failures."""
    manager.update_configuration(CONFIG)
    start = ("startSession", {"respondent": "r1"})
    observations = ("observationsReceived", {"answers": [1, 2, 3]})
    for name, kwargs in [start, observations] if applicant_first else [observations, start]:
        manager.fire(name, kwargs)
    for page in range(3):
        manager.fire("pageReceived", {"page": page})
    manager.fire("divideRequested", {"numerator": 1, "denominator": 0})
    manager.fire("words", {})
    manager.fire("retryRequested")
    manager.fire("sessionFinalized", {"final": True})
    wait()
    manager.replay_failed_instance(
        "t_divide#0", {"divideRequested": {"numerator": 1, "denominator": 4}}
    )
    manager.skip_failed_instance("t_optional#0", cascade=True, result={"optional": "skipped"})
    wait()


def check(storage: Storage, *, cooldowns: bool) -> None:
    """Assert every final status and result, read back from the storage."""
    instances = storage.instances
    statuses = {name: inst.status.value for name, inst in instances.items()}
    assert statuses == {
        "t_createApplicant#0": "finished",
        "t_computeScore#0": "finished",
        "t_page#0": "finished",
        "t_page#1": "finished",
        "t_page#2": "finished",
        "t_reminder#0": "abandoned",
        "t_divide#0": "replayed",
        "t_divide#1": "finished",
        "t_optional#0": "skipped",
        "t_afterOptional#0": "finished",
        "t_shout#0": "skipped",
        "t_cooldown#0": "replayed",
        "t_cooldown#1": "replayed",
        "t_cooldown#2": "finished",
        "t_exhaust#0": "replayed",
        "t_exhaust#1": "replayed",
        "t_exhaust#2": "replayed",
        "t_exhaust#3": "failed",
    }, storage.debug_repr()

    def result(name: str) -> object:
        return instances[name].metadata["result"]

    # cascade with result kwargs, withParams deep-merged under them
    assert result("t_createApplicant#0") == {
        "kwargs": {
            "startSession": {"respondent": "r1"},
            "observationsReceived": {"answers": [1, 2, 3]},
        }
    }
    assert result("t_computeScore#0") == {"score": 12, "model": "m1"}
    pages = [result(f"t_page#{n}")["kwargs"]["pageReceived"]["page"] for n in range(3)]  # type: ignore[index]
    assert pages == [0, 1, 2]
    # failure details, then the replay with replacement kwargs
    failed = instances["t_divide#0"]
    assert failed.metadata["exceptionType"] == "builtins.ZeroDivisionError"
    assert "Traceback" in failed.metadata["exceptionInfo"]
    assert "ZeroDivisionError" in failed.metadata["exceptionInfo"]
    assert failed.metadata["exceptionContext"] == {"denominator": 0}
    assert failed.log_level == logging.ERROR
    assert result("t_divide#1") == {"quotient": 0.25}
    assert instances["t_divide#1"].metadata["parent"] == "t_divide#0"
    assert instances["t_divide#1"].log_level == logging.WARNING
    # skip with cascade; a self-skip does not cascade
    assert result("t_afterOptional#0") == {"kwargs": {"t_optional": {"optional": "skipped"}}}
    assert instances["t_shout#0"].metadata["reason"] == "nothing to shout"
    assert [t.name for t in storage.get_unresolved_tasks()] == ["t_afterShout", "t_exhaust"]
    # self-retry with cooldown, then MaxRetriesExceeded
    assert result("t_cooldown#2") == {"retries": 2}
    assert instances["t_cooldown#2"].retries == 2
    if cooldowns:
        for n in (1, 2):
            meta = instances[f"t_cooldown#{n}"].metadata
            waited = _at(meta["timestamps"]["running"]) - _at(meta["created"])
            assert waited >= 0.9, (n, waited)
    assert instances["t_exhaust#3"].metadata["exceptionType"].endswith("MaxRetriesExceeded")


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()
