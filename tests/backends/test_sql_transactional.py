"""Fires that commit with the caller's transaction (issue 27 item 4, docs/transactions.md).

On SQLite (a file), PostgreSQL and MariaDB: the session's state is written inside
the caller's ORM session (or a Core ``transaction()`` block) and dispatched only after
its commit, never after a rollback; a conflict is retried in a savepoint without
aborting the caller's transaction; the row lock the caller holds makes other writers
fail with the lock-timeout error; a process killed between the commit and the
dispatch leaves the instance to the recovery sweep; a storage on another database
is refused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from services import require_service
from sqlalchemy.orm import Session

from triggers_backends.sqlalchemy import (
    SQLAlchemyStorage,
    create_schema,
    drop_schema,
    shared_engine,
    transaction,
)
from triggers_backends.sqlalchemy._transactional import BoundStorage
from triggers_core import TriggerManager
from triggers_core.engine.state import Status
from triggers_core.errors import ConcurrencyError, ConflictError, StorageError
from triggers_core.runtime.recovery import sweep_store
from triggers_core.testing.storage_contract import RecordingRunner

CONFIG = {"t_order": {"after": ["ordered"], "andEvery": "ordered", "run": "contract_task"}}
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MARIADB = "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4"
ROOT = Path(__file__).resolve().parents[2]


class Db:
    """One database: the storage's engine (lock timeout 1 s) and the application's own."""

    def __init__(self, kind: str, url: str, app: sa.Engine) -> None:
        self.kind = kind
        self.prefix = f"tx{uuid.uuid4().hex[:10]}_"
        self.url = url
        self.storage_engine = shared_engine(
            f"{url}{'&' if '?' in url else '?'}triggers_lock_timeout=1"
        )
        self.app = app
        create_schema(self.storage_engine, self.prefix)
        self.orders = sa.Table(
            f"{self.prefix}orders",
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        )
        self.orders.create(self.app)

    def storage(self, uid: str) -> SQLAlchemyStorage:
        return SQLAlchemyStorage(uid, self.storage_engine, table_prefix=self.prefix)

    def manager(self, uid: str, runner: RecordingRunner | None = None, **kw: Any) -> TriggerManager:
        rec = runner or RecordingRunner()
        return TriggerManager(self.storage(uid), runners={"rec": rec}, default_runner="rec", **kw)

    def order_ids(self) -> list[int]:
        with self.app.connect() as conn:
            return sorted(conn.execute(sa.select(self.orders.c.id)).scalars())

    def drop(self) -> None:
        self.orders.drop(self.app)
        drop_schema(self.storage_engine, self.prefix)


def open_db(kind: str, tmp_path: Path) -> Db:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'app.db'}"
        return Db(kind, url, sa.create_engine(url))  # the application's: pysqlite as it comes
    if kind == "postgresql":
        require_service("PostgreSQL", "127.0.0.1", 5432)
        return Db(kind, PG, sa.create_engine(PG))
    require_service("MariaDB", "127.0.0.1", 3306)
    return Db(kind, MARIADB, sa.create_engine(MARIADB, isolation_level="READ COMMITTED"))


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    found = open_db(request.param, tmp_path)
    yield found
    found.drop()
    found.app.dispose()


@pytest.fixture(params=["postgresql", "mariadb"])
def server_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """A database server: row locks, and writers that can conflict."""
    found = open_db(request.param, tmp_path)
    yield found
    found.drop()
    found.app.dispose()


@pytest.fixture
def uid() -> str:
    return f"tx-{uuid.uuid4().hex}"


def test_commit_stores_and_dispatches_once(db: Db, uid: str) -> None:
    rec = RecordingRunner()
    manager = db.manager(uid, rec)
    manager.update_configuration(CONFIG)
    with Session(db.app) as session:
        session.execute(db.orders.insert().values(id=1))
        scheduled = manager.fire("ordered", {"order": 1}, session=session)
        assert [i.name for i in scheduled] == ["t_order#0"]
        assert rec.dispatched == []  # not before the commit
        session.commit()
        assert rec.dispatched == ["t_order#0"]
        # A later transaction of the same session dispatches nothing again.
        session.execute(db.orders.insert().values(id=2))
        session.commit()
    assert rec.dispatched == ["t_order#0"]
    stored = db.storage(uid).get_instance("t_order#0")
    assert stored.status is Status.SCHEDULED
    assert dict(db.storage(uid).load_full().state.latest_kwargs["ordered"]) == {"order": 1}
    assert db.order_ids() == [1, 2]


def test_rollback_stores_nothing_and_dispatches_nothing(db: Db, uid: str) -> None:
    rec = RecordingRunner()
    manager = db.manager(uid, rec)
    manager.update_configuration(CONFIG)
    before = db.storage(uid).load_full().version
    with Session(db.app) as session:
        session.execute(db.orders.insert().values(id=1))
        manager.fire("ordered", {"order": 1}, session=session)
        session.rollback()
        session.execute(db.orders.insert().values(id=2))
        session.commit()  # another transaction of the session: not the fire's
    assert rec.dispatched == []
    after = db.storage(uid).load_full()
    assert after.version == before
    assert after.state.instances == {}
    assert db.order_ids() == [2]


def test_a_rolled_back_savepoint_drops_the_fire(db: Db, uid: str) -> None:
    rec = RecordingRunner()
    manager = db.manager(uid, rec)
    manager.update_configuration(CONFIG)
    with Session(db.app) as session:
        session.execute(db.orders.insert().values(id=1))
        nested = session.begin_nested()
        manager.fire("ordered", {"order": 1}, session=session)
        nested.rollback()
        manager.fire("ordered", {"order": 2}, session=session)
        session.commit()
    assert rec.dispatched == ["t_order#0"]
    stored = db.storage(uid).load_full().state
    assert list(stored.instances) == ["t_order#0"]
    assert dict(stored.latest_kwargs["ordered"]) == {"order": 2}


def test_a_session_closed_without_commit_dispatches_nothing(db: Db, uid: str) -> None:
    rec = RecordingRunner()
    manager = db.manager(uid, rec)
    manager.update_configuration(CONFIG)
    session = Session(db.app)
    manager.fire("ordered", session=session)
    session.close()
    with session.begin():
        session.execute(db.orders.insert().values(id=3))
    assert rec.dispatched == []
    assert db.storage(uid).load_full().state.instances == {}


def test_a_conflict_is_retried_in_a_savepoint(
    server_db: Db, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = server_db
    rec = RecordingRunner()
    manager = db.manager(uid, rec)
    manager.update_configuration(CONFIG)
    other = db.manager(uid)
    original = BoundStorage.compare_and_swap
    attempts: list[int] = []

    def interfering(self: BoundStorage, *args: Any) -> Any:
        attempts.append(1)
        if len(attempts) == 1:  # another writer commits between our load and our write
            assert call_in_thread(lambda: other.fire("ordered", {"by": "other"})) is None
        return original(self, *args)

    monkeypatch.setattr(BoundStorage, "compare_and_swap", interfering)
    with Session(db.app) as session:
        session.execute(db.orders.insert().values(id=1))
        scheduled = manager.fire("ordered", {"by": "caller"}, session=session)
        session.execute(db.orders.insert().values(id=2))  # the transaction is alive
        session.commit()
    assert len(attempts) == 2
    assert [i.name for i in scheduled] == ["t_order#1"]
    assert rec.dispatched == ["t_order#1"]
    stored = db.storage(uid).load_full().state
    assert sorted(stored.instances) == ["t_order#0", "t_order#1"]
    assert dict(stored.latest_kwargs["ordered"]) == {"by": "caller"}
    assert db.order_ids() == [1, 2]


def test_repeatable_read_makes_one_attempt(
    server_db: Db, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MariaDB's default level, and PostgreSQL's REPEATABLE READ: no retry inside."""
    db = server_db
    manager = db.manager(uid)
    manager.update_configuration(CONFIG)
    other = db.manager(uid)
    original = BoundStorage.compare_and_swap

    def interfering(self: BoundStorage, *args: Any) -> Any:
        assert call_in_thread(lambda: other.fire("ordered")) is None
        return original(self, *args)

    monkeypatch.setattr(BoundStorage, "compare_and_swap", interfering)
    app = sa.create_engine(db.url, isolation_level="REPEATABLE READ")
    try:
        with Session(app) as session:
            session.execute(db.orders.insert().values(id=1))
            with pytest.raises(ConcurrencyError, match="READ COMMITTED"):
                manager.fire("ordered", session=session)
            session.commit()  # the caller's own work is intact
    finally:
        app.dispose()
    assert db.order_ids() == [1]
    assert list(db.storage(uid).load_full().state.instances) == ["t_order#0"]


