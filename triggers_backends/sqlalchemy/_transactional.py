"""Writing a session inside the caller's own transaction (docs/transactions.md).

:meth:`SQLAlchemyStorage.bind_transaction
<triggers_backends.sqlalchemy.SQLAlchemyStorage.bind_transaction>` takes the
caller's transaction, either a SQLAlchemy ORM :class:`~sqlalchemy.orm.Session`
or what :func:`transaction` yields around a Core
:class:`~sqlalchemy.engine.Connection`, and returns a
:class:`~triggers_core.runtime.transactional.CallerTransaction`:

* a storage (:class:`BoundStorage`) that runs every statement on the
  caller's connection. Each compare-and-swap attempt (its load included) runs
  in a SAVEPOINT: a conflict rolls back to it and the manager retries, the
  caller's transaction carries on. Once an attempt wrote, the session's row
  stays locked until the caller's transaction ends.
* an after-commit hook: the ORM session's ``after_commit`` of its outermost
  transaction (an enclosing SAVEPOINT rolled back, or the transaction rolled
  back or closed: dropped), or, for a Core connection, the end of
  :func:`transaction`'s block.

The load needs READ COMMITTED (PostgreSQL's default; MySQL's and MariaDB's
default is REPEATABLE READ): each statement then sees the latest commits, so
an attempt retried after a conflict sees the write it lost to. At a stricter
level the transaction keeps its first snapshot, so a conflict cannot be
retried inside it: the fire makes one attempt, and a conflict is a
:class:`~triggers_core.errors.ConcurrencyError` telling the caller to retry
its transaction. SQLite has one writer at a time and a transaction reads one
snapshot, so it makes one attempt too: a fire that is the first statement of
a transaction on pysqlite's own transaction handling begins it with ``BEGIN
IMMEDIATE`` (the write lock up front); a transaction that wrote before the
fire holds the lock already.

While the fire runs, the caller's connection waits at most the storage's lock
timeout (``triggers_lock_timeout``, default 5 s) for the session's row lock;
PostgreSQL's ``lock_timeout`` and MySQL's ``innodb_lock_wait_timeout`` are
set for the fire and put back after it. Other writers of the session wait for
the row lock the caller's transaction holds up to their own lock timeout,
then fail with the lock-timeout :class:`~triggers_core.errors.StorageError`:
nobody waits forever.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine

from triggers_backends.sqlalchemy._django import borrow, is_django_connection
from triggers_backends.sqlalchemy._errors import driver_error, public_url
from triggers_backends.sqlalchemy._reading import ReadingMixin
from triggers_backends.sqlalchemy._timeouts import Timeouts, timeouts_of
from triggers_backends.sqlalchemy._writes import WritingMixin
from triggers_core.engine.scopes import HEADER_ONLY, Changes, Scope, Selector
from triggers_core.engine.state import SessionState
from triggers_core.errors import ConcurrencyError, ConflictError
from triggers_core.runtime.storage import Snapshot, Version

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, SessionTransaction

__all__ = ["BoundStorage", "SQLTransaction", "bind", "transaction"]

#: Where an ORM session keeps the fires waiting for its commit.
_PENDING_KEY = "triggers_after_commit"


class SQLTransaction:
    """A Core connection's transaction, opened by :func:`transaction`: pass it as ``session=``."""

    def __init__(self, connection: Connection) -> None:
        #: The connection whose transaction this is (run your statements on it).
        self.connection = connection
        self._actions: list[Callable[[], None]] = []

    def _after_commit(self, action: Callable[[], None]) -> None:
        self._actions.append(action)


