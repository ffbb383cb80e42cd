"""What every benchmark shares: a backend's shape, a recording runner, seeding and timing
helpers. The backends themselves are in :mod:`benchmarks.backends`."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from triggers_core import SessionState, Storage, TriggerManager
from triggers_core.engine.effects import ScheduleInstance
from triggers_core.engine.scopes import Changes
from triggers_core.runtime.ports import SessionManager, TaskRunner

StorageFactory = Callable[[str], Storage]


@attrs.frozen
class Backend:
    """A named way to make storages; ``open()`` sets it up and tears it down."""

    label: str
    open: Callable[[], AbstractContextManager[StorageFactory]]
    #: A URL child processes can reopen storages from (None: in-process only).
    shared: bool = True


class RecordingRunner(TaskRunner):
    """Records dispatches and runs nothing: the fire is timed, not the task."""

    name = "bench-recording"

    def __init__(self) -> None:
        self.dispatched: list[str] = []

    def dispatch(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        self.dispatched.append(effect.instance_name)


def recording_manager(storage: Storage) -> tuple[TriggerManager, RecordingRunner]:
    runner = RecordingRunner()
    return TriggerManager(storage, runners={"rec": runner}, default_runner="rec"), runner


def uid(label: str) -> str:
    return f"bench-{label}-{uuid.uuid4().hex}"


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(call: Callable[[], Any]) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


# -- seeding a session without thousands of round trips ------------------------------


def clock(start: datetime | None = None) -> Callable[[], datetime]:
    """A deterministic clock for building states with the pure engine."""
    ticks = iter(range(10**9))
    origin = start or datetime(2024, 1, 1, tzinfo=UTC)
    return lambda: origin + timedelta(milliseconds=next(ticks))


def store_state(storage: Storage, state: SessionState) -> None:
    """Write ``state`` (built with the pure engine) as a new session in one commit."""
    names = frozenset(state.instances)
    storage.compare_and_swap(None, state, Changes(instances=names, created=names, config=True))
