"""Shared by the SQLite, PostgreSQL and MariaDB test modules: the lease contract, plus what
is specific to the SQL due table (its rows, its cost per commit, renewals that never wait
for a session's compare-and-swap, a multi-process race, tables made without it, the upgrade).

Each test module provides a module-scoped ``sql_engine`` fixture; every test gets its own
table prefix, created before and dropped after it, so a sweep of "the whole store" sees
only its own sessions.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import attrs
import pytest
import sqlalchemy as sa
from _sql_fire_keys_cases import statements

from triggers_backends.sqlalchemy import (
    SQLAlchemyStorage,
    create_schema,
    dispose_engines,
    drop_schema,
    metadata_for,
)
from triggers_backends.sqlalchemy._schema import note_due_table
from triggers_backends.sqlalchemy_upgrade import needs_upgrade, upgrade_schema
from triggers_core import (
    ConflictError,
    SessionState,
    Status,
    TriggerManager,
    UnsupportedOperationError,
    open_storage,
)
from triggers_core import engine as pure
from triggers_core.engine.leases import Due, DueKind, Lease
from triggers_core.engine.scopes import Changes
from triggers_core.engine.transition import Transition
from triggers_core.runtime.recovery import StoreSweeper
from triggers_core.runtime.storage import Storage
from triggers_core.testing._contract_support import RecordingRunner, race_processes, report_to
from triggers_core.testing.lease_contract import CONFIG, LeaseContract

T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
#: The contract's two tasks, with a task that exists (these tests run them).
RUNNABLE = {
    "t_a": {"after": ["go"], "run": "triggers.DevNullTask"},
    "t_b": {"after": ["t_a"], "run": "triggers.DevNullTask"},
}


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stop_sweepers(prefix: str) -> None:
    """Stop this process's background sweepers of tables whose prefix starts with ``prefix``.

    A manager with the in-process runner starts one per store; left running, it would
    sweep dropped tables every few seconds for the rest of the test run.
    """
    for key, sweeper in list(StoreSweeper._running.items()):
        if isinstance(key, tuple) and key[0] == "sqlalchemy" and str(key[-1]).startswith(prefix):
            sweeper.stop()


def _commit(storage: Storage, step: Callable[[SessionState], Transition]) -> None:
    snapshot = storage.load_full()
    transition = step(snapshot.state)
    storage.compare_and_swap(snapshot.version, transition.state, transition.changes)


def start_running(storage: Storage, owner: str = "run-1", expires: float = 30) -> None:
    """``t_a#0`` running under a lease of ``owner`` expiring at ``_at(expires)``."""
    _commit(storage, lambda s: pure.update_configuration(s, CONFIG))
    _commit(storage, lambda s: pure.fire(s, "go", {"x": 1}, now=_at(0)))
    lease = Lease(owner, _at(expires), expires, {"host": "sql-test"})
    _commit(storage, lambda s: pure.mark_running(s, "t_a#0", now=_at(0), lease=lease))


def _due_statements(seen: list[str]) -> list[str]:
    """The statements on the due table, by their first word (``INSERT``, ``DELETE``...)."""
    return [s.split()[0].upper() for s in seen if "due" in s.split("WHERE")[0]]