def call_in_thread(call: Callable[[], Any], bound: float = 30.0) -> BaseException | None:
    """Run ``call`` in another thread; its exception (None if it returned)."""
    raised: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            raised.append(exc)
        else:
            raised.append(None)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(bound)
    assert raised, "the call did not finish"
    return raised[0]


def test_the_held_row_lock_fails_other_writers_with_the_lock_timeout(
    server_db: Db, uid: str
) -> None:
    db = server_db
    rec = RecordingRunner()
    manager = db.manager(uid, rec)
    manager.update_configuration(CONFIG)
    other = db.manager(uid)
    with Session(db.app) as session:
        manager.fire("ordered", session=session)
        started = time.monotonic()
        raised = call_in_thread(lambda: other.fire("ordered"))
        waited = time.monotonic() - started
        assert isinstance(raised, StorageError), raised
        assert not isinstance(raised, ConflictError)
        assert "row lock for longer than 1s" in str(raised)
        assert waited < 10
        # Another caller's transaction waits as long (its lock wait is bounded for the
        # fire), and its transaction carries on.
        with Session(db.app) as second:
            second.execute(db.orders.insert().values(id=7))
            with pytest.raises(StorageError, match="row lock for longer than 1s"):
                manager.fire("ordered", session=second)
            second.commit()
        session.commit()
    assert rec.dispatched == ["t_order#0"]
    assert list(db.storage(uid).load_full().state.instances) == ["t_order#0"]
    assert db.order_ids() == [7]
    assert [i.name for i in other.fire("ordered")] == ["t_order#1"]  # the lock is gone