@contextlib.contextmanager
def transaction(connection: Connection | Engine) -> Iterator[SQLTransaction]:
    """Begin a transaction on ``connection``, commit it when the block ends, then dispatch.

    A Core connection has no after-commit hook, so this block owns the
    transaction: pass what it yields as ``session=`` to ``manager.fire``;
    the fires' hooks and dispatches run right after the commit (in fire
    order), never if the block raises (then it rolls back). Given an engine,
    it connects first (and closes the connection at the end). If the process
    dies between the commit and the dispatch, the recovery sweep dispatches
    the instances.
    """
    if isinstance(connection, Engine):
        with connection.connect() as opened, transaction(opened) as tx:
            yield tx
        return
    if connection.in_transaction():
        raise ValueError(
            "the connection is already in a transaction: transaction(connection) begins and "
            "commits it itself (so that the fires are dispatched after its commit); use it "
            "instead of connection.begin(), before any statement on the connection"
        )
    tx = SQLTransaction(connection)
    with connection.begin():
        yield tx
    actions, tx._actions = tx._actions, []
    for action in actions:
        action()


class _Borrowed:
    """Stands in for the storage's engines: every "connection" it opens is the caller's,
    every transaction it begins is nothing (the attempt's savepoint is open)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def connect(self) -> _Borrowed:
        return self

    def __enter__(self) -> _Borrowed:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def begin(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


class BoundStorage(ReadingMixin, WritingMixin):
    """A session's storage whose loads and compare-and-swaps run on a caller's connection,
    each attempt in a savepoint (see the module). Mixed before the storage's own class
    by :func:`bind`."""

    _connection: Connection
    _attempt: sa.engine.NestedTransaction | None = None
    #: False: a conflict cannot be retried inside the caller's transaction.
    _retries: bool = True

    #: The storage this one is bound from (its checks run on its own connections).
    _origin: Any = None

    def check_fire_keys(self) -> None:
        """The storage's own check (never a failing probe inside the caller's transaction)."""
        self._origin.check_fire_keys()

    def _begin_attempt(self) -> None:
        self.end_attempt()
        self._attempt = self._connection.begin_nested()

    def end_attempt(self) -> None:
        """Roll back the attempt's savepoint, if one is open (nothing was written)."""
        attempt, self._attempt = self._attempt, None
        if attempt is not None and attempt.is_active:
            # Fails only when the caller's transaction is gone (its connection dropped;
            # MySQL ended it for a deadlock): the error that ended it is the one to see.
            with contextlib.suppress(sa_exc.SQLAlchemyError):
                attempt.rollback()

    def load(self, scope: Scope | Selector = HEADER_ONLY) -> Snapshot:
        self._begin_attempt()
        try:
            return self._bound_read(scope)
        except ConflictError as exc:
            self.end_attempt()
            final = self._final(exc)
            if final is None:
                raise  # the manager retries, in a new savepoint
            raise final from exc
        except BaseException:
            self.end_attempt()
            raise

    def load_full(self) -> Snapshot:
        self._begin_attempt()
        try:
            with self._reader.connect() as conn:
                return self._read_in(conn, None)
        except sa_exc.SQLAlchemyError as exc:
            self.end_attempt()
            raise self._error(exc, "load") from exc
        except BaseException:
            self.end_attempt()
            raise

    def _bound_read(self, scope: Scope | Selector) -> Snapshot:
        """Statements that each see the latest commits (READ COMMITTED), checked to
        have read one version; else (or on SQLite, a snapshot) in one go under the
        session's row lock."""
        try:
            with self._reader.connect() as conn:
                if self._retries and self.engine.dialect.name != "sqlite":
                    found = self._read_unlocked(conn, scope)
                    if found is not None:
                        return found
                    sessions = self._tables.sessions
                    conn.execute(
                        sa.select(sessions.c.version)
                        .where(sessions.c.session_key == self._key)
                        .with_for_update()
                    ).all()
                return self._read_in(conn, scope)
        except sa_exc.SQLAlchemyError as exc:
            raise self._error(exc, "load") from exc

    def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        if self._attempt is None:
            self._begin_attempt()
        try:
            version = super().compare_and_swap(expected, state, changes)
        except ConflictError as exc:
            self.end_attempt()
            final = self._final(exc)
            if final is None:
                raise  # the manager retries, in a new savepoint
            raise final from exc
        except BaseException:
            self.end_attempt()
            raise
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            try:
                attempt.commit()  # RELEASE SAVEPOINT: part of the caller's transaction now
            except sa_exc.SQLAlchemyError as exc:
                raise self._error(exc, "compare_and_swap") from exc
        return version

    def _final(self, exc: ConflictError) -> ConcurrencyError | None:
        """The error ending the fire for a conflict no retry inside the caller's
        transaction can resolve (None: retry)."""
        if self._retries:
            if not _victim(exc):
                return None
            why = (
                "the database ended this statement to break a deadlock with another "
                "transaction, which holds what this one waits for: a retry inside the "
                "caller's transaction would wait again (MySQL and MariaDB have rolled it "
                "back already), so roll it back and run it again (docs/transactions.md)"
            )
            return ConcurrencyError(f"{exc.message}; {why}", backend=self._label, session=self.uid)
        if self.engine.dialect.name == "sqlite":
            why = (
                "SQLite: another writer held the database, or wrote it since the "
                "caller's transaction first read it, and that transaction keeps its "
                "snapshot, so the fire cannot be retried inside it: roll it back and "
                "run it again; a transaction that writes before it fires holds the "
                "write lock and never meets this (docs/transactions.md)"
            )
        else:
            why = (
                "the caller's transaction runs at an isolation level that keeps one "
                "snapshot (REPEATABLE READ or SERIALIZABLE), so the fire cannot be "
                "retried inside it: roll it back and run it again, or run it at READ "
                "COMMITTED (docs/transactions.md)"
            )
        return ConcurrencyError(f"{exc.message}; {why}", backend=self._label, session=self.uid)


