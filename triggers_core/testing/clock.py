"""A manual clock for tests: time stands still until the test moves it, and moving it ticks.

Give a :class:`FakeClock` to managers as their ``clock=``; each manager
registers itself with it. ``clock.advance("2h")`` moves the time, then ticks
the clock of every store those managers use
(:func:`~triggers_core.runtime.clock.tick_store`, through its due index; a
storage without one gets ``manager.advance()`` per session), so ``within``
windows close, their ``onMiss`` triggers fire and delayed instances are
scheduled, exactly as a worker's clock would do it at that time::

    clock = FakeClock()
    manager = TriggerManager(storage, clock=clock)
    manager.fire("ordered")
    clock.advance("24h")   # the window of t_remind closes now

A manager on a fake clock starts no background sweeper: only ``advance``
(or :meth:`FakeClock.tick`) moves its timers.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from triggers_core.engine.durations import parse_duration
from triggers_core.errors import UnsupportedOperationError
from triggers_core.runtime.clock import tick_store
from triggers_core.runtime.ports import SessionManager
from triggers_core.runtime.storage import Storage
from triggers_core.runtime.sweep_report import Recovered

__all__ = ["FakeClock"]

#: Where a :class:`FakeClock` starts unless told otherwise.
DEFAULT_START = datetime(2030, 1, 1, tzinfo=UTC)


def _delta(by: str | float | timedelta) -> timedelta:
    if isinstance(by, timedelta):
        delta = by
    elif isinstance(by, str):
        delta = parse_duration(by).delta
    elif isinstance(by, int | float) and not isinstance(by, bool):
        delta = timedelta(seconds=by)
    else:
        raise TypeError(f"advance by a duration ('2h'), seconds or a timedelta, got {by!r}")
    if delta < timedelta(0):
        raise ValueError(f"a clock only moves forward, got {by!r}")
    return delta


class FakeClock:
    """A manual clock (see the module docstring); thread-safe.

    ``step`` (a duration; default none) moves it on by itself at every
    reading, so that successive timestamps differ predictably.
    """

    def __init__(self, start: datetime | None = None, *, step: str | float | timedelta = 0) -> None:
        start = DEFAULT_START if start is None else start
        if start.tzinfo is None:
            raise ValueError(f"start must be a timezone-aware datetime, got naive {start!r}")
        self._now = start
        self._step = _delta(step)
        self._lock = threading.RLock()
        #: (store identity, session) -> the manager that registered it.
        self._managers: dict[tuple[object, str], SessionManager] = {}

    def __call__(self) -> datetime:
        with self._lock:
            self._now += self._step
            return self._now

    @property
    def now(self) -> datetime:
        """The current time (reading it does not move it, whatever ``step``)."""
        with self._lock:
            return self._now

    def watch(self, manager: SessionManager) -> None:
        """Register ``manager`` (done by managers given this clock): ticks reach its store."""
        storage = manager.storage
        key = (storage.store_identity() or ("storage", id(storage)), storage.uid)
        with self._lock:
            self._managers.setdefault(key, manager)

    def advance(self, by: str | float | timedelta) -> list[Recovered]:
        """Move the time on by ``by`` (``"90s"``, ``"2h"``, ``"PT1H"``, seconds, a timedelta),
        then :meth:`tick`. Returns what the tick did."""
        delta = _delta(by)
        with self._lock:
            self._now += delta
        return self.tick()

    def tick(self) -> list[Recovered]:
        """Apply every timer due now in the stores of the registered managers."""
        now = self.now
        with self._lock:
            managers = dict(self._managers)
        stores: dict[object, list[SessionManager]] = {}
        for (store, _), manager in managers.items():
            stores.setdefault(store, []).append(manager)
        done: list[Recovered] = []
        for watched in stores.values():
            by_uid = {m.storage.uid: m for m in watched}
            first = watched[0]

            def factory(
                storage: Storage,
                by_uid: dict[str, SessionManager] = by_uid,
                first: SessionManager = first,
            ) -> SessionManager:
                known = by_uid.get(storage.uid)
                return known if known is not None else _like(first, storage, self)

            try:
                report = tick_store(first.storage, factory, now=now)
            except UnsupportedOperationError:  # no due index: session by session
                for manager in watched:
                    for instance in manager.advance(now):
                        done.append(
                            Recovered(manager.storage.uid, instance.name, "timer fired", "")
                        )
                continue
            done.extend(report.acted)
        return done


def _like(manager: SessionManager, storage: Storage, clock: FakeClock) -> SessionManager:
    """A manager like ``manager`` (class, runners) for another session of its store."""
    cls = type(manager)
    runners = getattr(manager, "runners", {})
    default = getattr(manager, "default_runner", None)
    built: SessionManager = cls(storage, runners=runners, default_runner=default, clock=clock)  # type: ignore[call-arg]
    return built