def test_sqlite_the_held_write_lock_fails_other_writers(tmp_path: Path, uid: str) -> None:
    """SQLite locks the whole file: other writers wait their busy timeout, then give up."""
    db = open_db("sqlite", tmp_path)
    try:
        rec = RecordingRunner()
        manager = db.manager(uid, rec)
        manager.update_configuration(CONFIG)
        other = db.manager(uid)
        other.max_attempts = 2
        with Session(db.app) as session:
            manager.fire("ordered", session=session)  # BEGIN IMMEDIATE: the write lock
            raised = call_in_thread(lambda: other.fire("ordered"))
            assert isinstance(raised, ConcurrencyError), raised
            session.commit()
        assert rec.dispatched == ["t_order#0"]
        assert [i.name for i in other.fire("ordered")] == ["t_order#1"]
    finally:
        db.drop()
        db.app.dispose()


def test_core_transaction_block(db: Db, uid: str) -> None:
    rec = RecordingRunner()
    manager = db.manager(uid, rec)
    manager.update_configuration(CONFIG)
    with transaction(db.app) as tx:
        tx.connection.execute(db.orders.insert().values(id=1))
        manager.fire("ordered", {"order": 1}, session=tx)
        assert rec.dispatched == []
    assert rec.dispatched == ["t_order#0"]

    def failing() -> None:
        with transaction(db.app) as tx:
            tx.connection.execute(db.orders.insert().values(id=2))
            manager.fire("ordered", {"order": 2}, session=tx)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing()
    assert rec.dispatched == ["t_order#0"]
    assert list(db.storage(uid).load_full().state.instances) == ["t_order#0"]
    assert db.order_ids() == [1]
    with db.app.connect() as conn:
        with pytest.raises(ValueError, match="no after-commit hook"):
            manager.fire("ordered", session=conn)
        conn.execute(sa.select(1))
        with pytest.raises(ValueError, match="already in a transaction"), transaction(conn):
            pass


