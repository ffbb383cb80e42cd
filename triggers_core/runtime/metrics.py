"""Prometheus metrics of the shell (extra ``metrics``): an :class:`~.observe.Observer`.

Imported only when ``prometheus_client`` is installed (see :mod:`.observe`).
The metrics live in ``prometheus_client``'s default registry, created once per
process when this module is imported:

=====================================  =========  =======================================
metric                                 type       labels
=====================================  =========  =======================================
``triggers_fires_total``               counter    ``trigger``
``triggers_instances_total``           counter    ``task``, ``status``
``triggers_storage_conflicts_total``   counter    ``backend``
``triggers_recovered_total``           counter    ``task``, ``action``
``triggers_fire_duration_seconds``     histogram  ``backend``
``triggers_task_duration_seconds``     histogram  ``task``, ``status``
``triggers_schedule_to_start_seconds`` histogram  ``task``
``triggers_instances_lost``            gauge      (none)
``triggers_timers_overdue``            gauge      (none)
=====================================  =========  =======================================

Only committed work counts: a fire is counted when its transition is stored
(an application's fire and a cascade alike; a keyed fire found a duplicate
stores nothing and is not counted), and an instance counts once per status it
enters, read from the status timestamps of the committed instance (so an
attempt recomputed after a storage conflict never counts). Durations come from
the same timestamps (the clock of the process that committed them):
``triggers_task_duration_seconds`` from ``running`` to the status the run's
outcome left (``replayed`` for a retry), ``triggers_schedule_to_start_seconds``
from ``scheduled`` to ``running`` (queueing, plus any retry cooldown).

Label values are bounded: a trigger is its own label only if the session's
configuration uses it, else ``"other"``; task names come from configurations;
every value is cut to :data:`MAX_LABEL_LENGTH` characters, and past
:data:`MAX_LABEL_VALUES` distinct values of one label in a process, new ones
become ``"other"``. Session UIDs are never labels.

The per-fire cost is a few dictionary lookups and counter increments: it does
not grow with the session's history.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from triggers_core.engine.effects import TriggerFired
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.engine.transition import Transition
from triggers_core.runtime.observe import Observer
from triggers_core.runtime.storage import Storage

__all__ = [
    "FIRES",
    "FIRE_DURATION",
    "INSTANCES",
    "INSTANCES_LOST",
    "MAX_LABEL_LENGTH",
    "MAX_LABEL_VALUES",
    "OTHER",
    "RECOVERED",
    "SCHEDULE_TO_START",
    "STORAGE_CONFLICTS",
    "TASK_DURATION",
    "TIMERS_OVERDUE",
    "MetricsObserver",
    "metrics_observer",
]

#: The label value standing for every name that may not be a label of its own.
OTHER = "other"
#: Characters kept of a label value.
MAX_LABEL_LENGTH = 100
#: Distinct values one label takes in a process before new ones become :data:`OTHER`.
MAX_LABEL_VALUES = 500

_SHORT = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LONG = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

FIRES = Counter(
    "triggers_fires_total", "Committed fires of triggers (cascades included)", ["trigger"]
)
INSTANCES = Counter("triggers_instances_total", "Instances entering a status", ["task", "status"])
STORAGE_CONFLICTS = Counter(
    "triggers_storage_conflicts_total",
    "Compare-and-swaps that lost to another writer (the commit was computed again)",
    ["backend"],
)
RECOVERED = Counter(
    "triggers_recovered_total",
    "Instances a sweep moved on (taken over after a lost run, dispatched again)",
    ["task", "action"],
)
FIRE_DURATION = Histogram(
    "triggers_fire_duration_seconds",
    "Duration of an application's fire, dispatch included",
    ["backend"],
    buckets=_SHORT,
)
TASK_DURATION = Histogram(
    "triggers_task_duration_seconds",
    "From running to the status a run's outcome left the instance in",
    ["task", "status"],
    buckets=_LONG,
)
SCHEDULE_TO_START = Histogram(
    "triggers_schedule_to_start_seconds",
    "From scheduled to running (queueing delay and retry cooldown)",
    ["task"],
    buckets=_LONG,
)
INSTANCES_LOST = Gauge(
    "triggers_instances_lost",
    "Running instances whose lease had expired, found by the latest sweep",
    multiprocess_mode="mostrecent",
)
TIMERS_OVERDUE = Gauge(
    "triggers_timers_overdue",
    "Due timers not yet fired, found by the latest sweep",
    multiprocess_mode="mostrecent",
)

_RUNNING = Status.RUNNING.value
_SCHEDULED = Status.SCHEDULED.value


class _Bounded:
    """The label values one label may take (see the module)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        value = value[:MAX_LABEL_LENGTH]
        with self._lock:
            if value not in self._seen:
                if len(self._seen) >= MAX_LABEL_VALUES:
                    return OTHER
                self._seen.add(value)
        return value