def _victim(exc: ConflictError) -> bool:
    """A deadlock or a serialization failure (not a version that moved on)."""
    cause = exc.__cause__
    orig = driver_error(cause) if isinstance(cause, sa_exc.SQLAlchemyError) else None
    if orig is None:
        return False
    code = orig.args[0] if orig.args and isinstance(orig.args[0], int) else None
    return getattr(orig, "sqlstate", None) in ("40001", "40P01") or code == 1213


class _Caller:
    """The :class:`~triggers_core.runtime.transactional.CallerTransaction` of one fire."""

    def __init__(
        self,
        storage: BoundStorage,
        connection: Connection,
        after_commit: Callable[[Callable[[], None]], None],
        restore: Callable[[], None],
    ) -> None:
        self._storage = storage
        self._connection = connection
        self._after_commit = after_commit
        self._restore = restore

    @property
    def storage(self) -> BoundStorage:
        return self._storage

    @property
    def max_attempts(self) -> int | None:
        return None if self._storage._retries else 1

    def end_attempt(self) -> None:
        try:
            self._storage.end_attempt()
        finally:
            self._restore()

    def after_commit(self, action: Callable[[], None]) -> None:
        self._after_commit(action)


_BOUND: dict[type[Any], type[Any]] = {}


def bind(storage: Any, session: object) -> _Caller:
    """``session`` (an ORM session or a :class:`SQLTransaction`) bound to ``storage``."""
    orm = _orm_session(session)
    if orm is not None:
        connection = orm.connection()  # begins the session's transaction if it had none
        after_commit = _orm_hook(orm)
    elif isinstance(session, SQLTransaction):
        connection = session.connection
        if not connection.in_transaction():
            raise ValueError("the transaction(connection) block this came from has ended")
        after_commit = session._after_commit
    elif is_django_connection(session):
        connection, after_commit = borrow(session, storage.engine.url, _identity)
    elif isinstance(session, Connection):
        raise ValueError(
            "a Core Connection has no after-commit hook to dispatch the fire's instances "
            "from: wrap its transaction in triggers_backends.sqlalchemy.transaction(connection)"
            " and pass what it yields as session= (docs/transactions.md)"
        )
    else:
        raise TypeError(
            "session= takes a SQLAlchemy ORM Session, what "
            "triggers_backends.sqlalchemy.transaction(connection) yields, or a Django "
            "database connection (inside transaction.atomic()), "
            f"got {type(session).__name__}"
        )
    if not is_django_connection(session):  # borrow() compared Django's settings
        _check_same_database(storage, connection)
    # The tables' probes (remembered per engine) run on the storage's own connections,
    # never as failing statements inside the caller's transaction.
    storage._due_ready()
    storage._latest_ready()
    base = type(storage)
    cls = _BOUND.get(base)
    if cls is None:
        cls = _BOUND[base] = type(f"Bound{base.__name__}", (BoundStorage, base), {})
    bound: BoundStorage = cls(
        storage.uid,
        storage.engine,
        table_prefix=storage.table_prefix,
        sqlite_synchronous=storage.sqlite_synchronous,
        max_value_bytes=storage.max_value_bytes,
    )
    borrowed = cast(Engine, _Borrowed(connection))
    bound._reader = bound._writer = borrowed
    bound.__dict__["_autocommit_engine"] = borrowed
    bound.__dict__["_raw_engine"] = None  # every statement goes through the caller's connection
    bound._connection = connection
    bound._origin = storage
    borrowed_from_django = is_django_connection(session)
    try:
        bound._retries = _retries(connection)
        lock_wait = _bound_lock_wait(connection, timeouts_of(storage.engine) or Timeouts())
    except sa_exc.SQLAlchemyError as exc:
        if borrowed_from_django:
            connection.close()
        raise storage._error(exc, "joining the caller's transaction") from exc

    def restore() -> None:
        try:
            # The caller's setting back; if its transaction broke meanwhile, it ends
            # with it (and the error that broke it is the one to see).
            with contextlib.suppress(sa_exc.SQLAlchemyError):
                lock_wait()
        finally:
            if borrowed_from_django:
                connection.close()  # back to its engine; Django's transaction goes on

    return _Caller(bound, connection, after_commit, restore)


