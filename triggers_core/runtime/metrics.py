"""Prometheus metrics of the shell (extra ``metrics``): an :class:`~.observe.Observer`.

Imported only when ``prometheus_client`` is installed (see :mod:`.observe`).
The metrics are registered in ``prometheus_client``'s default registry
(``REGISTRY``) when this module is imported:

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
from ``scheduled`` to ``running`` (queueing; a retry's cooldown is served before
the clone is scheduled, so it does not count).

Label values are bounded: a trigger is its own label only if the session's
configuration uses it, else ``"other"``; task names come from configurations;
every value is cut to :data:`MAX_LABEL_LENGTH` characters, and past
:data:`MAX_LABEL_VALUES` distinct values of one label in a process, new ones
become ``"other"``. Session UIDs are never labels.

How they are kept: in a single process (no ``PROMETHEUS_MULTIPROC_DIR``),
counts are ``itertools.count`` steps and histogram observations are appended to
a queue per series, folded into plain bucket counts when the registry is
scraped (or every :data:`_FOLD_AT` observations): the fire path takes no lock
(see BENCHMARKS.md for what a fire then costs). With ``PROMETHEUS_MULTIPROC_DIR``
set (prefork workers, several web processes) they are ``prometheus_client``'s
own multiprocess metrics, so any process of the set can expose them all. The
cost per fire does not grow with the session's history.
"""

from __future__ import annotations

import bisect
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from triggers_core.engine.effects import TriggerFired
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.engine.transition import Transition
from triggers_core.runtime.observe import Observer
from triggers_core.runtime.storage import Storage