def test_a_storage_on_another_database_is_refused(tmp_path: Path, uid: str) -> None:
    storage = SQLAlchemyStorage(uid, "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/test")
    manager = TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")
    app = sa.create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        with Session(app) as session, pytest.raises(ValueError, match="session= is on") as raised:
            manager.fire("ordered", session=session)
    finally:
        app.dispose()
    message = str(raised.value)
    assert "session= is on sqlite:///" in message
    assert "127.0.0.1:1/test" in message
    assert "s3cret" not in message


KILLED_BETWEEN_COMMIT_AND_DISPATCH = textwrap.dedent(
    """
    import os, signal, sys
    import sqlalchemy as sa
    from sqlalchemy import event
    from sqlalchemy.orm import Session
    from triggers_backends.sqlalchemy import SQLAlchemyStorage
    from triggers_core import TriggerManager
    from triggers_core.testing.storage_contract import RecordingRunner

    from triggers_backends.sqlalchemy import transaction

    url, app_url, prefix, uid, mode = sys.argv[1:]
    storage = SQLAlchemyStorage(uid, url, table_prefix=prefix)
    manager = TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")
    die = lambda *_: os.kill(os.getpid(), signal.SIGKILL)
    if mode == "orm":
        session = Session(sa.create_engine(app_url))
        # Runs before the fire's own after-commit action: the process dies in between.
        event.listen(session, "after_commit", die)
        manager.fire("ordered", {"order": 9}, session=session)
        session.commit()
    else:
        with transaction(sa.create_engine(app_url)) as tx:
            manager.fire("ordered", {"order": 9}, session=tx)
            tx._actions.insert(0, die)  # after the commit, before the dispatch
    print("not killed")
    """
)


@pytest.mark.parametrize("mode", ["orm", "core"])
def test_killed_between_commit_and_dispatch_the_sweep_dispatches(
    db: Db, uid: str, tmp_path: Path, mode: str
) -> None:
    rec = RecordingRunner()
    manager = db.manager(uid, rec)
    manager.update_configuration(CONFIG)
    script = tmp_path / "killed.py"
    script.write_text(KILLED_BETWEEN_COMMIT_AND_DISPATCH, encoding="utf-8")
    app_url = db.app.url.render_as_string(hide_password=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script), db.url, app_url, db.prefix, uid, mode],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    stored = db.storage(uid).get_instance("t_order#0")
    assert stored.status is Status.SCHEDULED  # committed, never dispatched
    # The store-wide sweep finds it through the due index (written in the same commit).
    report = sweep_store(
        db.storage(uid),
        lambda s: TriggerManager(s, runners={"rec": rec}, default_runner="rec"),
        now=datetime.now(UTC) + timedelta(seconds=2),
        dispatch_lease=1.0,
    )
    assert [(a.instance, a.action) for a in report.acted if a.session == uid] == [
        ("t_order#0", "dispatched again")
    ]
    assert rec.dispatched == ["t_order#0"]


