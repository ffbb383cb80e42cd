"""A Hypothesis state machine over the pure engine with leases: fire, start, heartbeat,
kill, sweep, redeliver, finish and advance the clock in any order.

The storage's lease records are modelled as the port promises (a renewal needs the
owner and an unclaimed lease; a claim needs the record as seen). Invariants after
every step: every instance is in one status and consistent with its due entry;
nothing stays ``running`` past its lease or ``scheduled`` past its dispatch lease for
longer than one sweep; a run records at most one outcome, a taken-over run none;
a chain of clones is replayed after a loss at most ``max_lost_retries`` times.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from triggers_core import engine
from triggers_core.engine.leases import DueKind, Lease, LostPolicy, due_of, lease_owner, run_key
from triggers_core.engine.state import SessionState, Status
from triggers_core.errors import InvalidTransitionError

T0 = datetime(2025, 1, 1, tzinfo=UTC)
LEASE = 30.0
DISPATCH_LEASE = 60.0
POLICY = LostPolicy(retry=True, max_lost_retries=2)
CONFIG = {
    "t_a": {"after": ["go"], "andEvery": "go", "run": "A"},
    "t_b": {"after": ["t_a"], "run": "B"},
}


@attrs.define
class Record:
    """A storage's lease record, as the port describes it."""

    owner: str
    at: datetime
    claimed: bool = False


@attrs.define
class Run:
    """A worker's run of one instance: alive (heartbeats, may finish) or killed."""

    name: str
    owner: str
    alive: bool = True


class LeaseMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.state = engine.update_configuration(SessionState(), CONFIG).state
        self.records: dict[str, Record] = {}
        self.runs: dict[str, Run] = {}
        self.owners = 0
        #: owner token -> how many outcomes its run recorded (must stay <= 1).
        self.outcomes: dict[str, int] = {}
        #: owner tokens whose instance was taken over (must record nothing after).
        self.taken_over: set[str] = set()
        self.last_sweep = T0

    # -- applying transitions, as a storage would ------------------------------------

    def apply(self, transition: engine.Transition) -> None:
        self.state = transition.state
        for name, due in transition.due.items():
            if due is None or due.kind is not DueKind.LEASE:
                self.records.pop(name, None)
            else:
                assert due.owner is not None
                self.records[name] = Record(due.owner, due.at)

    def names(self, status: Status) -> list[str]:
        return sorted(n for n, i in self.state.instances.items() if i.status is status)

    # -- rules --------------------------------------------------------------------------

    @rule()
    def fire(self) -> None:
        self.apply(engine.fire(self.state, "go", {}, now=self.now))

    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        """A worker receives the message of a scheduled instance and starts it."""
        scheduled = self.names(Status.SCHEDULED)
        if not scheduled:
            return
        name = data.draw(st.sampled_from(scheduled))
        self.owners += 1
        owner = f"run-{self.owners}"
        lease = Lease(owner, self.now + timedelta(seconds=LEASE), LEASE, {"host": "w"})
        self.apply(engine.mark_running(self.state, name, now=self.now, lease=lease))
        self.runs[owner] = Run(name, owner)

    @rule()
    def heartbeat(self) -> None:
        """Every live run renews its lease (the keeper), if the storage lets it."""
        for run in self.runs.values():
            record = self.records.get(run.name)
            if (
                run.alive
                and record is not None
                and record.owner == run.owner
                and not record.claimed
            ):
                record.at = self.now + timedelta(seconds=LEASE)

    @rule(data=st.data())
    def kill(self, data: st.DataObject) -> None:
        alive = sorted(o for o, r in self.runs.items() if r.alive)
        if alive:
            self.runs[data.draw(st.sampled_from(alive))].alive = False

    @rule(data=st.data(), ok=st.booleans())
    def finish(self, data: st.DataObject, ok: bool) -> None:
        """A live run's body ends and reports its outcome, under its owner token."""
        alive = sorted(o for o, r in self.runs.items() if r.alive)
        if not alive:
            return
        run = self.runs[data.draw(st.sampled_from(alive))]
        run.alive = False
        try:
            if ok:
                transition = engine.finish(self.state, run.name, {}, now=self.now, owner=run.owner)
            else:
                transition = engine.fail(
                    self.state,
                    run.name,
                    now=self.now,
                    exception_type="x.E",
                    exception_info="",
                    owner=run.owner,
                )
        except InvalidTransitionError:
            return  # taken over, failed by hand...: the outcome is refused
        self.apply(transition)
        self.outcomes[run.owner] = self.outcomes.get(run.owner, 0) + 1

    @rule(seconds=st.sampled_from([1, 10, 29, 31, 61, 200]))
    def advance(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule()
    def sweep(self) -> None:
        """One sweep at ``now``: take over expired leases, re-send lost messages."""
        for name, record in sorted(self.records.items()):
            if record.at <= self.now:
                record.claimed, record.at = True, self.now + timedelta(seconds=30)
                self.take_over(name, record.owner)
        for name in self.names(Status.SCHEDULED):
            due = due_of(self.state.instances[name])
            assert due is not None
            if due.at + timedelta(seconds=DISPATCH_LEASE) <= self.now:
                self.apply(engine.redispatch(self.state, name, now=self.now, since=due.at))
        self.last_sweep = self.now

    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """A message arrives again for a running instance: an expired lease is taken over."""
        running = self.names(Status.RUNNING)
        if not running:
            return
        name = data.draw(st.sampled_from(running))
        record = self.records.get(name)
        if record is not None and record.at <= self.now:
            owner = record.owner
            record.claimed, record.at = True, self.now + timedelta(seconds=30)
            self.take_over(name, owner)

    def take_over(self, name: str, owner: str) -> None:
        try:
            transition = engine.take_over(
                self.state, name, now=self.now, owner=owner, policy=POLICY
            )
        except InvalidTransitionError:
            return
        self.apply(transition)
        self.taken_over.add(owner)

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def due_entries_match_the_instances(self) -> None:
        for name, instance in self.state.instances.items():
            due = due_of(instance)
            if instance.status is Status.RUNNING:
                assert due is not None
                assert name in self.records
                assert self.records[name].owner == lease_owner(instance)
            else:
                assert name not in self.records
            if instance.status is Status.SCHEDULED:
                assert due is not None
                assert due.kind is DueKind.DISPATCH

    @invariant()
    def nothing_outlives_its_bounds_after_a_sweep(self) -> None:
        if self.last_sweep != self.now:
            return
        for name, record in self.records.items():
            assert record.at > self.now or record.claimed, name
        for name in self.names(Status.SCHEDULED):
            due = due_of(self.state.instances[name])
            assert due is not None
            assert due.at + timedelta(seconds=DISPATCH_LEASE) > self.now

    @invariant()
    def each_run_records_at_most_one_outcome(self) -> None:
        assert all(count == 1 for count in self.outcomes.values())
        assert not self.taken_over & self.outcomes.keys()

    @invariant()
    def lost_chains_replay_at_most_max_lost_retries_times(self) -> None:
        chains: dict[str, int] = {}
        for instance in self.state.instances.values():
            if instance.metadata.get("exceptionType") == "triggers_core.errors.WorkerLost":
                key = run_key(instance)
                chains[key] = chains.get(key, 0) + 1
        for instance in self.state.instances.values():
            lost: Any = instance.metadata.get("lostRetries", 0)
            assert lost <= POLICY.max_lost_retries
        assert all(count <= POLICY.max_lost_retries + 1 for count in chains.values())


LeaseMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_leases_machine = LeaseMachine.TestCase