def _orm_session(session: object) -> Session | None:
    """``session`` if it is an ORM session, or a ``scoped_session``'s current one (the ORM
    is not imported for the question: an application that made a session imported it)."""
    orm = sys.modules.get("sqlalchemy.orm")
    if orm is None:
        return None
    if isinstance(session, orm.scoped_session):
        session = session()  # this thread's (or scope's) session
    return session if isinstance(session, orm.Session) else None


#: The port a URL without one means, by backend.
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}


def _identity(url: URL) -> tuple[str, str, int | None, str]:
    """What names a database in a URL: backend, host, port, database (never the password)."""
    backend = url.get_backend_name()
    database = url.database or ""
    if backend == "sqlite":
        return backend, "", None, os.path.realpath(database) if database else ""
    host = url.host or "localhost"
    return backend, host, url.port or _DEFAULT_PORTS.get(backend), database


def _check_same_database(storage: WritingMixin, connection: Connection) -> None:
    if connection.engine is storage.engine:
        return
    if _identity(connection.engine.url) != _identity(storage.engine.url):
        raise ValueError(
            f"session= is on {public_url(connection.engine.url)}, but the session's storage "
            f"is on {public_url(storage.engine.url)}: a fire commits with the caller's "
            "transaction only on the database that holds the storage's tables"
        )


def _retries(connection: Connection) -> bool:
    """Whether a conflict can be retried inside the transaction (see the module)."""
    if connection.dialect.name == "sqlite":
        dbapi: Any = connection.connection.dbapi_connection
        if dbapi is not None and not hasattr(dbapi, "in_transaction"):
            dbapi = getattr(dbapi, "_connection", dbapi)  # aiosqlite's, under SQLAlchemy's adapter
        if dbapi is not None and not getattr(dbapi, "in_transaction", True):
            # Nothing ran yet: take the write lock now, so no other writer gets in.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        # A SQLite transaction reads one snapshot: once it read, a retry sees no more.
        return False
    level = str(connection.get_isolation_level()).upper().replace("_", " ")
    return level in ("READ COMMITTED", "READ UNCOMMITTED", "AUTOCOMMIT")