__all__ = [
    "INSTANCES_LOST",
    "MAX_LABEL_LENGTH",
    "MAX_LABEL_VALUES",
    "METRICS",
    "OTHER",
    "TIMERS_OVERDUE",
    "MetricSpec",
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


class MetricSpec:
    """One counter or histogram: its name (without ``_total``), help, labels, buckets."""

    def __init__(
        self, name: str, doc: str, labels: Sequence[str], buckets: Sequence[float] = ()
    ) -> None:
        self.name = name
        self.doc = doc
        self.labels = tuple(labels)
        self.buckets = tuple(buckets)  # empty: a counter


FIRES = MetricSpec("triggers_fires", "Committed fires of triggers (cascades included)", ["trigger"])
INSTANCES = MetricSpec("triggers_instances", "Instances entering a status", ["task", "status"])
STORAGE_CONFLICTS = MetricSpec(
    "triggers_storage_conflicts",
    "Compare-and-swaps that lost to another writer (the commit was computed again)",
    ["backend"],
)
RECOVERED = MetricSpec(
    "triggers_recovered",
    "Instances a sweep moved on (taken over after a lost run, dispatched again)",
    ["task", "action"],
)
FIRE_DURATION = MetricSpec(
    "triggers_fire_duration_seconds",
    "Duration of an application's fire, dispatch included",
    ["backend"],
    _SHORT,
)
TASK_DURATION = MetricSpec(
    "triggers_task_duration_seconds",
    "From running to the status a run's outcome left the instance in",
    ["task", "status"],
    _LONG,
)
SCHEDULE_TO_START = MetricSpec(
    "triggers_schedule_to_start_seconds",
    "From scheduled to running (queueing delay)",
    ["task"],
    _LONG,
)
#: The counters and histograms, in exposition order.
METRICS = (
    FIRES,
    INSTANCES,
    STORAGE_CONFLICTS,
    RECOVERED,
    FIRE_DURATION,
    TASK_DURATION,
    SCHEDULE_TO_START,
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
_STATUSES = frozenset(s.value for s in Status)


class _Series:
    """One labelled series: a count, or a histogram's buckets (not cumulative) and sum."""

    __slots__ = (
        "bounds",
        "buckets",
        "child",
        "count",
        "labels",
        "lock",
        "metric",
        "pending",
        "value",
    )

    def __init__(self, metric: MetricSpec, labels: tuple[str, ...], child: Any, lock: Any) -> None:
        self.metric = metric
        self.labels = labels
        self.bounds = metric.buckets
        #: A counter's count: ``next()`` on an ``itertools.count`` is one atomic step in
        #: CPython, so counting takes no lock (read back by :func:`_counted`). In
        #: multiprocess mode ``next()`` increments the ``prometheus_client`` child.
        self.count: Iterator[int] = itertools.count() if child is None else _Inc(child)
        self.value = 0.0  # a histogram's sum
        self.buckets = [0.0] * (len(metric.buckets) + 1)  # +Inf last
        #: The ``prometheus_client`` child that keeps it in multiprocess mode, else None.
        self.child = child
        #: The store's lock: held while observations are folded into the buckets and sum.
        self.lock = lock
        #: Observations not yet folded in (appending to a deque is one atomic step).
        self.pending: deque[float] = deque()

    def observe(self, value: float) -> None:
        """Observe ``value`` seconds (a histogram).

        Takes no lock: the value joins :attr:`pending`, folded into the buckets
        when a scrape collects the series or, past :data:`_FOLD_AT` values, by
        the observing thread (if no other thread is folding at that moment).
        """
        if self.child is not None:
            self.child.observe(value)
            return
        pending = self.pending
        pending.append(value)
        if len(pending) >= _FOLD_AT and self.lock.acquire(blocking=False):
            try:
                self.fold()
            finally:
                self.lock.release()

    def fold(self) -> None:
        """Move the pending observations into the buckets and sum (the caller holds the lock)."""
        popleft = self.pending.popleft
        bounds = self.bounds
        buckets = self.buckets
        total = 0.0
        while True:
            try:
                value = popleft()
            except IndexError:
                break
            buckets[bisect.bisect_left(bounds, value)] += 1.0
            total += value
        self.value += total


#: Pending observations of one histogram series that make the observing thread fold them.
_FOLD_AT = 256


class _Inc(Iterator[int]):
    """``next()`` increments a ``prometheus_client`` counter child (multiprocess mode)."""

    __slots__ = ("child",)

    def __init__(self, child: Any) -> None:
        self.child = child

    def __next__(self) -> int:
        self.child.inc()
        return 0


class _Store(Collector):
    """Every series of this process.

    In a single process counts are ``itertools.count`` objects and histograms
    plain floats under one lock, read by :meth:`collect` when the registry is
    scraped. In multiprocess mode each series is a ``prometheus_client`` child
    (which writes to the ``PROMETHEUS_MULTIPROC_DIR`` files).
    """

    def __init__(self, shared: bool) -> None:
        self.lock = threading.Lock()
        self.shared = shared
        self._series: dict[tuple[MetricSpec, tuple[str, ...]], _Series] = {}
        self._metrics: dict[MetricSpec, Any] = {}
        if shared:
            for metric in METRICS:
                if metric.buckets:
                    made: Any = Histogram(
                        metric.name, metric.doc, metric.labels, buckets=metric.buckets
                    )
                else:
                    made = Counter(metric.name, metric.doc, metric.labels)
                self._metrics[metric] = made

    def series(self, metric: MetricSpec, labels: tuple[str, ...]) -> _Series:
        """The series of ``metric`` with ``labels`` (created once)."""
        found = self._series.get((metric, labels))
        if found is None:
            with self.lock:
                found = self._series.get((metric, labels))
                if found is None:
                    child = self._metrics[metric].labels(*labels) if self.shared else None
                    found = _Series(metric, labels, child, self.lock)
                    self._series[metric, labels] = found
        return found

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            every = list(self._series.values())
            for series in every:
                if series.pending:
                    series.fold()
            found = [
                (series.metric, series.labels, _counted(series), list(series.buckets))
                for series in every
            ]
        for metric in METRICS:
            if not metric.buckets:
                counter = CounterMetricFamily(metric.name, metric.doc, labels=metric.labels)
                for spec, labels, value, _ in found:
                    if spec is metric:
                        counter.add_metric(labels, value)
                yield counter
                continue
            family = HistogramMetricFamily(metric.name, metric.doc, labels=metric.labels)
            bounds = [*(repr(float(b)) for b in metric.buckets), "+Inf"]
            for spec, labels, total, buckets in found:
                if spec is metric:
                    cumulative = list(itertools.accumulate(buckets))
                    family.add_metric(labels, list(zip(bounds, cumulative, strict=True)), total)
            yield family


def _counted(series: _Series) -> float:
    """A counter's count, else a histogram's sum (``repr(count(7))`` is ``"count(7)"``)."""
    if series.metric.buckets:
        return series.value
    return float(repr(series.count)[6:-1])


def _make_store() -> _Store:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return _Store(shared=True)
    store = _Store(shared=False)
    REGISTRY.register(store)
    return store


_STORE = _make_store()


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


class _TaskSeries:
    """The series of one task label, by status (cached per task name)."""

    __slots__ = ("by_status", "label")

    def __init__(self, label: str) -> None:
        self.label = label
        self.by_status: dict[str, _Series] = {}


class MetricsObserver(Observer):
    """Counts committed work into the module's metrics.

    The series of names that are labels of their own are cached by name, so a
    commit costs a few dictionary lookups and one lock.
    """

    def __init__(self) -> None:
        self._trigger = _Bounded()
        self._task = _Bounded()
        self._store = _STORE
        self._fires: dict[str, _Series] = {}
        self._other_fires = _STORE.series(FIRES, (OTHER,))
        self._tasks: dict[str, _TaskSeries] = {}
        self._fire_durations: dict[str, _Series] = {}

    def _fire_series(self, name: str) -> _Series:
        label = self._trigger(name)
        series = self._store.series(FIRES, (label,))
        if label == name:
            self._fires[name] = series
        return series

    def _task_series(self, name: str) -> _TaskSeries:
        found = self._tasks.get(name)
        if found is None:
            found = _TaskSeries(self._task(name))
            if found.label == name:
                self._tasks[name] = found
        return found

    def fire_begin(self, storage: Storage, trigger: str) -> Any:
        series = self._fire_durations.get(storage.backend_name)
        if series is None:
            name = storage.backend_name
            series = self._fire_durations[name] = self._store.series(FIRE_DURATION, (name,))
        return series, time.perf_counter()

    def fire_end(
        self, token: Any, scheduled: int, duplicate: bool, error: BaseException | None
    ) -> None:
        series, began = token
        series.observe(time.perf_counter() - began)

    def conflict(self, storage: Storage, attempt: int) -> None:
        next(self._store.series(STORAGE_CONFLICTS, (storage.backend_name,)).count)

    def committed(self, storage: Storage, before: SessionState, transition: Transition) -> None:
        for effect in transition.effects:
            if type(effect) is TriggerFired:
                name = effect.trigger_name
                if not transition.state.tasks.using(name):
                    next(self._other_fires.count)
                else:
                    next((self._fires.get(name) or self._fire_series(name)).count)
        if transition.changed:
            instances = transition.state.instances
            old = before.instances
            for name in transition.changed:
                instance = instances.get(name)
                if instance is not None:
                    self._entered(instance, old.get(name))

    def _entered(self, instance: TaskInstance, prior: TaskInstance | None) -> None:
        """Count the statuses ``instance`` entered since ``prior``; observe its durations."""
        stamps = instance.metadata.get("timestamps")
        if type(stamps) is not dict:
            return
        known = prior.metadata.get("timestamps") if prior is not None else _NONE
        if type(known) is not dict:
            known = _NONE
        task = self._tasks.get(instance.task_name) or self._task_series(instance.task_name)
        by_status = task.by_status
        for status, stamp in stamps.items():
            if known.get(status) == stamp:
                continue
            series = by_status.get(status)
            if series is None:
                if status not in _STATUSES:  # stored data is not trusted
                    continue
                series = by_status[status] = self._store.series(INSTANCES, (task.label, status))
            next(series.count)
            if status == _RUNNING:
                delay = _seconds(stamps.get(_SCHEDULED), stamp)
                if delay is not None:
                    self._store.series(SCHEDULE_TO_START, (task.label,)).observe(delay)
        if prior is not None and prior.status is Status.RUNNING:
            status = instance.status.value
            if status != _RUNNING:
                took = _seconds(known.get(_RUNNING), stamps.get(status))
                if took is not None:
                    self._store.series(TASK_DURATION, (task.label, status)).observe(took)

    def recovered(self, task: str, action: str) -> None:
        labels = (self._task(task), action[:MAX_LABEL_LENGTH])
        next(self._store.series(RECOVERED, labels).count)

    def swept(self, lost: int, overdue_timers: int) -> None:
        INSTANCES_LOST.set(lost)
        TIMERS_OVERDUE.set(overdue_timers)


_NONE: dict[str, Any] = {}
_observer: MetricsObserver | None = None
_observer_lock = threading.Lock()


def metrics_observer() -> MetricsObserver:
    """The metrics observer of this process (one: the metrics are global)."""
    global _observer  # noqa: PLW0603 - one observer per process, like the metrics
    with _observer_lock:
        if _observer is None:
            _observer = MetricsObserver()
        return _observer
