"""The shipped contract for a storage's timers (``within``, ``onMiss``, ``delay``).

:class:`~triggers_core.testing.lease_contract.LeaseContract` includes it, so
every storage with a due index runs it: timers reach the index as ``TIMER``
entries, :func:`~triggers_core.runtime.clock.tick_store` finds the due ones
and applies each exactly once, also when several storage objects (separate
connections) tick the same store at the same moment.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from triggers_core import engine
from triggers_core.engine.leases import Due, DueKind
from triggers_core.engine.state import SessionState, Status
from triggers_core.engine.transition import Transition
from triggers_core.runtime.clock import tick_store
from triggers_core.runtime.manager import TriggerManager
from triggers_core.runtime.storage import Storage
from triggers_core.testing._contract_support import (
    PatientManager,
    RecordingRunner,
    race_in_threads,
)

__all__ = ["RETRY_CONFIG", "TIMED_CONFIG", "TimerContract"]

#: Long ago: every timer of these tests is overdue by the real clock too.
T0 = datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC)
TIMED_CONFIG: Mapping[str, Any] = {
    "t_pay": {"after": ["ordered", "paid"], "run": "contract_task", "within": "1h"}
    | {"onMiss": "late"},
    "t_chase": {"after": ["late"], "run": "contract_task"},
    "t_ship": {"after": ["paid"], "unless": ["cancelled"], "run": "contract_task"}
    | {"delay": "15m"},
}


#: A task whose runs retry after a cooldown of a minute (its clone waits on a timer).
RETRY_CONFIG: Mapping[str, Any] = {
    "t_try": {"after": ["go"], "unless": ["stop"], "run": "contract_task"},
}
RETRY_COOLDOWN_SECONDS = 60.0


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class TimerContract:
    """Timers in the due index and the store's clock (see the module docstring)."""

    #: Sessions with a due timer each, ticked by two storage objects at once.
    timer_race_sessions: ClassVar[int] = 60
    #: Sessions with a retry waiting for its cooldown each, ticked by two at once.
    retry_race_sessions: ClassVar[int] = 60

    def make_storage(self, uid: str) -> Storage:
        raise NotImplementedError("a TimerContract subclass implements make_storage(uid)")

    @pytest.fixture
    def timer_uid(self) -> str:
        return f"timer-{uuid.uuid4().hex}"

    def _manager(self, storage: Storage, runner: RecordingRunner, at: float) -> TriggerManager:
        manager = PatientManager(
            storage, runners={"rec": runner}, default_runner="rec", clock=lambda: _at(at)
        )
        manager.sweep_interval = None
        return manager

    def _mine(self, storage: Storage, prefix: str, before: float) -> list[tuple[str, str]]:
        return sorted(
            (ref.session, ref.instance)
            for ref in storage.due_entries(DueKind.TIMER, _at(before), limit=100_000)
            if ref.session.startswith(prefix)
        )

    def test_timers_reach_the_due_index_and_a_tick_applies_them(self, timer_uid: str) -> None:
        storage = self.make_storage(timer_uid)
        runner = RecordingRunner()
        manager = self._manager(storage, runner, 0)
        manager.update_configuration(TIMED_CONFIG)
        manager.fire("ordered", {"order": 1})
        manager.fire("paid", {"amount": 2})  # t_pay#0 runs; t_ship#0 waits 15 min
        self._manager(storage, runner, 10).fire("ordered", {"order": 3})  # no new window
        assert runner.dispatched == ["t_pay#0"]
        assert storage.get_instance("t_ship#0").status is Status.UNSTARTED
        ref = storage.session(timer_uid)
        entries = [
            (r.instance, r.at)
            for r in ref.due_entries(DueKind.TIMER, _at(10**6), limit=100_000)
            if r.session == timer_uid
        ]
        assert entries == [("t_ship#0", _at(900))]

        def factory(s: Storage) -> TriggerManager:
            return self._manager(s, runner, 0)

        early = tick_store(storage, factory, now=_at(899), limit=100_000)
        assert [a for a in early.actions if a.session == timer_uid] == []
        report = tick_store(storage, factory, now=_at(900), limit=100_000)
        mine = [(a.instance, a.action) for a in report.actions if a.session == timer_uid]
        assert mine == [("t_ship#0", "timer fired")]
        assert storage.get_instance("t_ship#0").status is Status.SCHEDULED
        assert runner.dispatched == ["t_pay#0", "t_ship#0"]
        assert self._mine(storage, timer_uid, 10**6) == []

    def test_a_window_that_closes_expires_and_fires_its_on_miss(self, timer_uid: str) -> None:
        storage = self.make_storage(timer_uid)
        runner = RecordingRunner()
        manager = self._manager(storage, runner, 0)
        manager.update_configuration(TIMED_CONFIG)
        manager.fire("ordered", {"order": 1})
        assert storage.get_instance("t_pay#0").metadata["deadline"] == _at(3600).isoformat()
        report = tick_store(storage, lambda s: self._manager(s, runner, 0), now=_at(3600))
        assert ("t_pay#0", "timer fired") in [
            (a.instance, a.action) for a in report.actions if a.session == timer_uid
        ]
        expired = storage.get_instance("t_pay#0")
        assert expired.status is Status.EXPIRED
        assert expired.metadata["missing"] == ["paid"]
        assert storage.get_instance("t_pay#1").status is Status.UNSTARTED
        assert storage.latest_kwargs["late"] == {
            "task": "t_pay",
            "instance": "t_pay#0",
            "missing": ["paid"],
            "deadline": _at(3600).isoformat(),
        }
        assert runner.dispatched == ["t_chase#0"]
        # The next window is seeded only with fires after the expiry.
        self._manager(storage, runner, 4000).fire("paid", {"amount": 1})
        assert storage.get_instance("t_pay#1").kwargs == {"paid": {"amount": 1}}
        assert storage.get_instance("t_pay#1").metadata["deadline"] == _at(7600).isoformat()

    def test_two_tickers_racing_apply_each_timer_once(self, timer_uid: str) -> None:
        runner = RecordingRunner()
        uids = [f"{timer_uid}-{n}" for n in range(self.timer_race_sessions)]
        for uid in uids:
            manager = self._manager(self.make_storage(uid), runner, 0)
            manager.update_configuration(TIMED_CONFIG)
            manager.fire("ordered", {})
        assert len(self._mine(self.make_storage(uids[0]), timer_uid, 4000)) == len(uids)

        def work(index: int, start: Any) -> list[str]:
            storage = self.make_storage(uids[index])
            start.wait(timeout=30)
            try:
                report = tick_store(
                    storage, lambda s: self._manager(s, runner, 0), now=_at(3600), limit=100_000
                )
            finally:
                storage.close()  # what this thread opened (a connection per thread)
            return [a.session for a in report.acted if a.session.startswith(timer_uid)]

        fired = race_in_threads(work, threads=2, timeout=300)
        assert sorted(fired[0] + fired[1]) == sorted(uids)  # each timer fired by one ticker
        assert sorted(runner.dispatched) == ["t_chase#0"] * len(uids)  # one onMiss each
        check = self.make_storage(uids[0])
        for uid in uids:
            session = check.session(uid)
            assert session.get_instance("t_pay#0").status is Status.EXPIRED
            assert [i.name for i in session.instances_of_task("t_chase")] == ["t_chase#0"]
        assert self._mine(check, timer_uid, 10**6) == []

    def _retrying(self, storage: Storage) -> None:
        """``t_try#0`` ran and asked to retry after the cooldown: ``t_try#1`` waits for it."""
        manager = self._manager(storage, RecordingRunner(), 0)
        manager.update_configuration(RETRY_CONFIG)
        manager.fire("go", {"n": 1})
        steps: list[Callable[[SessionState], Transition]] = [
            lambda s: engine.mark_running(s, "t_try#0", now=_at(0)),
            lambda s: engine.retry_self(
                s, "t_try#0", now=_at(0), max_retries=3, cooldown=RETRY_COOLDOWN_SECONDS
            ),
        ]
        for step in steps:
            snapshot = storage.load_full()
            transition = step(snapshot.state)
            storage.compare_and_swap(snapshot.version, transition.state, transition.changes)

    def test_a_retry_cooldown_is_a_timer_in_the_due_index(self, timer_uid: str) -> None:
        storage = self.make_storage(timer_uid)
        self._retrying(storage)
        clone = storage.get_instance("t_try#1")
        assert clone.status is Status.UNSTARTED
        assert clone.metadata["retryCooldown"] == RETRY_COOLDOWN_SECONDS
        assert self._mine(storage, timer_uid, 10**6) == [(timer_uid, "t_try#1")]
        runner = RecordingRunner()

        def factory(s: Storage) -> TriggerManager:
            return self._manager(s, runner, 0)

        tick_store(storage, factory, now=_at(59), limit=100_000)
        assert runner.dispatched == []
        tick_store(storage, factory, now=_at(60), limit=100_000)
        assert runner.dispatched == ["t_try#1"]
        assert storage.get_instance("t_try#1").status is Status.SCHEDULED
        assert self._mine(storage, timer_uid, 10**6) == []

    def test_an_unless_during_a_retry_cooldown_abandons_the_retry(self, timer_uid: str) -> None:
        storage = self.make_storage(timer_uid)
        self._retrying(storage)
        runner = RecordingRunner()
        self._manager(storage, runner, 30).fire("stop")
        assert storage.get_instance("t_try#1").status is Status.ABANDONED
        assert self._mine(storage, timer_uid, 10**6) == []
        tick_store(storage, lambda s: self._manager(s, runner, 0), now=_at(60), limit=100_000)
        assert runner.dispatched == []

    def test_two_tickers_racing_schedule_each_retry_once(self, timer_uid: str) -> None:
        uids = [f"{timer_uid}-{n}" for n in range(self.retry_race_sessions)]
        for uid in uids:
            self._retrying(self.make_storage(uid))
        runner = RecordingRunner()

        def work(index: int, start: Any) -> list[str]:
            storage = self.make_storage(uids[index])
            start.wait(timeout=30)
            try:
                report = tick_store(
                    storage, lambda s: self._manager(s, runner, 0), now=_at(60), limit=100_000
                )
            finally:
                storage.close()
            return [a.session for a in report.acted if a.session.startswith(timer_uid)]

        fired = race_in_threads(work, threads=2, timeout=300)
        assert sorted(fired[0] + fired[1]) == sorted(uids)  # each timer fired by one ticker
        assert runner.dispatched == ["t_try#1"] * len(uids)  # each retry dispatched once
        check = self.make_storage(uids[0])
        for uid in uids:
            assert check.session(uid).get_instance("t_try#1").status is Status.SCHEDULED
        assert self._mine(check, timer_uid, 10**6) == []

    def test_a_timer_entry_holds_its_due_time(self, timer_uid: str) -> None:
        storage = self.make_storage(timer_uid)
        manager = self._manager(storage, RecordingRunner(), 0)
        manager.update_configuration(TIMED_CONFIG)
        manager.fire("ordered", {})
        (ref,) = [
            r
            for r in storage.due_entries(DueKind.TIMER, _at(3600), limit=100_000)
            if r.session == timer_uid
        ]
        assert ref.due == Due(DueKind.TIMER, _at(3600))
        assert storage.due_entries(DueKind.TIMER, _at(3599), limit=100_000) == [
            r
            for r in storage.due_entries(DueKind.TIMER, _at(3599), limit=100_000)
            if r.session != timer_uid
        ]
