"""Issue 25: Prometheus metrics count committed work, with bounded labels.

Read through ``prometheus_client``'s default registry (deltas: other tests of
the process count too). Each test watches with a fresh
:class:`~triggers_core.runtime.metrics.MetricsObserver`, so label bounds start empty.
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import REGISTRY

import triggers_core.testing.sample_tasks  # noqa: F401 - registers the sample tasks
from triggers_core import (
    MemoryStore,
    Status,
    ThreadingTaskRunner,
    TriggerManager,
    engine,
)
from triggers_core.engine.leases import Lease
from triggers_core.runtime import metrics, observe
from triggers_core.runtime.memory import MemoryStorage
from triggers_core.runtime.recovery import sweep_store

WORKFLOW = {
    "t_obsOk": {"after": ["go"], "run": "triggers.PassThruTask"},
    "t_obsNext": {"after": ["t_obsOk"], "run": "triggers.DevNullTask"},
    "t_obsFail": {"after": ["go"], "run": "triggers.FailingTask"},
    "t_obsRetry": {
        "after": ["go"],
        "run": "triggers.SelfRetryingTask",
        "withParams": {"retries": {"max": 2}},
    },
    "t_obsSkip": {"after": ["go"], "run": "triggers.SelfSkippingTask"},
    "t_obsKeyed": {"after": ["keyed"], "run": "triggers.DevNullTask"},
}


@pytest.fixture
def watcher() -> Iterator[metrics.MetricsObserver]:
    observer = metrics.MetricsObserver()
    observe.configure(metrics=False, tracing=False, observers=[observer])
    try:
        yield observer
    finally:
        observe.configure()


def samples(name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of metric ``name`` by its sorted labels."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def delta(
    before: dict[tuple[tuple[str, str], ...], float],
    after: dict[tuple[tuple[str, str], ...], float],
) -> dict[tuple[tuple[str, str], ...], float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def test_counters_match_the_status_histories_after_failure_retry_skip_replay(
    watcher: metrics.MetricsObserver,
) -> None:
    names = (
        "triggers_instances_total",
        "triggers_fires_total",
        "triggers_task_duration_seconds_count",
        "triggers_schedule_to_start_seconds_count",
    )
    before = {name: samples(name) for name in names}
    runner = ThreadingTaskRunner()
    manager = TriggerManager(
        MemoryStorage(f"obs-{uuid.uuid4().hex}"), runners={"threading": runner}
    )
    manager.update_configuration(WORKFLOW)
    manager.fire("go")
    runner.join_all()
    manager.replay_failed_instance("t_obsFail#0")
    runner.join_all()
    manager.skip_failed_instance("t_obsFail#1")
    assert manager.fire_result("keyed", idempotency_key="k1").duplicate is False
    assert manager.fire_result("keyed", idempotency_key="k1").duplicate is True
    runner.join_all()
    manager.fire("nobody-uses-this")
    # Other tests' leftover threads may still count in this process's registry: look at
    # this workflow's tasks only (their names are this test's own).
    ours = set(WORKFLOW)
    changed = {
        name: {
            k: v
            for k, v in delta(before[name], samples(name)).items()
            if name == "triggers_fires_total" or dict(k).get("task") in ours
        }
        for name in names
    }
    fires = changed["triggers_fires_total"]
    other = fires.pop((("trigger", "other"),), 0.0)
    changed["triggers_fires_total"] = {
        k: v for k, v in fires.items() if dict(k)["trigger"] in ours | {"go", "keyed"}
    }

    instances = list(manager.storage.instances.values())
    statuses = {i.name: i.status for i in instances}
    assert statuses["t_obsFail#0"] is Status.REPLAYED
    assert statuses["t_obsFail#1"] is Status.SKIPPED
    assert statuses["t_obsRetry#2"] is Status.FINISHED
    assert statuses["t_obsSkip#0"] is Status.SKIPPED
    assert statuses["t_obsNext#0"] is Status.FINISHED

    # One increment per status each instance entered: its status timestamps.
    expected: collections.Counter[tuple[tuple[str, str], ...]] = collections.Counter()
    for instance in instances:
        for status in instance.metadata["timestamps"]:
            expected[(("status", status), ("task", instance.task_name))] += 1
    assert changed["triggers_instances_total"] == {k: float(v) for k, v in expected.items()}
    assert expected[(("status", "failed"), ("task", "t_obsFail"))] == 2
    assert expected[(("status", "replayed"), ("task", "t_obsRetry"))] == 2

    # Fires: the application's go, the cascades that a task uses (t_obsOk), one keyed
    # fire (the duplicate is not one); cascades nobody uses and the unknown trigger: other.
    assert changed["triggers_fires_total"] == {
        (("trigger", "go"),): 1.0,
        (("trigger", "t_obsOk"),): 1.0,  # t_obsOk's cascade: t_obsNext uses it
        (("trigger", "keyed"),): 1.0,  # once: the duplicate is no fire
    }
    # the cascades of t_obsNext, t_obsRetry, t_obsKeyed and the unknown trigger (and any
    # other test's leftovers: this label is shared)
    assert other >= 4.0

    runs = collections.Counter(
        (("status", ended(i.metadata["timestamps"])), ("task", i.task_name))
        for i in instances
        if "running" in i.metadata["timestamps"]
    )
    assert changed["triggers_task_duration_seconds_count"] == {k: float(v) for k, v in runs.items()}
    started = collections.Counter(
        (("task", i.task_name),) for i in instances if "running" in i.metadata["timestamps"]
    )
    assert changed["triggers_schedule_to_start_seconds_count"] == {
        k: float(v) for k, v in started.items()
    }


def ended(stamps: dict[str, str]) -> str:
    """The status a run's commit left: the first after ``running`` (a retry: ``replayed``)."""
    after = sorted((at, status) for status, at in stamps.items() if at > stamps["running"])
    first = {status for at, status in after if at == after[0][0]}
    return "replayed" if "replayed" in first else first.pop()