class HookedManager(TriggerManager):
    """Records its ``_post_fire`` calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hooked: list[tuple[str, list[str]]] = []

    def _post_fire(self, trigger_name: str, scheduled_instances: list[Any]) -> None:
        self.hooked.append((trigger_name, [i.name for i in scheduled_instances]))


def test_hooks_run_after_the_commit_and_never_after_a_rollback(db: Db, uid: str) -> None:
    rec = RecordingRunner()
    manager = HookedManager(db.storage(uid), runners={"rec": rec}, default_runner="rec")
    manager.update_configuration(CONFIG)
    with Session(db.app) as session:
        manager.fire("ordered", session=session)
        assert manager.hooked == []
        session.rollback()
        manager.fire("ordered", session=session)
        assert manager.hooked == []
        session.commit()
    assert manager.hooked == [("ordered", ["t_order#0"])]
    assert rec.dispatched == ["t_order#0"]


def test_a_keyed_fire_in_a_transaction_happens_once(db: Db, uid: str) -> None:
    rec = RecordingRunner()
    manager = db.manager(uid, rec)
    manager.update_configuration(CONFIG)
    with Session(db.app) as session:
        first = manager.fire_result("ordered", idempotency_key="order-1", session=session)
        again = manager.fire_result("ordered", idempotency_key="order-1", session=session)
        session.commit()
    assert (first.duplicate, again.duplicate) == (False, True)
    assert [i.name for i in again.scheduled] == ["t_order#0"]
    assert rec.dispatched == ["t_order#0"]
    assert manager.fire_result("ordered", idempotency_key="order-1").duplicate


def test_the_callers_lock_wait_is_put_back_after_the_fire(uid: str, tmp_path: Path) -> None:
    db = open_db("postgresql", tmp_path)
    try:
        manager = db.manager(uid)
        manager.update_configuration(CONFIG)
        with Session(db.app) as session:
            session.execute(sa.text("SET LOCAL lock_timeout = '7s'"))
            manager.fire("ordered", session=session)
            assert session.execute(sa.text("SHOW lock_timeout")).scalar_one() == "7s"
            session.commit()
        with Session(db.app) as session:  # a transaction the server aborted already
            with pytest.raises(sa.exc.DataError):
                session.execute(sa.text("SELECT 1 / 0"))
            with pytest.raises(StorageError, match="joining the caller's transaction failed"):
                manager.fire("ordered", session=session)
    finally:
        db.drop()
        db.app.dispose()


def test_sqlite_a_transaction_that_read_before_another_writer_makes_one_attempt(
    tmp_path: Path, uid: str
) -> None:
    """Its snapshot predates the other commit: a retry could never see it."""
    db = open_db("sqlite", tmp_path)
    try:
        manager = db.manager(uid)
        manager.update_configuration(CONFIG)
        other = db.manager(uid)
        # The storage's engine: SQLAlchemy's recipe, a deferred BEGIN on the first statement.
        with Session(db.storage_engine) as session:
            session.execute(sa.text(f"SELECT count(*) FROM {db.prefix}sessions")).scalar()
            other.fire("ordered")  # commits after the caller's snapshot
            with pytest.raises(ConcurrencyError, match="SQLite: another writer") as raised:
                manager.fire("ordered", session=session)
            assert "roll it back and run it again" in str(raised.value)
            session.rollback()  # the snapshot is stale: SQLite refuses its writes too
            session.execute(db.orders.insert().values(id=5))
            manager.fire("ordered", session=session)  # run again: it works
            session.commit()
        assert sorted(db.storage(uid).load_full().state.instances) == ["t_order#0", "t_order#1"]
        assert db.order_ids() == [5]
    finally:
        db.drop()
        db.app.dispose()


def test_concurrent_transactions_firing_one_session_are_exact(server_db: Db, uid: str) -> None:
    """Threads, each firing in transactions of its own: every fire counted once."""
    db = server_db
    rec = RecordingRunner()
    manager = db.manager(uid, rec)
    manager.update_configuration(CONFIG)
    threads, fires = 6, 5
    errors: list[BaseException] = []

    def fire_some(worker: int) -> None:
        try:
            for n in range(fires):
                with Session(db.app) as session:
                    session.execute(db.orders.insert().values(id=worker * 100 + n))
                    manager.fire("ordered", {"worker": worker, "n": n}, session=session)
                    session.commit()
        except BaseException as exc:
            errors.append(exc)

    started = [threading.Thread(target=fire_some, args=(w,)) for w in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(120)
    assert errors == []
    stored = db.storage(uid).load_full().state.instances
    assert len(stored) == threads * fires
    assert sorted(rec.dispatched) == sorted(stored)
    assert len(db.order_ids()) == threads * fires


def test_a_refused_fire_leaves_the_transaction_usable(db: Db, uid: str) -> None:
    from triggers_core.errors import UnknownTriggerError

    rec = RecordingRunner()
    manager = db.manager(uid, rec)
    manager.update_configuration(CONFIG)
    with Session(db.app) as session:
        session.execute(db.orders.insert().values(id=1))
        with pytest.raises(UnknownTriggerError):
            manager.fire("orderd", session=session, strict=True)
        manager.fire("ordered", session=session)
        session.commit()
    assert rec.dispatched == ["t_order#0"]
    assert db.order_ids() == [1]
    with pytest.raises(TypeError, match="session= takes a SQLAlchemy ORM Session"):
        manager.fire("ordered", session="not a transaction")


def test_session_on_a_storage_that_is_no_sql_database_is_refused(uid: str) -> None:
    from triggers_core.errors import UnsupportedOperationError

    manager = TriggerManager("memory://", uid)
    with pytest.raises(UnsupportedOperationError, match="use a SQL storage"):
        manager.fire("ordered", session=object())


def test_crossed_transactions_fail_one_at_once_on_a_deadlock(server_db: Db, uid: str) -> None:
    """Two callers each hold one session and fire the other's: the database picks a victim,
    whose fire fails at once (a retry inside its transaction would wait again)."""
    db = server_db
    patient = shared_engine(f"{db.url}{'&' if '?' in db.url else '?'}triggers_lock_timeout=20")
    rec = RecordingRunner()

    def manager(name: str) -> TriggerManager:
        storage = SQLAlchemyStorage(name, patient, table_prefix=db.prefix)
        found = TriggerManager(storage, runners={"rec": rec}, default_runner="rec")
        found.update_configuration(CONFIG)
        return found

    one, two = manager(f"{uid}-1"), manager(f"{uid}-2")
    both_hold = threading.Barrier(2, timeout=30)
    outcomes: dict[str, BaseException | None] = {}

    def caller(name: str, first: TriggerManager, second: TriggerManager) -> None:
        try:
            with Session(db.app) as session:
                first.fire("ordered", session=session)
                both_hold.wait()
                second.fire("ordered", session=session)
                session.commit()
        except BaseException as exc:
            outcomes[name] = exc
        else:
            outcomes[name] = None

    threads = [
        threading.Thread(target=caller, args=("a", one, two)),
        threading.Thread(target=caller, args=("b", two, one)),
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert time.monotonic() - started < 15  # not 20 s of lock wait, nor 100 retries
    failed = [exc for exc in outcomes.values() if exc is not None]
    assert len(outcomes) == 2, outcomes
    assert len(failed) == 1, outcomes
    assert isinstance(failed[0], ConcurrencyError), failed[0]
    assert "deadlock" in str(failed[0])
    # The survivor committed both fires; the victim's were rolled back with it.
    assert sorted(rec.dispatched) == ["t_order#0", "t_order#0"]
    assert list(one.storage.load_full().state.instances) == ["t_order#0"]
    assert list(two.storage.load_full().state.instances) == ["t_order#0"]


def test_a_scoped_session_is_its_current_session(db: Db, uid: str) -> None:
    from sqlalchemy.orm import scoped_session, sessionmaker

    rec = RecordingRunner()
    manager = db.manager(uid, rec)
    manager.update_configuration(CONFIG)
    scoped = scoped_session(sessionmaker(db.app))
    try:
        scoped.execute(db.orders.insert().values(id=1))
        manager.fire("ordered", session=scoped)
        assert rec.dispatched == []
        scoped.commit()
    finally:
        scoped.remove()
    assert rec.dispatched == ["t_order#0"]
