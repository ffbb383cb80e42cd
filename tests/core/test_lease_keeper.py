"""The lease keeper's thread: woken when a new lease is due before it would wake, not otherwise.

Each test uses its own :class:`LeaseKeeper` (not the process's ``KEEPER``) and a
storage double that records renewals: what is tested is when the keeper's
thread renews, which no real storage changes.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from triggers_core.runtime.leases import LeaseKeeper


class Renewals:
    """Stands in for a storage: records each ``renew_lease`` (name, monotonic time)."""

    uid = "s"

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    def renew_lease(self, name: str, owner: str, until: datetime) -> bool:
        with self.lock:
            self.calls.append((name, time.monotonic()))
        return True

    def first(self, name: str) -> float | None:
        with self.lock:
            return next((at for n, at in self.calls if n == name), None)


class CountingCondition(threading.Condition):
    """A condition that counts its ``notify`` calls."""

    def __init__(self) -> None:
        super().__init__(threading.Lock())
        self.notified = 0

    def notify(self, n: int = 1) -> None:
        self.notified += 1
        super().notify(n)


def _now() -> datetime:
    return datetime.now(UTC)


def _wait_until_waiting(keeper: LeaseKeeper, timeout: float = 5.0) -> None:
    """Until the keeper's thread waits (it set the time it wakes at)."""
    deadline = time.monotonic() + timeout
    while keeper._wake_at == float("-inf"):
        assert time.monotonic() < deadline, "the keeper's thread never waited"
        time.sleep(0.005)


def _renewed_within(storage: Renewals, name: str, held_at: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while (at := storage.first(name)) is None:
        assert time.monotonic() < deadline, f"{name} was not renewed within {timeout}s"
        time.sleep(0.01)
    return at - held_at


def _short_lease_renewed_after(keeper: LeaseKeeper, storage: Renewals, name: str) -> float:
    """Once the keeper's thread waits: hold a 0.3 s lease on ``name``; seconds to its renewal."""
    _wait_until_waiting(keeper)
    held_at = time.monotonic()
    store: Any = storage
    keeper.hold(store, name, f"run-{name}", 0.3, _now)
    return _renewed_within(storage, name, held_at, timeout=5.0)


def test_a_short_lease_held_while_the_keeper_idles_is_renewed_on_time() -> None:
    keeper, storage = LeaseKeeper(), Renewals()
    store: Any = storage
    first = keeper.hold(store, "a", "run-a", 0.3, _now)
    keeper.release(first)
    # The thread wakes at a's renewal, finds nothing held, and waits a minute.
    time.sleep(0.25)
    # Due 0.1 s after it was held: without a signal the thread would sleep on for a minute.
    assert _short_lease_renewed_after(keeper, storage, "b") < 2.0
    assert storage.first("a") is None


def test_a_shorter_lease_than_those_held_wakes_the_keeper() -> None:
    keeper, storage = LeaseKeeper(), Renewals()
    store: Any = storage
    keeper.hold(store, "long", "run-long", 60.0, _now)  # renewed in 20 s
    assert _short_lease_renewed_after(keeper, storage, "short") < 2.0
    assert storage.first("long") is None


def test_leases_of_one_length_held_one_after_another_do_not_wake_the_keeper() -> None:
    keeper, storage = LeaseKeeper(), Renewals()
    store: Any = storage
    condition = CountingCondition()
    keeper._cond = condition
    keeper.hold(store, "first", "run-0", 30.0, _now)
    _wait_until_waiting(keeper)
    before = condition.notified
    for number in range(50):  # a worker running instance after instance
        held = keeper.hold(store, f"t#{number}", f"run-{number}", 30.0, _now)
        keeper.release(held)
    assert condition.notified == before
    assert storage.calls == []
    assert [held.name for held in keeper.held()] == ["first"]