def test_conflicts_recoveries_and_sweep_gauges(watcher: metrics.MetricsObserver) -> None:
    before = samples("triggers_storage_conflicts_total")
    storage = MemoryStorage(f"obs-{uuid.uuid4().hex}")
    watcher.conflict(storage, 0)
    watcher.conflict(storage, 1)
    assert delta(before, samples("triggers_storage_conflicts_total")) == {
        (("backend", "memory"),): 2.0
    }
    recovered = samples("triggers_recovered_total")
    runner = ThreadingTaskRunner()
    manager = TriggerManager(
        MemoryStorage(f"obs-{uuid.uuid4().hex}", MemoryStore()), runners={"threading": runner}
    )
    manager.update_configuration({"t_obsLost": {"after": ["go"], "run": "triggers.DevNullTask"}})
    # Start t_obsLost#0 as a worker would, under a lease, then "die": nobody renews it.
    loaded = manager.storage.load_full()
    fired = engine.fire(loaded.state, "go", now=manager.now())
    manager.storage.compare_and_swap(loaded.version, fired.state, fired.changes)
    loaded = manager.storage.load_full()
    lease = Lease("dead-run", manager.now() + timedelta(seconds=0.2), 0.2, {"host": "gone"})
    started = engine.mark_running(loaded.state, "t_obsLost#0", now=manager.now(), lease=lease)
    manager.storage.compare_and_swap(loaded.version, started.state, started.changes)
    time.sleep(0.3)
    report = sweep_store(
        manager.storage, lambda s: TriggerManager(s, runners={"threading": runner})
    )
    runner.join_all()
    assert [(a.instance, a.action) for a in report.acted] == [("t_obsLost#0", "taken over")]
    assert delta(recovered, samples("triggers_recovered_total")) == {
        (("action", "taken over"), ("task", "t_obsLost")): 1.0
    }
    assert samples("triggers_instances_lost") == {(): 1.0}
    assert samples("triggers_timers_overdue") == {(): 0.0}


def test_ten_thousand_sessions_keep_the_label_sets_bounded(
    watcher: metrics.MetricsObserver,
) -> None:
    config = {"t_obsBound": {"after": ["tick"], "run": "triggers.DevNullTask"}}

    class Recording(ThreadingTaskRunner):
        def dispatch(self, manager: object, effect: object) -> None:
            """Runs nothing: the fire is what is counted."""

    runner = Recording()
    before = samples("triggers_fires_total")
    instances = samples("triggers_instances_total")
    for n in range(10_000):
        manager = TriggerManager(MemoryStorage(uuid.uuid4().hex), runners={"threading": runner})
        if n % 1000 == 1:  # some sessions configure, every one fires a trigger of its own
            manager.update_configuration(config)
        manager.fire("tick" if n % 2 else f"unknown-{uuid.uuid4().hex}")
    fired = delta(before, samples("triggers_fires_total"))
    # 5,000 unknown names and 4,990 fires of "tick" where no task uses it: "other".
    assert fired == {(("trigger", "other"),): 9_990.0, (("trigger", "tick"),): 10.0}
    assert watcher._trigger._seen == {"tick"}
    assert watcher._task._seen == {"t_obsBound"}
    for key in delta(instances, samples("triggers_instances_total")):
        assert dict(key)["task"] == "t_obsBound"  # never a session uid


def test_label_values_are_capped_in_number_and_length() -> None:
    bounded = metrics._Bounded()
    values = {bounded(f"name-{n}") for n in range(metrics.MAX_LABEL_VALUES + 50)}
    assert len(values) == metrics.MAX_LABEL_VALUES + 1
    assert metrics.OTHER in values
    assert bounded("known-" + "x" * 500) in {"known-" + "x" * 94, metrics.OTHER}


def test_histogram_observations_from_many_threads_are_never_lost() -> None:
    """Observations take no lock (a queue per series, folded by scrapes and every
    few hundred values): 8 threads observing at once lose none, and the buckets,
    count and sum a scrape reads agree with what was observed."""
    import threading

    label = f"threads-{uuid.uuid4().hex[:8]}"
    series = metrics._STORE.series(metrics.FIRE_DURATION, (label,))
    per_thread, threads = 5_000, 8
    values = (0.0001, 0.003, 0.2, 42.0)  # under the first bound, mid, high, past the last
    start = threading.Barrier(threads)

    def observe() -> None:
        start.wait()
        for index in range(per_thread):
            series.observe(values[index % len(values)])

    workers = [threading.Thread(target=observe) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    total = per_thread * threads
    count = samples("triggers_fire_duration_seconds_count")[(("backend", label),)]
    assert count == total
    summed = samples("triggers_fire_duration_seconds_sum")[(("backend", label),)]
    assert summed == pytest.approx(sum(values) * total / len(values))
    buckets = samples("triggers_fire_duration_seconds_bucket")
    assert buckets[(("backend", label), ("le", "0.0005"))] == total / 4
    assert buckets[(("backend", label), ("le", "0.005"))] == total / 2
    assert buckets[(("backend", label), ("le", "0.25"))] == total * 3 / 4
    assert buckets[(("backend", label), ("le", "10.0"))] == total * 3 / 4
    assert buckets[(("backend", label), ("le", "+Inf"))] == total
    assert not series.pending  # the scrape folded everything in
