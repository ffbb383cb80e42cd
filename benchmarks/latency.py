"""Fire latency against what a session already holds: is a fire's cost flat?

Two shapes, each fired round-robin across its sizes (one fire per session per
round) so that a neighbour's load on a shared machine slows every size alike
and cancels out of the ratios:

* *waiting*: N unstarted instances of ``t_tick`` (``after: [never], andEvery:
  tick``) wait for a trigger that never fires; each fire of ``tick`` creates one
  more and changes none of them. After each timed fire the new instance is
  abandoned (untimed) so N stays put.
* *history*: N finished instances of ``t_every`` (``after: [tick], andEvery:
  tick``); each timed fire schedules a new one, finished afterwards (untimed).

Sessions are seeded with the pure engine and written in one commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from benchmarks.common import StorageFactory, clock, median_ms, recording_manager, store_state, uid
from triggers_core import SessionState, Status, TaskInstance, TriggerManager
from triggers_core import engine as pure

WAITING_CONFIG = {"t_tick": {"after": ["never"], "andEvery": "tick", "run": "bench_task"}}
HISTORY_CONFIG = {"t_every": {"after": ["tick"], "andEvery": "tick", "run": "bench_task"}}


def waiting_state(n: int) -> SessionState:
    """``n`` instances of ``t_tick`` waiting for ``never``, built with the engine."""
    now = clock()
    state = pure.update_configuration(SessionState(), WAITING_CONFIG).state
    for i in range(n):
        state = pure.fire(state, "tick", {"i": i, "payload": "x" * 64}, now=now()).state
    return state


def history_state(n: int) -> SessionState:
    """``n`` finished instances of ``t_every``, as the engine leaves them (built directly:
    running 10,000 fires through the engine on one growing state takes a while)."""
    tasks = pure.update_configuration(SessionState(), HISTORY_CONFIG).state.tasks
    start = datetime(2024, 1, 1, tzinfo=UTC)
    instances = {}
    for i in range(n):
        stamp = (start + timedelta(seconds=i)).isoformat()
        kwargs = {"tick": {"i": i, "payload": "x" * 64}}
        instances[f"t_every#{i}"] = TaskInstance(
            name=f"t_every#{i}",
            task_name="t_every",
            status=Status.FINISHED,
            kwargs=kwargs,
            metadata={
                "created": stamp,
                "lastModified": stamp,
                "timestamps": dict.fromkeys(
                    ("unstarted", "scheduled", "running", "finished"), stamp
                ),
                "depth": 0,
                "actualKwargs": kwargs,
                "result": {"ok": True, "i": i},
            },
        )
    latest = {"tick": {"i": n - 1}} if n else {}
    return SessionState(
        tasks=tasks, instances=instances, latest_kwargs=latest, counters={"t_every": n}
    )


def _round_robin(
    managers: Sequence[TriggerManager],
    fires: int,
    warmup: int,
    after: Callable[[TriggerManager], None],
) -> list[float]:
    samples: list[list[float]] = [[] for _ in managers]
    for n in range(warmup + fires):
        for index, manager in enumerate(managers):
            began = time.perf_counter()
            manager.fire("tick", {"n": n})
            elapsed = time.perf_counter() - began
            if n >= warmup:
                samples[index].append(elapsed)
            after(manager)
    return [median_ms(each) for each in samples]


def waiting(make: StorageFactory, sizes: Sequence[int], fires: int, warmup: int) -> list[float]:
    """Median ms per fire of ``tick`` with each of ``sizes`` instances waiting."""
    managers = []
    for size in sizes:
        storage = make(uid(f"waiting{size}"))
        store_state(storage, waiting_state(size))
        managers.append(recording_manager(storage)[0])

    def keep_n(manager: TriggerManager) -> None:
        newest = manager.storage.load().state.counters["t_tick"] - 1
        manager.update_instance_status(f"t_tick#{newest}", Status.ABANDONED)

    medians = _round_robin(managers, fires, warmup, keep_n)
    for size, manager in zip(sizes, managers, strict=True):
        state = manager.storage.load_full().state
        waiting_now = [i for i in state.instances.values() if i.status is Status.UNSTARTED]
        assert len(waiting_now) == size, (size, len(waiting_now))
    return medians


def history(make: StorageFactory, sizes: Sequence[int], fires: int, warmup: int) -> list[float]:
    """Median ms per fire of ``tick`` with each of ``sizes`` finished instances."""
    managers = []
    for size in sizes:
        storage = make(uid(f"history{size}"))
        store_state(storage, history_state(size))
        managers.append(recording_manager(storage)[0])

    def finish_newest(manager: TriggerManager) -> None:
        newest = manager.storage.load().state.counters["t_every"] - 1
        manager.update_instance_status(f"t_every#{newest}", Status.FINISHED)

    medians = _round_robin(managers, fires, warmup, finish_newest)
    for size, manager in zip(sizes, managers, strict=True):
        state = manager.storage.load_full().state
        assert len(state.instances) == size + warmup + fires
        assert {i.status for i in state.instances.values()} <= {Status.FINISHED}
    return medians