class SQLLeaseCases(LeaseContract):
    """The lease contract and the due table, on one SQL dialect."""

    #: OS processes in the renewal-against-claims race, and leases they race on.
    race_processes: ClassVar[int] = 4
    race_leases: ClassVar[int] = 24

    @pytest.fixture(autouse=True)
    def _tables(self, sql_engine: sa.Engine) -> Iterator[None]:
        self.engine = sql_engine
        self.prefix = f"l{uuid.uuid4().hex[:12]}_"
        create_schema(sql_engine, self.prefix)
        yield
        stop_sweepers(self.prefix)
        drop_schema(sql_engine, self.prefix)
        dispose_engines()

    def make_storage(self, uid: str) -> SQLAlchemyStorage:
        return SQLAlchemyStorage(uid, self.engine, table_prefix=self.prefix)

    def url(self, **query: str) -> str:
        url = self.engine.url.update_query_dict({"triggers_prefix": self.prefix, **query})
        return url.render_as_string(hide_password=False)

    def due_rows(self) -> dict[str, dict[str, Any]]:
        table = metadata_for(self.prefix).tables[f"{self.prefix}due"]
        with self.engine.connect() as conn:
            return {r["name"]: dict(r) for r in conn.execute(sa.select(table)).mappings()}

    def drop_due_table(self) -> None:
        """Make the tables look like the previous version's: everything but the due table."""
        metadata_for(self.prefix).tables[f"{self.prefix}due"].drop(self.engine)
        note_due_table(self.engine, self.prefix, exists=False)

    # -- the rows ---------------------------------------------------------------------

    def test_due_rows_hold_utc_microseconds_and_any_uid(self) -> None:
        uid = f"lease ü 'quote' %s\n{uuid.uuid4().hex}"
        storage = self.make_storage(uid)
        start_running(storage, expires=30.000001)
        (row,) = self.due_rows().values()
        assert row["uid"] == uid
        assert row["name"] == "t_a#0"
        assert row["kind"] == "lease"
        assert row["owner"] == "run-1"
        assert not row["claimed"]
        # Microseconds since 1970 (UTC), as an integer: 2024-01-02T03:04:35.000001Z.
        assert row["due_at"] == 1_704_164_675_000_001
        # Times in any offset are the same instant: stored as UTC, compared exactly.
        plus_two = timezone(timedelta(hours=2))
        renewed = (_at(100) + timedelta(microseconds=7)).astimezone(plus_two)
        assert storage.renew_lease("t_a#0", "run-1", renewed)
        lease = storage.get_lease("t_a#0")
        assert lease is not None
        assert lease.at == renewed
        assert lease.at.utcoffset() == timedelta(0)
        assert storage.claim_lease("t_a#0", "run-1", renewed.astimezone(UTC), _at(200))
        with pytest.raises(ValueError, match="timezone-aware"):
            storage.renew_lease("t_a#0", "run-1", datetime(2024, 1, 1))

    def test_due_entries_refuses_bad_arguments(self, uid: str) -> None:
        storage = self.make_storage(uid)
        with pytest.raises(ValueError, match="limit must be a positive integer"):
            storage.due_entries(DueKind.LEASE, _at(0), limit=0)
        with pytest.raises(ValueError, match="before must be a timezone-aware"):
            storage.due_entries(DueKind.LEASE, datetime(2024, 1, 1), limit=1)
        with pytest.raises(ValueError, match="kind must be a DueKind"):
            storage.due_entries("lease", _at(0), limit=1)  # type: ignore[arg-type]

    # -- the cost of a commit ---------------------------------------------------------

    #: Statements a compare-and-swap runs beyond the same one without ``changes.due``:
    #: when entries only appear or move, and when some go while others come.
    extra_due_statements: ClassVar[tuple[int, int]] = (1, 2)

    def test_only_commits_that_change_the_index_write_it(self, uid: str) -> None:
        """Each commit runs on the session and on a twin that is given no due changes:
        the difference is what the due index costs."""
        storage, twin = self.make_storage(uid), self.make_storage(f"{uid}-twin")
        config = {**CONFIG, "t_c": {"after": ["go", "later"], "run": "contract_task"}}
        lease = Lease("run-1", _at(30), 30, {})
        steps: list[tuple[Callable[[SessionState], Transition], int | None]] = [
            (lambda s: pure.update_configuration(s, config), None),
            (lambda s: pure.fire(s, "never", now=_at(0)), None),  # changes no entry
            (lambda s: pure.fire(s, "go", now=_at(0)), 0),  # t_a#0 gets one (t_c#0 waits)
            (lambda s: pure.mark_running(s, "t_a#0", now=_at(1), lease=lease), 0),  # it moves
            # t_a#0 loses its entry, t_b#0 (the cascade) gets one
            (lambda s: pure.finish(s, "t_a#0", {}, now=_at(2), owner="run-1"), 1),
        ]
        storage.check_leases()  # the table was seen: no probe below
        for step, shape in steps:
            counts = []
            for target in (storage, twin):
                snapshot = target.load_full()
                transition = step(snapshot.state)
                changes = transition.changes
                if target is twin:
                    changes = attrs.evolve(changes, due={})
                with statements(self.engine) as seen:
                    target.compare_and_swap(snapshot.version, transition.state, changes)
                counts.append(len(seen))
                if shape is None or target is twin:
                    assert not any(f"{self.prefix}due" in s for s in seen), seen
            if shape is not None:
                assert counts[0] - counts[1] == self.extra_due_statements[shape], (step, seen)
        assert set(self.due_rows()) == {"t_b#0"}

    @pytest.mark.parametrize("size", [1, 12])
    def test_commits_with_many_entries_and_a_new_session(self, uid: str, size: int) -> None:
        """More entries in one commit than PostgreSQL's version UPDATE carries, a conflict
        (which writes none of them), and a session created with entries."""
        tasks = {f"t_{n:02d}": {"after": ["go"], "run": "contract_task"} for n in range(size)}
        storage = self.make_storage(uid)
        state = pure.update_configuration(SessionState(), tasks).state
        fired = pure.fire(state, "go", now=_at(0))
        assert len(fired.changes.due) == size
        names = frozenset(fired.state.instances)
        changes = attrs.evolve(fired.changes, instances=names, created=names, config=True)
        assert storage.compare_and_swap(None, fired.state, changes) == 1
        assert {name: row["kind"] for name, row in self.due_rows().items()} == dict.fromkeys(
            names, "dispatch"
        )
        # Half of them go, the other half move, three new entries come.
        due: dict[str, Due | None] = {}
        for n, name in enumerate(sorted(names)):
            due[name] = None if n % 2 else Due(DueKind.DISPATCH, _at(100 + n))
        due.update({f"x#{n}": Due(DueKind.LEASE, _at(200 + n), f"run-{n}") for n in range(3)})
        with pytest.raises(ConflictError):  # a stale version writes nothing
            storage.compare_and_swap(0, fired.state, Changes(due=due))
        assert len(self.due_rows()) == size
        assert storage.compare_and_swap(1, fired.state, Changes(due=due)) == 2
        expected = {name: entry for name, entry in due.items() if entry is not None}
        rows = self.due_rows()
        assert {name: (row["kind"], row["owner"]) for name, row in rows.items()} == {
            name: (entry.kind.value, entry.owner) for name, entry in expected.items()
        }
        leases = storage.due_entries(DueKind.LEASE, _at(10**6), limit=10)
        assert [(ref.instance, ref.at) for ref in leases] == [
            (f"x#{n}", _at(200 + n)) for n in range(3)
        ]

    def test_a_renewal_and_a_claim_are_one_update_each(self, uid: str) -> None:
        storage = self.make_storage(uid)
        start_running(storage)
        with statements(self.engine) as seen:
            assert storage.renew_lease("t_a#0", "run-1", _at(60))
            assert storage.claim_lease("t_a#0", "run-1", _at(60), _at(90))
            assert not storage.renew_lease("t_a#0", "run-1", _at(120))
        assert _due_statements(seen) == ["UPDATE"] * 3
        assert not any("sessions" in s or "instances" in s for s in seen)

    # -- tables without the due table -------------------------------------------------

    def test_tables_of_the_previous_version_run_without_leases_then_upgrade(
        self, uid: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        self.drop_due_table()
        runner = RecordingRunner()
        with caplog.at_level(logging.WARNING, "triggers_backends.sqlalchemy"):
            manager = TriggerManager(
                self.make_storage(uid), runners={"rec": runner}, default_runner="rec"
            )
            manager.update_configuration(RUNNABLE)
            assert [i.name for i in manager.fire("go")] == ["t_a#0"]
            with pytest.raises(UnsupportedOperationError) as caught:
                manager.storage.check_leases()
            # Another storage object, another manager: no second warning.
            other = TriggerManager(self.make_storage(f"{uid}-2"))
            with pytest.raises(UnsupportedOperationError):
                other.storage.renew_lease("t_a#0", "run-1", _at(1))
            finished = manager.run_instance("t_a#0")
        message = str(caught.value)
        assert f"{self.prefix}due" in message
        assert f"upgrade_schema(engine, {self.prefix!r})" in message
        assert f"create_schema(engine, {self.prefix!r})" in message
        assert finished is not None
        assert finished.status is Status.FINISHED
        assert "owner" not in finished.metadata  # it ran without a lease
        warned = [r.getMessage() for r in caplog.records if f"{self.prefix}due" in r.getMessage()]
        assert len(warned) == 1, warned
        assert "without leases" in warned[0]
        # The upgrade adds the table (and only it); leases are kept from then on.
        assert needs_upgrade(self.engine, self.prefix)
        assert upgrade_schema(self.engine, self.prefix) is True
        assert not needs_upgrade(self.engine, self.prefix)
        assert upgrade_schema(self.engine, self.prefix) is False
        later = TriggerManager(
            self.make_storage(uid), runners={"rec": runner}, default_runner="rec"
        )
        later.storage.check_leases()
        assert [i.name for i in later.fire("go")] == []  # t_a already ran; t_b is scheduled
        assert runner.dispatched == ["t_a#0", "t_b#0"]
        started: list[Any] = []
        later.run_instance("t_b#0", on_started=lambda i: started.append(self.due_rows()))
        assert started[0]["t_b#0"]["kind"] == "lease"  # t_b#0 ran under a lease
        assert later.storage["t_b#0"].status is Status.FINISHED
        assert self.due_rows() == {}

    def test_create_schema_adds_a_missing_due_table(self, uid: str) -> None:
        self.drop_due_table()
        storage = self.make_storage(uid)
        with pytest.raises(UnsupportedOperationError):
            storage.check_leases()
        create_schema(self.engine, self.prefix)  # this process knows at once
        storage.check_leases()
        start_running(storage)
        assert set(self.due_rows()) == {"t_a#0"}

    def test_a_due_table_dropped_under_a_running_process_is_schema_missing(self, uid: str) -> None:
        from triggers_core import SchemaMissingError

        storage = self.make_storage(uid)
        start_running(storage)
        metadata_for(self.prefix).tables[f"{self.prefix}due"].drop(self.engine)
        with pytest.raises(SchemaMissingError, match="upgrade_schema"):
            storage.renew_lease("t_a#0", "run-1", _at(60))

    def test_delete_removes_the_sessions_due_entries(self, uid: str) -> None:
        storage = self.make_storage(uid)
        start_running(storage)
        other = self.make_storage(f"{uid}-other")
        start_running(other)
        storage.delete()
        assert [r["uid"] for r in self.due_rows().values()] == [f"{uid}-other"]

    # -- the store --------------------------------------------------------------------

    def test_store_identity_names_database_and_prefix_without_the_password(self, uid: str) -> None:
        storage = self.make_storage(uid)
        identity = storage.store_identity()
        assert identity == self.make_storage("another").store_identity()
        assert identity == open_storage(self.url(), uid).store_identity()
        elsewhere = SQLAlchemyStorage(uid, self.engine, table_prefix=f"{self.prefix}x_")
        assert elsewhere.store_identity() != identity
        hash(identity)
        if self.engine.url.password:
            assert str(self.engine.url.password) not in repr(identity)

    def test_session_shares_the_engine(self, uid: str) -> None:
        storage = self.make_storage(uid)
        other = storage.session(f"{uid}-x")
        assert isinstance(other, SQLAlchemyStorage)
        assert other.engine is storage.engine
        assert other.table_prefix == storage.table_prefix

    # -- races across processes -------------------------------------------------------

    def test_renewals_and_claims_from_processes_one_winner_per_lease(self, uid: str) -> None:
        storages = [self.make_storage(f"{uid}-{n}") for n in range(self.race_leases)]
        for storage in storages:
            start_running(storage)
        payloads = race_processes(
            _lease_race_worker,
            processes=self.race_processes,
            timeout=240,
            what="renewal/claim race",
            url=self.url(),
            uid=uid,
            leases=self.race_leases,
            processes_=self.race_processes,
        )
        outcomes: dict[int, list[tuple[str, int, bool]]] = {}
        for results in payloads:
            for lease, what, index, won in results:
                outcomes.setdefault(lease, []).append((what, index, won))
        assert sorted(outcomes) == list(range(self.race_leases))
        for lease, tries in sorted(outcomes.items()):
            assert len(tries) == self.race_processes
            winners = [(what, index) for what, index, won in tries if won]
            assert len(winners) == 1, (lease, tries)
            ((what, index),) = winners
            record = storages[lease].get_lease("t_a#0")
            assert record is not None
            if what == "renew":
                assert (record.claimed, record.at) == (False, _at(1000 + index))
            else:
                assert (record.claimed, record.at) == (True, _at(2000 + index))


def _lease_race_worker(
    *, url: str, uid: str, leases: int, processes_: int, index: int, start: Any, results: Any
) -> None:
    """One racing process: renews the leases ``n`` with ``n % processes == index``, claims
    every other one (as it was before anyone moved it)."""

    def work() -> list[tuple[int, str, int, bool]]:
        storages = [open_storage(url, f"{uid}-{n}") for n in range(leases)]
        for storage in storages:
            storage.check_leases()  # connected and checked before the start
        start.wait(60)
        found = []
        for n, storage in enumerate(storages):
            if n % processes_ == index:
                won = storage.renew_lease("t_a#0", "run-1", _at(1000 + index))
                found.append((n, "renew", index, won))
            else:
                won = storage.claim_lease("t_a#0", "run-1", _at(30), _at(2000 + index))
                found.append((n, "claim", index, won))
        return found

    report_to(results, index, work)


class ServerLeaseCases(SQLLeaseCases):
    """On a database server (row locks, not one writer at a time like SQLite)."""

    def hold_session_locks(self, conn: sa.Connection, uid: str) -> None:
        """In ``conn``: what a compare-and-swap of ``uid`` holds (its session and instance rows)."""
        tables = metadata_for(self.prefix).tables
        sessions, instances = tables[f"{self.prefix}sessions"], tables[f"{self.prefix}instances"]
        key = self.make_storage(uid)._key
        version = conn.execute(
            sa.update(sessions)
            .where(sessions.c.session_key == key)
            .values(version=sessions.c.version + 1)
        )
        assert version.rowcount == 1
        conn.execute(
            sa.update(instances)
            .where(instances.c.session_key == key)
            .values(updated_at=instances.c.updated_at)
        )

    def test_a_renewal_never_waits_for_a_sessions_compare_and_swap(self, uid: str) -> None:
        start_running(self.make_storage(uid))
        # A lock wait of one second would fail the renewal with a StorageError.
        storage = open_storage(self.url(triggers_lock_timeout="1"), uid)
        assert isinstance(storage, SQLAlchemyStorage)
        storage.check_leases()
        with self.engine.connect() as holder:
            held = holder.begin()
            try:
                self.hold_session_locks(holder, uid)  # a compare-and-swap in flight, stuck
                assert storage.renew_lease("t_a#0", "run-1", _at(60))
                assert storage.get_lease("t_a#0") is not None
                assert storage.claim_lease("t_a#0", "run-1", _at(60), _at(90))
                assert storage.due_entries(DueKind.LEASE, _at(1000), limit=10)[0].claimed
            finally:
                held.rollback()
        assert storage.load().version == 3  # the held write was rolled back

    def test_due_entries_is_an_index_range_scan(self, uid: str) -> None:
        """5 due entries among 20,000 (not due yet, or of the other kind): read by the index."""
        storage = self.make_storage(uid)
        table = metadata_for(self.prefix).tables[f"{self.prefix}due"]
        rows = [
            {
                "session_key": f"{n:064x}",
                "name_key": f"{n:064x}",
                "uid": f"s{n}",
                "name": "t_a#0",
                "kind": "lease" if n % 2 else "dispatch",
                "due_at": (10**15 if n >= 10 else 10**14) + n,  # 2001, or 1973 for 10 of them
                "owner": "o",
                "claimed": False,
            }
            for n in range(20_000)
        ]
        with self.engine.begin() as conn:
            for start in range(0, len(rows), 2_000):
                conn.execute(sa.insert(table), rows[start : start + 2_000])
        analyze = "ANALYZE" if self.engine.dialect.name == "postgresql" else "ANALYZE TABLE"
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f"{analyze} {table.name}")
        before = datetime(1974, 1, 1, tzinfo=UTC)
        due = storage.due_entries(DueKind.LEASE, before, limit=100)
        assert [ref.session for ref in due] == [f"s{n}" for n in range(1, 10, 2)]
        with self.engine.connect() as conn:
            compiled = storage._sql.due_before.compile(dialect=conn.dialect)
            values = {"b_kind": "lease", "b_before": 126_000_000_000_000, "b_limit": 100}
            params = {name: values.get(name, value) for name, value in compiled.params.items()}
            plan = "\n".join(
                " ".join(str(v) for v in row)
                for row in conn.exec_driver_sql(f"EXPLAIN {compiled}", params)
            )
        print(plan)  # shown with -s: the report quotes it
        assert f"{self.prefix}due_by_time" in plan, plan