def _bound_lock_wait(connection: Connection, timeouts: Timeouts) -> Callable[[], None]:
    """Make the caller's connection wait at most ``timeouts.lock`` for a row lock during
    the fire; return what puts its own setting back."""
    name = connection.dialect.name
    if name == "postgresql":
        milliseconds = f"{max(1, round(timeouts.lock * 1000))}ms"
        old = connection.execute(
            sa.text("SELECT current_setting('lock_timeout'), set_config('lock_timeout', :v, true)"),
            {"v": milliseconds},
        ).one()[0]

        def restore() -> None:
            if not connection.closed and connection.in_transaction():
                connection.execute(
                    sa.text("SELECT set_config('lock_timeout', :v, true)"), {"v": old}
                )

        return restore
    if name in ("mysql", "mariadb"):
        seconds = max(1, round(timeouts.lock))
        old_seconds = connection.exec_driver_sql(
            "SELECT @@SESSION.innodb_lock_wait_timeout"
        ).scalar_one()
        connection.exec_driver_sql(f"SET SESSION innodb_lock_wait_timeout = {int(seconds)}")

        def restore_mysql() -> None:
            if not connection.closed:
                connection.exec_driver_sql(
                    f"SET SESSION innodb_lock_wait_timeout = {int(old_seconds)}"
                )

        return restore_mysql
    return lambda: None


# -- the ORM session's commit ------------------------------------------------------------


class _Pending:
    """A fire waiting for its ORM session's outermost transaction to commit."""

    __slots__ = ("action", "chain", "root")

    def __init__(
        self,
        action: Callable[[], None],
        root: SessionTransaction,
        chain: tuple[SessionTransaction, ...],
    ) -> None:
        self.action = action
        self.root = root
        #: The transactions whose rollback undoes the fire's write (savepoints and the root).
        self.chain = chain


def _orm_hook(session: Session) -> Callable[[Callable[[], None]], None]:
    """``after_commit(action)`` for ``session``'s current transaction."""
    pending: list[_Pending] = session.info.setdefault(_PENDING_KEY, [])
    if not session.info.get(_PENDING_KEY + "_listening"):
        session.info[_PENDING_KEY + "_listening"] = True
        event.listen(session, "after_commit", _committed)
        event.listen(session, "after_soft_rollback", _rolled_back)
        event.listen(session, "after_transaction_end", _ended)
    root = session.get_transaction()
    if root is None:  # pragma: no cover - session.connection() began one
        raise ValueError("the session has no transaction")
    innermost = session.get_nested_transaction() or root
    chain: list[SessionTransaction] = []
    link: SessionTransaction | None = innermost
    while link is not None:
        if link.nested or link.parent is None:
            chain.append(link)
        link = link.parent

    def after_commit(action: Callable[[], None]) -> None:
        pending.append(_Pending(action, root, tuple(chain)))

    return after_commit


def _committed(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: the outermost transaction decides
    root = session.get_transaction()
    pending: list[_Pending] = session.info.get(_PENDING_KEY, [])
    ready = [p for p in pending if p.root is root]
    pending[:] = [p for p in pending if p.root is not root]
    for item in ready:
        item.action()


def _rolled_back(session: Session, previous: SessionTransaction) -> None:
    boundary = previous
    while boundary.parent is not None and not boundary.nested:
        boundary = boundary.parent
    pending: list[_Pending] = session.info.get(_PENDING_KEY, [])
    pending[:] = [p for p in pending if not any(t is boundary for t in p.chain)]


def _ended(session: Session, ended: SessionTransaction) -> None:
    if ended.parent is None:  # the outermost one ended: whatever waits for it never runs
        pending: list[_Pending] = session.info.get(_PENDING_KEY, [])
        pending[:] = [p for p in pending if p.root is not ended]
