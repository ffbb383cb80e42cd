"""Property: computing the outcome on the start's snapshot stores what a fresh load would.

For random configurations and fire sequences, with other writers firing into
the session between some instances' start and finish (through storage objects
of their own, as other processes would), the stored session after every
instance ran is the same whether each outcome's first attempt computes on the
snapshot its start left (issue 22) or loads first. A stale snapshot that a
storage let through would store a different state (a cascade into a new
instance, a lost fire, a counter behind).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from triggers_core import MemoryStorage, MemoryStore, TriggerManager
from triggers_core.engine.state import SessionState, TaskInstance
from triggers_core.runtime import shell_run
from triggers_core.testing.sample_tasks import PassThruTask
from triggers_core.testing.storage_contract import RecordingRunner
from triggers_core.testing.strategies import task_configurations, trigger_sequences

UID = "carried-property"


def _clock() -> Callable[[], datetime]:
    ticks = iter(range(10**9))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return lambda: start + timedelta(seconds=next(ticks))


@contextmanager
def _loading_first() -> Iterator[None]:
    """Every outcome's commit loads first (the snapshot its start left is dropped)."""
    original = shell_run._run_started

    def loaded(*args: Any, started: Any, **kwargs: Any) -> Any:
        return original(*args, started=None, **kwargs)

    with mock.patch.object(shell_run, "_run_started", loaded):
        yield


def _run(
    config: dict[str, Any],
    fires: list[tuple[str, dict[str, Any]]],
    during: list[bool],
) -> SessionState:
    """Fire ``fires`` in order; run every scheduled instance (first in, first out); a fire
    whose ``during`` flag is set goes in while the instance before it runs (between its
    start and its outcome), through another storage object."""
    store = MemoryStore()
    clock = _clock()
    runner = RecordingRunner()
    manager = TriggerManager(
        MemoryStorage(UID, store), runners={"rec": runner}, default_runner="rec", clock=clock
    )
    other = TriggerManager(
        MemoryStorage(UID, store), runners={"rec": runner}, default_runner="rec", clock=clock
    )
    manager.update_configuration(config)
    pending: deque[tuple[tuple[str, dict[str, Any]], bool]] = deque(zip(fires, during, strict=True))
    ran = 0

    def drain() -> None:
        nonlocal ran
        while runner.dispatched[ran:]:
            name = runner.dispatched[ran]
            ran += 1
            hook = None
            if pending and pending[0][1]:
                (trigger, kwargs), _ = pending.popleft()

                def hook(_: TaskInstance, t: str = trigger, k: Any = kwargs) -> None:
                    other.fire(t, k)

            manager.run_instance(name, on_started=hook, guard_cascade=True)

    while pending:
        (trigger, kwargs), _ = pending.popleft()
        manager.fire(trigger, kwargs)
        drain()
    drain()
    return MemoryStorage(UID, store).load_full().state


#: Metadata that differs from run to run: the lease (a random owner) and the times (a
#: conflict computes again, reading the test clock once more).
_RUN_SPECIFIC = frozenset(
    {"owner", "worker", "lease", "leaseExpires", "lastModified", "timestamps", "created"}
)


def _stored(state: SessionState) -> dict[str, Any]:
    """What the session holds, without what differs from run to run."""
    return {
        "instances": {
            name: (
                i.status.value,
                i.task_name,
                i.kwargs,
                i.retries,
                {k: v for k, v in i.metadata.items() if k not in _RUN_SPECIFIC},
            )
            for name, i in state.instances.items()
        },
        "counters": dict(state.counters),
        "unsettled": dict(state.unsettled),
        "settled": dict(state.settled),
        "latest": {t: dict(state.latest_kwargs[t]) for t in state.latest_kwargs},
        "records": sorted((k.trigger, k.digest, v) for k, v in state.fire_records.items()),
    }


@st.composite
def _cases(draw: st.DrawFn) -> tuple[dict[str, Any], list[Any], list[bool]]:
    drawn = draw(task_configurations(using=False, extras=False))
    # Bodies that run (and return their kwargs, so cascades carry them).
    config = {name: {**d, "run": PassThruTask.name} for name, d in drawn.items()}
    fires = draw(trigger_sequences(config, min_size=1, max_size=10))
    during = draw(st.lists(st.booleans(), min_size=len(fires), max_size=len(fires)))
    return config, fires, during


@settings(max_examples=150, deadline=None)
@given(_cases())
def test_the_carried_snapshot_stores_what_a_load_first_would(
    case: tuple[dict[str, Any], list[Any], list[bool]],
) -> None:
    config, fires, during = case
    carried = _stored(_run(config, fires, during))
    with _loading_first():
        loaded = _stored(_run(config, fires, during))
    assert carried == loaded
