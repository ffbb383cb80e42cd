"""The lease and due-index contract every storage that keeps leases must meet (shipped).

Subclass :class:`LeaseContract` next to your storage's
:class:`~triggers_core.testing.storage_contract.StorageContract` test class and
implement ``make_storage(uid)`` (fresh sessions of one store per test)::

    class TestMyLeases(LeaseContract):
        def make_storage(self, uid):
            return MyStorage(uid, ...)

It checks what :mod:`triggers_core.runtime.storage` promises for
``check_leases`` storages: ``compare_and_swap`` applies ``changes.due``
exactly (an entry appears when an instance is scheduled or starts under a
lease, moves when it is dispatched again, and goes when it leaves those
states); a renewal and a claim succeed only against the record as expected,
and of the two racing on one lease exactly one succeeds; ``due_entries``
lists a store's due entries of one kind, oldest first, up to a limit, across
its sessions; ``session(uid)`` opens another session of the same store; and
a run lost for real (its lease expired) is taken over by the sweep and its
clone runs to the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from triggers_core import engine
from triggers_core.engine.leases import Due, DueKind, Lease
from triggers_core.engine.state import SessionState, Status
from triggers_core.engine.transition import Transition
from triggers_core.runtime.manager import TriggerManager
from triggers_core.runtime.recovery import sweep_store
from triggers_core.runtime.storage import Storage
from triggers_core.testing._contract_support import RecordingRunner, race_in_threads
from triggers_core.testing.timer_contract import TimerContract

__all__ = ["LeaseContract"]

#: Far enough in the past that every lease in these tests has long expired by the clock.
T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
CONFIG: Mapping[str, Any] = {
    "t_a": {"after": ["go"], "run": "contract_task"},
    "t_b": {"after": ["t_a"], "run": "contract_task"},
}


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class LeaseContract(TimerContract):
    """Leases and the due index, for a storage whose ``check_leases`` accepts them (and
    the timers in that index: :class:`~triggers_core.testing.timer_contract.TimerContract`)."""

    #: Threads racing a renewal against a claim, per round, and rounds.
    race_rounds: ClassVar[int] = 20

    def make_storage(self, uid: str) -> Storage:
        raise NotImplementedError("a LeaseContract subclass implements make_storage(uid)")

    @pytest.fixture
    def uid(self) -> str:
        return f"lease-{uuid.uuid4().hex}"

    # -- helpers -----------------------------------------------------------------------

    def _commit(self, storage: Storage, step: Callable[[SessionState], Transition]) -> Transition:
        snapshot = storage.load_full()
        transition = step(snapshot.state)
        storage.compare_and_swap(snapshot.version, transition.state, transition.changes)
        return transition

    def _running(self, storage: Storage, owner: str = "run-1", expires: float = 30) -> None:
        """``t_a#0`` running under a lease of ``owner`` that expires at ``_at(expires)``."""
        self._commit(storage, lambda s: engine.update_configuration(s, CONFIG))
        self._commit(storage, lambda s: engine.fire(s, "go", {"x": 1}, now=_at(0)))
        lease = Lease(owner, _at(expires), expires, {"host": "contract"})
        self._commit(storage, lambda s: engine.mark_running(s, "t_a#0", now=_at(0), lease=lease))

    def _entries(self, storage: Storage, kind: DueKind, before: float = 10**6) -> list[Any]:
        return [
            (ref.session, ref.instance, ref.at, ref.owner)
            for ref in storage.due_entries(kind, _at(before), limit=1000)
            if ref.session == storage.uid
        ]

    # -- the contract ------------------------------------------------------------------

    def test_the_storage_keeps_leases(self, uid: str) -> None:
        self.make_storage(uid).check_leases()

    def test_commits_maintain_the_due_index_exactly(self, uid: str) -> None:
        storage = self.make_storage(uid)
        self._commit(storage, lambda s: engine.update_configuration(s, CONFIG))
        assert self._entries(storage, DueKind.DISPATCH) == []
        self._commit(storage, lambda s: engine.fire(s, "go", now=_at(1)))
        assert self._entries(storage, DueKind.DISPATCH) == [(uid, "t_a#0", _at(1), None)]
        self._commit(storage, lambda s: engine.redispatch(s, "t_a#0", now=_at(5), since=_at(1)))
        assert self._entries(storage, DueKind.DISPATCH) == [(uid, "t_a#0", _at(5), None)]
        lease = Lease("run-1", _at(40), 30, {})
        self._commit(storage, lambda s: engine.mark_running(s, "t_a#0", now=_at(10), lease=lease))
        assert self._entries(storage, DueKind.DISPATCH) == []
        assert self._entries(storage, DueKind.LEASE) == [(uid, "t_a#0", _at(40), "run-1")]
        lease_ref = storage.get_lease("t_a#0")
        assert lease_ref is not None
        assert lease_ref.due == Due(DueKind.LEASE, _at(40), "run-1")
        assert not lease_ref.claimed
        self._commit(storage, lambda s: engine.finish(s, "t_a#0", {}, now=_at(11), owner="run-1"))
        assert self._entries(storage, DueKind.LEASE) == []
        assert storage.get_lease("t_a#0") is None
        assert self._entries(storage, DueKind.DISPATCH) == [(uid, "t_b#0", _at(11), None)]

    def test_a_renewal_needs_the_owner_and_an_unclaimed_lease(self, uid: str) -> None:
        storage = self.make_storage(uid)
        self._running(storage)
        assert not storage.renew_lease("t_a#0", "someone-else", _at(100))
        assert storage.renew_lease("t_a#0", "run-1", _at(100))
        assert self._entries(storage, DueKind.LEASE) == [(uid, "t_a#0", _at(100), "run-1")]
        assert not storage.renew_lease("t_a#99", "run-1", _at(100))
        # A claim must name the record as it is now: the renewal moved it.
        assert not storage.claim_lease("t_a#0", "run-1", _at(30), _at(500))
        assert storage.claim_lease("t_a#0", "run-1", _at(100), _at(500))
        claimed = storage.get_lease("t_a#0")
        assert claimed is not None
        assert claimed.claimed
        assert claimed.at == _at(500)
        assert not storage.renew_lease("t_a#0", "run-1", _at(600))
        # Claimed again after the first sweeper died: due at ``until``.
        assert storage.claim_lease("t_a#0", "run-1", _at(500), _at(900))

    def test_a_stale_entry_is_forgotten_only_as_seen(self, uid: str) -> None:
        storage = self.make_storage(uid)
        self._running(storage)
        assert not storage.forget_due("t_a#0", DueKind.LEASE, _at(29))
        assert not storage.forget_due("t_a#0", DueKind.DISPATCH, _at(30))
        assert storage.get_lease("t_a#0") is not None
        # A storage whose sweep drops stale entries by itself may do nothing here;
        # one that drops the entry must drop exactly it.
        if storage.forget_due("t_a#0", DueKind.LEASE, _at(30)):
            assert self._entries(storage, DueKind.LEASE) == []

    def test_a_renewal_and_a_claim_racing_one_winner(self, uid: str) -> None:
        for round_ in range(self.race_rounds):
            storage = self.make_storage(f"{uid}-{round_}")
            self._running(storage)
            racers = [self.make_storage(storage.uid), self.make_storage(storage.uid)]

            def race(index: int, start: Any, racers: list[Storage] = racers) -> bool:
                start.wait(timeout=30)
                try:
                    if index == 0:
                        return racers[0].renew_lease("t_a#0", "run-1", _at(1000))
                    return racers[1].claim_lease("t_a#0", "run-1", _at(30), _at(2000))
                finally:
                    racers[index].close()  # what this thread opened (a connection per thread)

            outcomes = race_in_threads(race, threads=2, timeout=60)
            assert outcomes.count(True) == 1, outcomes
            lease = storage.get_lease("t_a#0")
            assert lease is not None
            assert lease.claimed == outcomes[1]

    def test_due_entries_span_the_store_oldest_first_up_to_the_limit(self, uid: str) -> None:
        storages = [self.make_storage(f"{uid}-{n}") for n in range(4)]
        for n, storage in enumerate(storages):
            self._running(storage, owner=f"run-{n}", expires=40 - 10 * n)
        found = [
            (ref.session, ref.owner)
            for ref in storages[0].due_entries(DueKind.LEASE, _at(25), limit=1000)
            if ref.session.startswith(uid)
        ]
        assert found == [(f"{uid}-3", "run-3"), (f"{uid}-2", "run-2")]
        limited = storages[0].due_entries(DueKind.LEASE, _at(10**6), limit=1)
        assert len(limited) == 1
        assert storages[0].due_entries(DueKind.DISPATCH, _at(10**6), limit=1000) == [
            ref
            for ref in storages[0].due_entries(DueKind.DISPATCH, _at(10**6), limit=1000)
            if not ref.session.startswith(uid)
        ]

    def test_session_opens_another_session_of_the_same_store(self, uid: str) -> None:
        storage = self.make_storage(uid)
        self._running(storage)
        other = storage.session(uid)
        assert other.uid == uid
        assert other.get_instance("t_a#0").status is Status.RUNNING
        assert storage.session(f"{uid}-x").load().version is None
        assert storage.store_identity() == storage.session(f"{uid}-x").store_identity()

    def test_a_lost_run_is_taken_over_by_the_sweep(self, uid: str) -> None:
        storage = self.make_storage(uid)
        self._running(storage)  # its lease expired long ago (2024)
        runner = RecordingRunner()

        def factory(s: Storage) -> TriggerManager:
            return TriggerManager(s, runners={"rec": runner}, default_runner="rec")

        report = sweep_store(storage, factory, limit=10_000)
        mine = [a for a in report.actions if a.session == uid]
        assert [(a.instance, a.action) for a in mine] == [("t_a#0", "taken over")]
        lost = storage.get_instance("t_a#0")
        assert lost.status is Status.REPLAYED
        assert lost.metadata["exceptionType"] == "triggers_core.errors.WorkerLost"
        assert lost.metadata["replayedAs"] == "t_a#1"
        assert storage.get_instance("t_a#1").status is Status.SCHEDULED
        assert "t_a#1" in runner.dispatched
        assert storage.get_lease("t_a#0") is None
        # A second sweep finds nothing more to do for this session.
        again = sweep_store(storage, factory, limit=10_000)
        assert [a for a in again.acted if a.session == uid] == []