def _seconds(since: object, until: object) -> float | None:
    if not isinstance(since, str) or not isinstance(until, str):
        return None
    try:
        delta = (datetime.fromisoformat(until) - datetime.fromisoformat(since)).total_seconds()
    except (TypeError, ValueError):  # stored data is not trusted
        return None
    return max(delta, 0.0)


class MetricsObserver(Observer):
    """Counts committed work into the module's metrics."""

    def __init__(self) -> None:
        self._trigger = _Bounded()
        self._task = _Bounded()
        self._children: dict[tuple[object, ...], Any] = {}
        self._instances: dict[tuple[str, str], Any] = {}
        self._fires: dict[str, Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def fire_begin(self, storage: Storage, trigger: str) -> Any:
        return storage.backend_name, time.perf_counter()

    def fire_end(
        self, token: Any, scheduled: int, duplicate: bool, error: BaseException | None
    ) -> None:
        took = time.perf_counter() - token[1]
        self._child(FIRE_DURATION, token[0]).observe(took)

    def conflict(self, storage: Storage, attempt: int) -> None:
        self._child(STORAGE_CONFLICTS, storage.backend_name).inc()

    def committed(self, storage: Storage, before: SessionState, transition: Transition) -> None:
        for effect in transition.effects:
            if type(effect) is TriggerFired:
                name = effect.trigger_name
                label = self._trigger(name) if transition.state.tasks.using(name) else OTHER
                counter = self._fires.get(label)
                if counter is None:
                    counter = self._fires[label] = FIRES.labels(label)
                counter.inc()
        if transition.changed:
            instances = transition.state.instances
            old = before.instances
            for name in transition.changed:
                instance = instances.get(name)
                if instance is not None:
                    self._entered(instance, old.get(name))

    def _entered(self, instance: TaskInstance, prior: TaskInstance | None) -> None:
        stamps = instance.metadata.get("timestamps")
        if not isinstance(stamps, dict):
            return
        known = prior.metadata.get("timestamps") if prior is not None else None
        if not isinstance(known, dict):
            known = {}
        task = self._task(instance.task_name)
        counters = self._instances
        for status, stamp in stamps.items():
            if known.get(status) == stamp:
                continue
            counter = counters.get((task, status))
            if counter is None:
                if status not in _STATUSES:  # stored data is not trusted
                    continue
                counter = counters[task, status] = INSTANCES.labels(task, status)
            counter.inc()
            if status == _RUNNING:
                delay = _seconds(stamps.get(_SCHEDULED), stamp)
                if delay is not None:
                    self._child(SCHEDULE_TO_START, task).observe(delay)
        if prior is not None and prior.status is Status.RUNNING:
            status = instance.status
            if status is not Status.RUNNING:
                took = _seconds(known.get(_RUNNING), stamps.get(status.value))
                if took is not None:
                    self._child(TASK_DURATION, task, status.value).observe(took)

    def recovered(self, task: str, action: str) -> None:
        self._child(RECOVERED, self._task(task), action[:MAX_LABEL_LENGTH]).inc()

    def swept(self, lost: int, overdue_timers: int) -> None:
        INSTANCES_LOST.set(lost)
        TIMERS_OVERDUE.set(overdue_timers)


_STATUSES = frozenset(s.value for s in Status)
_observer: MetricsObserver | None = None
_observer_lock = threading.Lock()


def metrics_observer() -> MetricsObserver:
    """The metrics observer of this process (one: the metrics are global)."""
    global _observer  # noqa: PLW0603 - one observer per process, like the metrics
    with _observer_lock:
        if _observer is None:
            _observer = MetricsObserver()
        return _observer
