"""SQLAlchemy storage: SQLite (the embedded default), PostgreSQL and MySQL/MariaDB.

Layout (three tables per prefix, default ``triggers_``):

* ``{prefix}sessions``: one row per session: ``session_key`` (SHA-256 of the
  UID, so any UID fits a fixed-width, collation-proof primary key), ``uid``
  (the full UID), ``version``, ``config`` (the tasks as JSON text, rewritten
  only when they change), ``config_id`` (a random id, new whenever ``config``
  changes), ``header`` (latest kwargs, counters, unsettled instances and
  settled triggers as JSON text) and ``updated_at``.
* ``{prefix}instances``: one row per task instance: ``(session_key,
  name_key)`` primary key (``name_key`` hashes the instance name for the same
  reason), ``name``, ``task_key`` (SHA-256 of the task name), ``status``,
  ``resolved``, ``doc`` (JSON text), ``updated_at``; indexes on
  ``(session_key, status, task_key)``, ``(session_key, resolved)`` and
  ``(status, session_key)`` (the last one serves listing sessions by the
  status of their instances, :meth:`SQLAlchemyStorage.list_sessions`).
* ``{prefix}fire_keys``: one row per fire record (idempotency key, see
  :mod:`triggers_core.idempotency`): ``(session_key, key_hash)`` primary key
  (``key_hash`` is the record's SHA-256 digest; the key itself is not
  stored), ``trigger_name``, ``scheduled`` (JSON list of the instance names
  the first fire scheduled) and ``created_at``. A keyed fire reads its record
  by primary key inside the load snapshot and inserts it inside the
  compare-and-swap transaction; nothing else reads the table, so the number of
  records a session holds costs nothing. Operations without a key never touch
  it: tables created before it existed keep working for them, while a keyed
  fire raises :class:`~triggers_core.errors.SchemaMissingError` saying how to
  add it (``create_schema`` or ``upgrade_schema``), and a finish that would
  record its cascade (a Celery worker's) runs unguarded, with a warning.

Why this shape: an operation reads the header plus the instances its
:class:`~triggers_core.scopes.Scope` names (by name, or the unstarted ones of
some tasks: the first index) and writes the header plus the instances it
changed, so a fire's cost grows neither with the session's history nor with
the instances waiting for other triggers. The configuration is read only when
its ``config_id`` differs from the one this storage object decoded last (so
the task index is built once per configuration). Inspection reads everything.

Tables written by a version of Triggers before this layout (schema version 1)
are refused with :class:`~triggers_core.errors.SchemaMissingError`; upgrade
them with :func:`triggers_backends.sqlalchemy_upgrade.upgrade_schema`.

Concurrency: ``compare_and_swap`` runs ``UPDATE sessions SET version = v + 1
... WHERE session_key = :key AND version = :v`` first, in the same transaction
as the instance writes. The row lock it takes serializes writers of one
session; a rowcount of 0 means the version moved, the transaction is rolled
back and :class:`~triggers_core.errors.ConflictError` is raised. Fire records
are plain INSERTs after that UPDATE: a duplicate key there means another
writer applied the fire first, which is a conflict too (the manager reloads
and finds the record); a record is never updated. A racing
first insert fails on the primary key and is a conflict too, as are deadlocks,
serialization failures and SQLite's "database is locked". Instances an
operation creates are plain INSERTs: since the version UPDATE already
serialized the writers, a duplicate key there means the row existed before
(a counter lowered by hand), which is corruption, reported as
:class:`~triggers_core.errors.SerializationError`, with nothing written. Loads run in one
snapshot transaction (REPEATABLE READ on PostgreSQL and MySQL, a read
transaction in WAL mode on SQLite), so the version and the instances belong to
the same point in time.

Every wait for the server is bounded (connect, lock wait, statement; URL
options, see :mod:`triggers_backends._sql_timeouts`): a server that stops
answering is a :class:`~triggers_core.errors.StorageError` within the bound.

Tables on a database server are never created behind your back: call
:func:`create_schema` (or pass ``create_schema=True``, or add
``triggers_create_schema=true`` to the URL), or include :data:`metadata` (or
:func:`metadata_for`) in your migrations. A SQLite file opened from a URL is
the application's own, so its tables are created unless the URL says
``triggers_create_schema=false``.

SQLite commits are durable against power loss by default (``PRAGMA
synchronous=FULL``); ``triggers_sqlite_synchronous=normal`` in the URL (or
``sqlite_synchronous="normal"``) trades that for much faster commits: in WAL
mode a commit then survives an application crash but may be lost if the
machine loses power or the OS crashes before the next checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import attrs
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, Connection, Engine, make_url

from triggers_backends import _sql_listing, _sql_timeouts
from triggers_backends._sql_statements import CHANGING, MAX_IN, chunks, statements_for
from triggers_backends._sql_timeouts import Timeouts
from triggers_core.errors import (
    ConflictError,
    RegistryError,
    SchemaMissingError,
    SerializationError,
    StorageError,
    StorageURLError,
)
from triggers_core.idempotency import FireKey, decode_scheduled
from triggers_core.listing import (
    DEFAULT_PAGE_SIZE,
    SessionFilter,
    SessionPage,
    check_page_size,
)
from triggers_core.redaction import is_sensitive_key, redact
from triggers_core.registry import install_hint
from triggers_core.scopes import HEADER_ONLY, Changes, Scope, Selector
from triggers_core.serialization import (
    HeaderCodec,
    check_joined,
    config_from_json,
    config_to_json,
    dumps,
    instance_from_json,
    instance_to_json,
    loads,
)
from triggers_core.state import SessionState, TaskInstance, copy_instance
from triggers_core.storage import Snapshot, Storage, Version
from triggers_core.task_table import TaskTable

__all__ = [
    "DEFAULT_TABLE_PREFIX",
    "SQLAlchemyStorage",
    "create_schema",
    "dispose_engines",
    "drop_schema",
    "list_sessions",
    "metadata",
    "metadata_for",
    "shared_engine",
]

#: Table name prefix used unless told otherwise.
DEFAULT_TABLE_PREFIX = "triggers_"

#: Triggers' own URL query options; removed before the URL reaches the driver.
URL_PREFIX_OPTION = "triggers_prefix"
URL_CREATE_OPTION = "triggers_create_schema"
URL_SYNCHRONOUS_OPTION = "triggers_sqlite_synchronous"

#: SQLite ``PRAGMA synchronous`` levels a storage may ask for (FULL is the default).
SQLITE_SYNCHRONOUS_LEVELS = ("full", "normal")

#: Drivers used when a URL names none (``postgresql://`` -> psycopg 3, ...).
DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}

# Long JSON documents: MySQL's TEXT stops at 64 KiB, so use LONGTEXT there.
_Document = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


@attrs.frozen
class _Tables:
    metadata: sa.MetaData
    sessions: sa.Table
    instances: sa.Table
    fire_keys: sa.Table


def _define(meta: sa.MetaData, prefix: str) -> _Tables:
    sessions = sa.Table(
        f"{prefix}sessions",
        meta,
        # utf8mb4 on MySQL/MariaDB whatever the database default; keys are hex digests,
        # so case-insensitive or PAD SPACE collations cannot merge two UIDs or names.
        sa.Column("session_key", sa.String(64), primary_key=True, comment="sha256(uid), hex"),
        sa.Column("uid", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("config", _Document, nullable=False, comment="the tasks (JSON)"),
        sa.Column("config_id", sa.String(32), nullable=False, comment="new when config changes"),
        sa.Column("header", _Document, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    instances = sa.Table(
        f"{prefix}instances",
        meta,
        sa.Column("session_key", sa.String(64), primary_key=True),
        sa.Column("name_key", sa.String(64), primary_key=True, comment="sha256(name), hex"),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("task_key", sa.String(64), nullable=False, comment="sha256(task name), hex"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("resolved", sa.Boolean(), nullable=False),
        sa.Column("doc", _Document, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        # status before task_key: it serves "unstarted of these tasks" and "all unstarted".
        sa.Index(f"{prefix}instances_by_status", "session_key", "status", "task_key"),
        sa.Index(f"{prefix}instances_unresolved", "session_key", "resolved"),
        # Listing sessions across the store by the status of their instances.
        sa.Index(f"{prefix}instances_by_status_session", "status", "session_key"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    fire_keys = sa.Table(
        f"{prefix}fire_keys",
        meta,
        sa.Column("session_key", sa.String(64), primary_key=True),
        sa.Column(
            "key_hash", sa.String(64), primary_key=True, comment="sha256(trigger NUL key), hex"
        ),
        sa.Column("trigger_name", sa.Text(), nullable=False),
        sa.Column(
            "scheduled", _Document, nullable=False, comment="names the first fire scheduled (JSON)"
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    return _Tables(meta, sessions, instances, fire_keys)


#: The tables for the default prefix; use as (part of) Alembic's ``target_metadata``.
metadata = sa.MetaData()
_TABLES: dict[str, _Tables] = {DEFAULT_TABLE_PREFIX: _define(metadata, DEFAULT_TABLE_PREFIX)}
_TABLES_LOCK = threading.Lock()


def _tables(prefix: str) -> _Tables:
    if not prefix or not prefix.replace("_", "a").isalnum() or not prefix.isascii():
        raise ValueError(f"table_prefix must be ASCII letters, digits and '_', got {prefix!r}")
    with _TABLES_LOCK:
        found = _TABLES.get(prefix)
        if found is None:
            found = _TABLES[prefix] = _define(sa.MetaData(), prefix)
        return found


def metadata_for(table_prefix: str = DEFAULT_TABLE_PREFIX) -> sa.MetaData:
    """The :class:`~sqlalchemy.MetaData` holding the tables for ``table_prefix``."""
    return _tables(table_prefix).metadata


def create_schema(engine: Engine, table_prefix: str = DEFAULT_TABLE_PREFIX) -> None:
    """Create the storage tables (and index) if they do not exist yet.

    Safe to call from several processes at once: a concurrent creator that
    wins the race is not an error. Raises :class:`StorageError` if the
    database cannot be reached or refuses.
    """
    try:
        _create_tables(engine, table_prefix)
    except sa_exc.SQLAlchemyError as exc:
        raise StorageError(
            f"could not create tables for prefix {table_prefix!r} on "
            f"{_public_url(engine.url)}: {_describe(exc, engine.url)}",
            backend=f"sqlalchemy/{engine.dialect.name}",
            session="(schema)",
        ) from exc


def _create_tables(engine: Engine, table_prefix: str) -> None:
    _prepare_engine(engine)
    meta = metadata_for(table_prefix)
    try:
        meta.create_all(engine, checkfirst=True)
    except sa_exc.SQLAlchemyError:
        if not set(meta.tables) <= set(sa.inspect(engine).get_table_names()):
            raise
        # another process created them first
    _create_missing_indexes(engine, _tables(table_prefix).instances)


def _create_missing_indexes(engine: Engine, table: sa.Table) -> None:
    """Indexes added by later versions to tables that already existed (create_all skips them).

    Tables of an older layout that lack an index's columns are left to
    :func:`~triggers_backends.sqlalchemy_upgrade.upgrade_schema`. ``IF NOT
    EXISTS`` where the database has it, so concurrent creators do not collide.
    """
    dialect = engine.dialect
    if_not_exists = dialect.name in ("sqlite", "postgresql") or bool(
        getattr(dialect, "is_mariadb", False)
    )
    with engine.begin() as conn:
        if dialect.name == "sqlite":
            # A pooled connection may answer PRAGMAs from a schema it read before
            # another connection created the tables; reading sqlite_master refreshes it.
            conn.exec_driver_sql("SELECT count(*) FROM sqlite_master")
        inspector = sa.inspect(conn)
        present = {index["name"] for index in inspector.get_indexes(table.name)}
        columns = {column["name"] for column in inspector.get_columns(table.name)}
        missing = [
            index
            for index in sorted(table.indexes, key=lambda i: str(i.name))
            if index.name not in present and {c.name for c in index.columns} <= columns
        ]
        if if_not_exists:
            for index in missing:
                conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
            return
    for index in missing:  # MySQL: no IF NOT EXISTS; a concurrent creator may win
        try:
            index.create(engine)
        except sa_exc.SQLAlchemyError:
            names = {i["name"] for i in sa.inspect(engine).get_indexes(table.name)}
            if index.name not in names:
                raise


def drop_schema(engine: Engine, table_prefix: str = DEFAULT_TABLE_PREFIX) -> None:
    """Drop the storage tables for ``table_prefix`` (every session in them is lost)."""
    metadata_for(table_prefix).drop_all(engine, checkfirst=True)


# -- engines -----------------------------------------------------------------------

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()
_PREPARED: weakref.WeakSet[Engine] = weakref.WeakSet()

#: SQLite: how long a writer waits for the write lock before it counts as a conflict.
SQLITE_BUSY_TIMEOUT_MS = 5000


def _public_url(url: URL) -> str:
    """``url`` as text without its password or secret query options (see ``redact``)."""
    # URL.set(password=None) means "leave it as is", hence _replace.
    return redact(url._replace(password=None).render_as_string(hide_password=False))


def _normalize(url: URL) -> URL:
    driver = DEFAULT_DRIVERS.get(url.drivername)
    if driver is not None:
        url = url.set(drivername=driver)
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise ValueError(
            "in-memory SQLite is not supported (every connection would see its own "
            "database); use memory:// for in-process storage or sqlite:///path/to/file.db"
        )
    return url


def shared_engine(url: str | URL) -> Engine:
    """One engine (one connection pool) per URL in this process.

    The URL may set ``triggers_connect_timeout``, ``triggers_lock_timeout`` and
    ``triggers_statement_timeout`` (seconds; see ``docs/storage.md``): they
    bound every wait for the server and are removed before the URL reaches the
    driver. Storages opened from the same URL share it. The URL is used exactly
    as given, credentials included: a URL without a password never borrows one
    (from another engine or from the environment), so a URL that differs in
    any part, query options included, can never be sent someone else's
    password. Task messages carry names, and each worker opens the URL its
    own settings configure under that name.
    """
    parsed = _normalize(_parse_url(url))
    key = parsed.render_as_string(hide_password=False)  # stays in this dict, never shown
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            query = dict(parsed.query)
            timeouts = Timeouts.pop_from(query)
            engine = _ENGINES[key] = _open_engine(parsed.set(query=query), timeouts)
        return engine


def _open_engine(url: URL, timeouts: Timeouts) -> Engine:
    """``_create_engine``, with SQLAlchemy's URL complaints redacted (they quote the URL)."""
    problem = None
    try:
        return _create_engine(url, timeouts)
    except sa_exc.ArgumentError as exc:  # not ImportError: a missing driver is reported as is
        problem = f"{type(exc).__name__}: {redact(str(exc), secrets=_url_secrets(url))}"
    # raised outside the except block: the original error is not chained to it
    raise StorageURLError(f"SQLAlchemy cannot use the storage URL {_public_url(url)!r}: {problem}")


def _create_engine(url: URL, timeouts: Timeouts) -> Engine:
    backend = url.get_backend_name()
    url, connect_args, pre_ping = _sql_timeouts.engine_arguments(url, timeouts)
    for name in url.query:  # the driver's own options in the URL win
        connect_args.pop(name, None)
    kwargs: dict[str, Any] = {"pool_pre_ping": pre_ping}
    if backend in ("mysql", "mariadb"):
        kwargs["pool_recycle"] = 3600  # MySQL drops idle connections (wait_timeout)
        if "charset" not in url.query:
            url = url.update_query_dict({"charset": "utf8mb4"})
    engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
    _sql_timeouts.install(engine, timeouts)
    _prepare_engine(engine)
    return engine


def dispose_engines() -> None:
    """Close every pooled connection of the engines :func:`shared_engine` created."""
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for engine in engines:
        engine.dispose()


def _after_fork_in_child() -> None:
    # A forked child (e.g. a Celery prefork worker) must not reuse its parent's
    # sockets; dispose(close=False) forgets them without closing the parent's.
    for engine in list(_ENGINES.values()):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _prepare_engine(engine: Engine) -> None:
    """SQLite needs explicit transactions: WAL, a busy timeout, BEGIN / BEGIN IMMEDIATE.

    pysqlite's own transaction handling neither starts a transaction before a
    SELECT (so two SELECTs would not share a snapshot) nor lets a writer take
    the write lock up front; SQLAlchemy's documented recipe fixes both.
    """
    if engine.dialect.name != "sqlite" or engine in _PREPARED:
        return
    _PREPARED.add(engine)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        timeouts = _sql_timeouts.timeouts_of(engine)
        busy_ms = SQLITE_BUSY_TIMEOUT_MS if timeouts is None else round(timeouts.lock * 1000)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
            # Fails only while another connection is switching it to WAL right now.
            with contextlib.suppress(Exception):
                cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        write = options.get("triggers_write", False)
        if write:
            _set_synchronous(connection, options.get("triggers_synchronous", "full"))
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _set_synchronous(connection: Connection, level: str) -> None:
    """``PRAGMA synchronous`` per storage, not per engine: set it when it differs.

    Storages with different levels may share one engine (one pool); the level a
    pooled connection has is remembered in its ``info`` so the PRAGMA runs only
    when a connection changes hands between them (it must run outside a transaction).
    """
    info = connection.connection.info
    if info.get("triggers_synchronous") != level:
        connection.exec_driver_sql(f"PRAGMA synchronous = {level.upper()}")
        info["triggers_synchronous"] = level


def _synchronous_level(value: str) -> str:
    level = value.lower()
    if level not in SQLITE_SYNCHRONOUS_LEVELS:
        raise ValueError(
            f"{URL_SYNCHRONOUS_OPTION} must be one of "
            f"{', '.join(SQLITE_SYNCHRONOUS_LEVELS)}, got {value!r}"
        )
    return level


# -- errors ------------------------------------------------------------------------

_CONFLICT_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock
_CONFLICT_MYSQL_CODES = {1213}  # deadlock
_MISSING_MYSQL_CODES = {1146}  # table doesn't exist
# Waits that ran out (not conflicts: retrying would only wait again). Lock waits
# are short between healthy writers; one that lasts longer than the lock timeout
# means a stuck transaction holds the session's row.
_LOCK_TIMEOUT_SQLSTATES = {"55P03"}  # lock_not_available (lock_timeout)
_LOCK_TIMEOUT_MYSQL_CODES = {1205}  # lock wait timeout exceeded
_STATEMENT_TIMEOUT_SQLSTATES = {"57014"}  # query_canceled (statement_timeout)
_STATEMENT_TIMEOUT_MYSQL_CODES = {
    1969,
    3024,
}  # MariaDB max_statement_time, MySQL max_execution_time
_UNKNOWN_COLUMN_MYSQL_CODES = {1054}


def _orig(exc: sa_exc.SQLAlchemyError) -> BaseException | None:
    return exc.orig if isinstance(exc, sa_exc.DBAPIError) else None


def _mysql_code(orig: BaseException | None) -> int | None:
    if orig is not None and orig.args and isinstance(orig.args[0], int):
        return orig.args[0]
    return None


def _is_missing_table(exc: sa_exc.SQLAlchemyError) -> bool:
    orig = _orig(exc)
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) == "42P01" or _mysql_code(orig) in _MISSING_MYSQL_CODES:
        return True
    return "no such table" in str(orig)


def _is_old_layout(exc: sa_exc.SQLAlchemyError) -> bool:
    """A column of the current layout is missing: tables of an older Triggers version."""
    orig = _orig(exc)
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) == "42703" or (
        _mysql_code(orig) in _UNKNOWN_COLUMN_MYSQL_CODES
    ):
        return True
    return "no such column" in str(orig)


def _is_conflict(exc: sa_exc.SQLAlchemyError) -> bool:
    if isinstance(exc, sa_exc.IntegrityError):
        return True  # a racing first insert
    orig = _orig(exc)
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) in _CONFLICT_SQLSTATES:
        return True
    if _mysql_code(orig) in _CONFLICT_MYSQL_CODES:
        return True
    # SQLite: the write lock stayed taken for longer than the busy timeout.
    text = str(orig).lower()
    return type(orig).__module__.startswith("sqlite3") and (
        "database is locked" in text or "database table is locked" in text
    )


def _timeout_hint(exc: sa_exc.SQLAlchemyError, engine: Engine) -> str | None:
    """Which bound ran out, as a hint naming its URL option; None if none did."""
    timeouts = _sql_timeouts.timeouts_of(engine)
    expired = _sql_timeouts.take_expired()
    if timeouts is None:
        return None
    orig = _orig(exc)
    state, code = getattr(orig, "sqlstate", None), _mysql_code(orig)
    text = str(orig).lower()
    if state in _LOCK_TIMEOUT_SQLSTATES or code in _LOCK_TIMEOUT_MYSQL_CODES:
        option, seconds = _sql_timeouts.LOCK_OPTION, timeouts.lock
        what = "another transaction held the session's row lock for longer than"
    elif "connection timeout expired" in text or (code == 2003 and "timed out" in text):
        option, seconds = _sql_timeouts.CONNECT_OPTION, timeouts.connect
        what = "no connection could be opened within"
    elif (
        expired is not None
        or state in _STATEMENT_TIMEOUT_SQLSTATES
        or code in _STATEMENT_TIMEOUT_MYSQL_CODES
        or (code == 2013 and "timed out" in text)
    ):
        option, seconds = _sql_timeouts.STATEMENT_OPTION, timeouts.statement
        what = "the database did not answer within"
    else:
        return None
    return f"{what} {seconds:g}s ({option}={seconds:g} in the URL)"


def _describe(exc: BaseException, url: URL) -> str:
    """The driver's message (not SQLAlchemy's, which quotes SQL and parameters), redacted."""
    orig = _orig(exc) if isinstance(exc, sa_exc.SQLAlchemyError) else None
    cause = orig if orig is not None else exc
    text = redact(f"{type(cause).__name__}: {cause}".strip(), secrets=_url_secrets(url))
    return " ".join(text.split())


def _url_secrets(url: URL) -> list[str]:
    """The password and every secret query value: a driver's message may quote them."""
    found = [str(url.password)] if url.password else []
    for key, value in url.query.items():
        if is_sensitive_key(key):
            found.extend([value] if isinstance(value, str) else value)
    return found


# -- the storage -------------------------------------------------------------------


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class SQLAlchemyStorage(Storage):
    """One session in SQL tables (see the module docstring for layout and guarantees).

    ``engine_or_url`` is an :class:`~sqlalchemy.engine.Engine` or a URL
    (``sqlite:///triggers.db``, ``postgresql+psycopg://user@host/db``,
    ``mysql+pymysql://user@host/db``); URLs share one engine per URL.
    Several storages (one per session) should share one engine.
    ``sqlite_synchronous`` (``"full"``, the default, or ``"normal"``) sets
    SQLite's ``PRAGMA synchronous`` for this storage's commits (see the
    module docstring); other databases ignore it.
    """

    backend_name: ClassVar[str] = "sqlalchemy"
    schema_url_option: ClassVar[str | None] = URL_CREATE_OPTION
    #: Attempts for a load that hits a transient lock (SQLite checkpoints) before failing.
    read_attempts: ClassVar[int] = 5

    def __init__(
        self,
        uid: str,
        engine_or_url: Engine | str | URL,
        *,
        table_prefix: str = DEFAULT_TABLE_PREFIX,
        create_schema: bool = False,
        sqlite_synchronous: str = "full",
    ) -> None:
        super().__init__(uid)
        self.sqlite_synchronous = _synchronous_level(sqlite_synchronous)
        if isinstance(engine_or_url, Engine):
            engine = engine_or_url
            _prepare_engine(engine)
        else:
            engine = shared_engine(engine_or_url)
        self.engine = engine
        self.table_prefix = table_prefix
        self._tables = _tables(table_prefix)
        self._sql = statements_for(self._tables)
        self._key = _key(self.uid)
        # name -> (document text, decoded instance) for recent working sets: the
        # same unstarted instances are re-read by every fire that reaches their
        # task, and decoding dominates once there are hundreds. Loads hand out copies.
        self._decoded: dict[str, tuple[str, TaskInstance]] = {}
        # (config_id, tasks) last decoded: the configuration is re-read only when it changed.
        self._config: tuple[str, TaskTable] | None = None
        # The header's per-task fields (counters, settled) are encoded and decoded again
        # only when they changed: a fire reaching thousands of tasks rarely changes them.
        self._codec = HeaderCodec()
        dialect = engine.dialect.name
        self._label = f"sqlalchemy/{dialect}"
        self._reader: Engine
        self._writer: Engine
        if dialect in ("postgresql", "mysql", "mariadb"):
            self._reader = engine.execution_options(isolation_level="REPEATABLE READ")
            self._writer = engine.execution_options(isolation_level="READ COMMITTED")
        else:
            self._reader = engine
            self._writer = engine.execution_options(
                triggers_write=True, triggers_synchronous=self.sqlite_synchronous
            )
        if create_schema:
            error = None
            try:
                _ensure_schema(engine, table_prefix)
            except sa_exc.SQLAlchemyError as exc:
                error = self._error(exc, "create_schema")
            except Exception as exc:  # drivers raise their own types too (TypeError...)
                error = StorageError(
                    f"create_schema failed on {_public_url(engine.url)}: "
                    f"{_describe(exc, engine.url)}",
                    backend=self._label,
                    session=self.uid,
                )
            if error is not None:
                # Raised outside the except block: the driver's error is not chained to
                # it (its text, redacted, is in the message), so no traceback of the
                # opening can show what the driver saw.
                raise error

    @classmethod
    def from_url(cls, url: str | URL, uid: str) -> SQLAlchemyStorage:
        """Open ``uid`` from a URL (one shared engine per URL).

        Query options, removed before the URL reaches the driver:
        ``triggers_prefix`` (table prefix), ``triggers_create_schema``
        (create missing tables; default ``true`` for SQLite files, ``false``
        for server databases), ``triggers_sqlite_synchronous`` (``full``, the
        default, or ``normal``; SQLite only), and ``triggers_connect_timeout``,
        ``triggers_lock_timeout``, ``triggers_statement_timeout`` (seconds;
        see :mod:`triggers_backends._sql_timeouts`).
        """
        parsed = _parse_url(url)
        query = dict(parsed.query)
        prefix = _single(query.pop(URL_PREFIX_OPTION, DEFAULT_TABLE_PREFIX))
        synchronous = _single(query.pop(URL_SYNCHRONOUS_OPTION, "full"))
        # An embedded SQLite file belongs to the application: create its tables
        # unless told not to. Server databases are migrated by their owners.
        default = "true" if parsed.get_backend_name() == "sqlite" else "false"
        create = _single(query.pop(URL_CREATE_OPTION, default)).lower() in {"1", "true", "yes"}
        engine = shared_engine(parsed.set(query=query))
        return cls(
            uid, engine, table_prefix=prefix, create_schema=create, sqlite_synchronous=synchronous
        )

    @classmethod
    def list_sessions(
        cls,
        url: str | URL,
        filter: SessionFilter,
        *,
        page_size: int,
        cursor: str | None,
    ) -> SessionPage:
        """One page of the sessions in the tables a storage URL names (see :func:`list_sessions`).

        Understands the same ``triggers_*`` URL options as :meth:`from_url`;
        never creates tables.
        """
        parsed = _parse_url(url)
        query = dict(parsed.query)
        prefix = _single(query.pop(URL_PREFIX_OPTION, DEFAULT_TABLE_PREFIX))
        for option in (URL_SYNCHRONOUS_OPTION, URL_CREATE_OPTION):
            query.pop(option, None)
        try:
            engine = shared_engine(parsed.set(query=query))
        except ModuleNotFoundError as exc:  # the driver, imported when first used
            scheme = parsed.get_backend_name()
            raise RegistryError(
                f"storage URL {_public_url(parsed)!r} needs the module {exc.name!r}, which "
                f"is not installed: {install_hint(scheme, exc.name)}"
            ) from exc
        return list_sessions(
            engine, filter, table_prefix=prefix, page_size=page_size, cursor=cursor
        )

    def reference(self) -> str:
        """This storage's URL without the password (plus a non-default table prefix).

        A relative SQLite path is made absolute so a worker started elsewhere
        opens the same file.
        """
        url = self.engine.url
        if url.get_backend_name() == "sqlite" and url.database:
            # A worker may run in another directory: name the file absolutely.
            url = url.set(database=os.path.abspath(url.database))
        if self.table_prefix != DEFAULT_TABLE_PREFIX:
            url = url.update_query_dict({URL_PREFIX_OPTION: self.table_prefix})
        timeouts = _sql_timeouts.timeouts_of(self.engine)
        if timeouts is not None and timeouts.as_query():
            url = url.update_query_dict(timeouts.as_query())
        if url.get_backend_name() == "sqlite" and self.sqlite_synchronous != "full":
            url = url.update_query_dict({URL_SYNCHRONOUS_OPTION: self.sqlite_synchronous})
        return _public_url(url)

    # -- errors -------------------------------------------------------------------

    def _error(self, exc: sa_exc.SQLAlchemyError, doing: str) -> StorageError:
        where = _public_url(self.engine.url)
        if _is_missing_table(exc) and self._tables.fire_keys.name in str(_orig(exc)):
            prefix = self.table_prefix
            prefix_arg = "" if prefix == DEFAULT_TABLE_PREFIX else f", {prefix!r}"
            return SchemaMissingError(
                f"table {self._tables.fire_keys.name!r} does not exist in {where}: it keeps "
                "the records of idempotent fires and of finished instances' cascades, and "
                "tables created by an earlier Triggers version lack it. Add it with "
                f"triggers_backends.sqlalchemy_upgrade.upgrade_schema(engine{prefix_arg}) "
                f"or triggers_backends.sqlalchemy.create_schema(engine{prefix_arg}) (each "
                f"only adds what is missing), '?{URL_CREATE_OPTION}=true' in the URL, or "
                "your migrations (triggers_backends.sqlalchemy.metadata); fires without an "
                "idempotency key work without it",
                backend=self._label,
                session=self.uid,
            )
        if _is_missing_table(exc):
            t = self._tables
            prefix = self.table_prefix
            prefix_arg = "" if prefix == DEFAULT_TABLE_PREFIX else f", {prefix!r}"
            return SchemaMissingError(
                f"tables {t.sessions.name!r}/{t.instances.name!r} do not exist in {where}; "
                "create them with triggers_backends.sqlalchemy.create_schema(engine"
                f"{prefix_arg}), SQLAlchemyStorage(..., create_schema=True), "
                f"'?{URL_CREATE_OPTION}=true' in the URL, or your migrations "
                "(triggers_backends.sqlalchemy.metadata)",
                backend=self._label,
                session=self.uid,
            )
        if _is_old_layout(exc):
            t = self._tables
            prefix = self.table_prefix
            prefix_arg = "" if prefix == DEFAULT_TABLE_PREFIX else f", {prefix!r}"
            return SchemaMissingError(
                f"tables {t.sessions.name!r}/{t.instances.name!r} in {where} have the layout of "
                "an older Triggers version; stop every process using them, then run "
                "triggers_backends.sqlalchemy_upgrade.upgrade_schema(engine"
                f"{prefix_arg}) once (or migrate them to triggers_backends.sqlalchemy.metadata)",
                backend=self._label,
                session=self.uid,
            )
        message = f"{doing} failed on {where}: {_describe(exc, self.engine.url)}"
        hint = _timeout_hint(exc, self.engine)
        if hint is not None:
            message = f"{message}; {hint}"
        if isinstance(exc, sa_exc.IntegrityError):
            message = f"another writer created the session first ({message})"
        if _is_conflict(exc):
            return ConflictError(message, backend=self._label, session=self.uid)
        return StorageError(message, backend=self._label, session=self.uid)

    # -- reading ------------------------------------------------------------------

    def load(self, scope: Scope | Selector = HEADER_ONLY) -> Snapshot:
        return self._read(scope)

    def load_full(self) -> Snapshot:
        return self._read(None)

    def _read(self, scope: Scope | Selector | None) -> Snapshot:
        for attempt in range(self.read_attempts):
            try:
                with self._reader.connect() as conn, conn.begin():
                    return self._read_in(conn, scope)
            except sa_exc.SQLAlchemyError as exc:
                error = self._error(exc, "load")
                if isinstance(error, ConflictError) and attempt + 1 < self.read_attempts:
                    time.sleep(random.uniform(0, 0.01 * 2**attempt))
                    continue
                if isinstance(error, ConflictError):  # a read never conflicts: report it plainly
                    error = StorageError(str(error), backend=self._label, session=self.uid)
                raise error from exc
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _read_in(self, conn: Connection, scope: Scope | Selector | None) -> Snapshot:
        """Header, then the instances the scope (decided from the header) names: one snapshot."""
        cached = self._config
        head = conn.execute(
            self._sql.head,
            # The configuration comes back only if it changed since it was decoded here.
            {"b_key": self._key, "b_config_id": "" if cached is None else cached[0]},
        ).one_or_none()
        if head is None:
            return Snapshot(SessionState(), None)
        header = self._decode_header(head.uid, head.config_id, head.config, head.header)
        records: dict[FireKey, tuple[str, ...]] = {}
        if scope is None:
            rows = self._rows(conn, None)
        else:
            chosen = scope if isinstance(scope, Scope) else scope(header)
            rows = self._rows(conn, chosen)
            if chosen.fire_keys:  # only a keyed operation reads the fire keys table
                records = self._records(conn, chosen.fire_keys)
        instances = self._decode_instances(rows, cache=scope is not None)
        where = f"{self._label} storage, session {self.uid!r}"
        check_joined(header.tasks, header.counters, instances.values(), where)
        if records:
            state = attrs.evolve(header, instances=instances, fire_records=records)
        else:
            state = attrs.evolve(header, instances=instances)
        return Snapshot(state, int(head.version))

    def _records(
        self, conn: Connection, keys: frozenset[FireKey]
    ) -> dict[FireKey, tuple[str, ...]]:
        """The stored fire records of ``keys`` (primary key lookups, in this snapshot)."""
        by_hash = {key.digest: key for key in keys}
        found: dict[FireKey, tuple[str, ...]] = {}
        for chunk in chunks(sorted(by_hash)):
            params = {"b_key": self._key, "b_hashes": chunk}
            for row in conn.execute(self._sql.fire_records, params):
                key = by_hash[row.key_hash]
                what = f"{self._label} storage, session {self.uid!r}: fire record of {key!r}"
                try:
                    names = json.loads(row.scheduled)
                except ValueError as exc:
                    raise SerializationError(f"{what}: not valid JSON ({exc})") from exc
                found[key] = decode_scheduled(names, what)
        return found

    def check_fire_keys(self) -> None:
        """Fire records are kept in the ``fire_keys`` table: check once that it exists.

        One query per engine and table prefix in a process (then remembered);
        :class:`~triggers_core.errors.SchemaMissingError` saying how to add the
        table if it is missing.
        """
        ready = _FIRE_KEYS_READY.setdefault(self.engine, set())
        if self.table_prefix in ready:
            return
        try:
            with self._reader.connect() as conn, conn.begin():
                conn.execute(self._sql.probe_fire_keys).all()
        except sa_exc.SQLAlchemyError as exc:
            error = self._error(exc, "checking the fire keys table")
            raise error from exc
        ready.add(self.table_prefix)

    def _rows(self, conn: Connection, scope: Scope | None) -> list[Any]:
        """``(name, doc, task_key)`` rows of the instances ``scope`` names (all for None)."""
        sql = self._sql
        if scope is None:
            return list(conn.execute(sql.rows(), {"b_key": self._key}))
        names = sorted({_key(n) for n in scope.names})
        tasks = sorted({_key(t) for t in scope.unstarted_of})
        if not (names or tasks or scope.unresolved):
            return []
        by_range = len(tasks) > MAX_IN  # one index range, filtered here, beats a huge IN list
        if not by_range and len(names) + len(tasks) <= MAX_IN:  # the usual case: one query
            statement = sql.rows(names=bool(names), tasks=bool(tasks), unresolved=scope.unresolved)
            params = {"b_key": self._key, "b_names": names, "b_tasks": tasks}
            return list(conn.execute(statement, params))
        found: dict[str, Any] = {}
        for chunk in chunks(names):
            for row in conn.execute(sql.rows(names=True), {"b_key": self._key, "b_names": chunk}):
                found[row.name] = row
        if by_range:
            keep = frozenset(tasks)
            for row in conn.execute(sql.rows(unstarted=True), {"b_key": self._key}):
                if row.task_key in keep:
                    found[row.name] = row
        elif tasks:
            for row in conn.execute(sql.rows(tasks=True), {"b_key": self._key, "b_tasks": tasks}):
                found[row.name] = row
        if scope.unresolved:
            for row in conn.execute(sql.rows(unresolved=True), {"b_key": self._key}):
                found[row.name] = row
        return list(found.values())

    def _decode_header(
        self, uid: str, config_id: str, config: str | None, header: str
    ) -> SessionState:
        where = f"{self._label} storage, session {self.uid!r}"
        if uid != self.uid:
            raise StorageError(
                f"row for key {self._key} belongs to session {uid!r}",
                backend=self._label,
                session=self.uid,
            )
        try:
            if config is None and self._config is not None and self._config[0] == config_id:
                tasks = self._config[1]
            else:
                tasks = config_from_json(loads(config or "", "configuration"))
                self._config = (config_id, tasks)
            return self._codec.decode(header, tasks)
        except SerializationError as exc:
            raise SerializationError(f"{where}: {exc} (the row was left as it is)") from exc

    def _decode_instances(self, rows: Sequence[Any], *, cache: bool) -> dict[str, TaskInstance]:
        where = f"{self._label} storage, session {self.uid!r}"
        found: dict[str, TaskInstance] = {}
        decoded = self._decoded
        fresh: dict[str, tuple[str, TaskInstance]] = {}
        try:
            for row in rows:
                name, doc = row.name, row.doc
                cached = decoded.get(name)
                if cached is not None and cached[0] == doc:
                    instance = cached[1]
                else:
                    instance = instance_from_json(
                        loads(doc, f"instance {name!r}"), f"instance {name!r}"
                    )
                    if instance.name != name:
                        raise SerializationError(
                            f"instance {name!r}: stored document is named {instance.name!r}"
                        )
                fresh[name] = (doc, instance)
                found[name] = copy_instance(instance)  # the cached one stays private
        except SerializationError as exc:
            raise SerializationError(f"{where}: {exc} (the row was left as it is)") from exc
        if cache:
            # Keep recent working sets decoded, bounded: the next fire reads the same rows.
            if len(decoded) + len(fresh) > max(_DECODED_CACHE, 2 * len(fresh)):
                decoded = {}
            decoded.update(fresh)
            self._decoded = decoded
        return found

    # -- writing ------------------------------------------------------------------

    def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        if expected is not None and (not isinstance(expected, int) or isinstance(expected, bool)):
            raise ConflictError(
                f"version {expected!r} did not come from this storage",
                backend=self._label,
                session=self.uid,
            )
        now = datetime.now(UTC)
        header = self._codec.encode(state)
        config: dict[str, Any] = {}
        if changes.config or expected is None:
            config = {"config": dumps(config_to_json(state.tasks)), "config_id": uuid.uuid4().hex}
        created: list[dict[str, Any]] = []
        updated: list[dict[str, Any]] = []
        for name in sorted(changes.instances):
            instance = state.instances[name]
            row = {
                "session_key": self._key,
                "name_key": _key(name),
                "name": name,
                "task_key": _key(instance.task_name),
                "status": instance.status.value,
                "resolved": instance.is_resolved,
                "doc": dumps(instance_to_json(instance)),
                "updated_at": now,
            }
            (created if name in changes.created else updated).append(row)
        records = [
            {
                "session_key": self._key,
                "key_hash": key.digest,
                "trigger_name": key.trigger,
                "scheduled": json.dumps(list(names)),
                "created_at": now,
            }
            for key, names in changes.fire_records.items()
        ]
        sql = self._sql
        try:
            with self._writer.connect() as conn, conn.begin():
                if expected is None:
                    conn.execute(
                        sql.create,
                        {
                            "session_key": self._key,
                            "uid": self.uid,
                            "version": 1,
                            "header": header,
                            "updated_at": now,
                            **config,
                        },
                    )
                    new_version = 1
                else:
                    values = {
                        "b_key": self._key,
                        "b_expected": expected,
                        "b_version": expected + 1,
                        "b_header": header,
                        "b_now": now,
                    }
                    if config:
                        values.update(b_config=config["config"], b_config_id=config["config_id"])
                    result = conn.execute(sql.update_config if config else sql.update, values)
                    if result.rowcount != 1:  # leaving the block rolls back
                        raise ConflictError(
                            f"version moved on from {expected!r}",
                            backend=self._label,
                            session=self.uid,
                        )
                    new_version = expected + 1
                if created:
                    try:
                        conn.execute(sql.insert_instances, created)
                    except sa_exc.IntegrityError as exc:
                        # We hold the session row: the rows existed before. Roll back.
                        raise _CreatedExists() from exc
                if updated:
                    self._upsert(conn, updated)
                if records:
                    try:
                        conn.execute(sql.insert_fire_records, records)
                    except sa_exc.IntegrityError as exc:
                        # We hold the session row: another writer applied the fire first.
                        raise _RecordExists() from exc
        except _CreatedExists as clash:
            raise self._corruption([row["name"] for row in created]) from clash.__cause__
        except _RecordExists:
            raise ConflictError(
                "a fire record this write creates is already stored (that fire was "
                "applied meanwhile); nothing was written",
                backend=self._label,
                session=self.uid,
            ) from None
        except sa_exc.SQLAlchemyError as exc:
            raise self._error(exc, "compare_and_swap") from exc
        if config:
            self._config = (config["config_id"], TaskTable.of(state.tasks))
        return new_version

    def _corruption(self, names: list[str]) -> SerializationError:
        """The error for created instances that were already stored (nothing was written)."""
        table = self._tables.instances
        try:
            with self._reader.connect() as conn, conn.begin():
                existing = sorted(
                    conn.execute(
                        sa.select(table.c.name)
                        .where(table.c.session_key == self._key)
                        .where(table.c.name_key.in_([_key(n) for n in names[:MAX_IN]]))
                    ).scalars()
                )
        except sa_exc.SQLAlchemyError:
            existing = []
        which = ", ".join(repr(n) for n in existing) or "one of " + ", ".join(map(repr, names))
        return SerializationError(
            f"{self._label} storage, session {self.uid!r}: instance {which} already exists, "
            "but this operation creates it (its task's counter is below the stored "
            "instances: edited by hand?); nothing was written"
        )

    def _upsert(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Insert or update ``rows``; the session row lock we hold keeps this race-free."""
        table = self._tables.instances
        statement = self._sql.upsert(conn.dialect.name)
        if statement is not None:
            conn.execute(statement, rows)
        else:  # any other dialect: look, then insert or update
            existing = set(
                conn.execute(
                    sa.select(table.c.name_key)
                    .where(table.c.session_key == self._key)
                    .where(table.c.name_key.in_([r["name_key"] for r in rows]))
                ).scalars()
            )
            new = [r for r in rows if r["name_key"] not in existing]
            old = [r for r in rows if r["name_key"] in existing]
            if new:
                conn.execute(sa.insert(table), new)
            for row in old:
                conn.execute(
                    sa.update(table)
                    .where(table.c.session_key == row["session_key"])
                    .where(table.c.name_key == row["name_key"])
                    .values({column: row[column] for column in CHANGING})
                )

    # -- housekeeping -------------------------------------------------------------

    def delete(self) -> None:
        """Remove this session (header, every instance, every fire record) from the tables."""
        sessions, instances = self._tables.sessions, self._tables.instances
        fire_keys = self._tables.fire_keys
        try:
            with self._writer.connect() as conn, conn.begin():
                conn.execute(sa.delete(sessions).where(sessions.c.session_key == self._key))
                conn.execute(sa.delete(instances).where(instances.c.session_key == self._key))
                if sa.inspect(conn).has_table(fire_keys.name):  # older tables lack it
                    conn.execute(sa.delete(fire_keys).where(fire_keys.c.session_key == self._key))
        except sa_exc.SQLAlchemyError as exc:
            raise self._error(exc, "delete") from exc

    def __repr__(self) -> str:
        return f"<{type(self).__name__} uid={self.uid!r} at {self.reference()}>"


def list_sessions(
    engine: Engine,
    filter: SessionFilter | None = None,
    *,
    table_prefix: str = DEFAULT_TABLE_PREFIX,
    page_size: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> SessionPage:
    """One page of the UIDs of the sessions in the tables for ``table_prefix``.

    See :mod:`triggers_core.listing` for the filters and :mod:`triggers_backends._sql_listing`
    for the queries (indexed: a filter that matches few sessions reads little).
    Raises :class:`~triggers_core.errors.SchemaMissingError` if the tables do
    not exist, :class:`~triggers_core.errors.StorageError` if the database
    fails, ``ValueError`` for a bad page size or a cursor of another store.
    """
    filter = filter or SessionFilter()
    page_size = check_page_size(page_size)
    _sql_listing.check_cursor(cursor)
    _prepare_engine(engine)
    tables = _tables(table_prefix)
    label = f"sqlalchemy/{engine.dialect.name}"
    reader = engine
    if engine.dialect.name in ("postgresql", "mysql", "mariadb"):
        reader = engine.execution_options(isolation_level="REPEATABLE READ")
    try:
        with reader.connect() as conn, conn.begin():
            return _sql_listing.list_page(conn, tables, filter, page_size=page_size, cursor=cursor)
    except sa_exc.SQLAlchemyError as exc:
        where = _public_url(engine.url)
        if _is_missing_table(exc):
            error: StorageError = SchemaMissingError(
                f"tables {tables.sessions.name!r}/{tables.instances.name!r} do not exist in "
                f"{where}; nothing to list",
                backend=label,
                session="(listing)",
            )
        else:
            error = StorageError(
                f"listing sessions failed on {where}: {_describe(exc, engine.url)}",
                backend=label,
                session="(listing)",
            )
    # raised outside the except block: the driver's error is not chained to it
    raise error


class _CreatedExists(Exception):
    """Internal: an INSERT of a created instance hit an existing row (rolls the write back)."""


class _RecordExists(Exception):
    """Internal: an INSERT of a fire record hit an existing row (rolls the write back)."""


#: Per engine, the table prefixes whose fire keys table was seen to exist.
_FIRE_KEYS_READY: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()


#: Decoded instance documents a storage object keeps (more when one working set is larger).
_DECODED_CACHE = 4096


_SCHEMA_READY: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()


def _ensure_schema(engine: Engine, table_prefix: str) -> None:
    """``create_schema`` once per engine and prefix (later storages skip the round trips)."""
    done = _SCHEMA_READY.setdefault(engine, set())
    if table_prefix not in done:
        _create_tables(engine, table_prefix)
        done.add(table_prefix)


def _parse_url(url: str | URL) -> URL:
    """``make_url`` with an error that names the problem but never the URL's secrets."""
    if isinstance(url, URL):
        return url
    problem = None
    try:
        return make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:
        problem = redact(str(exc))
    # raised outside the except block: the original error is not chained to it
    raise StorageURLError(f"cannot parse the SQLAlchemy storage URL {redact(url)!r}: {problem}")


def _single(value: str | Iterable[str]) -> str:
    """URL query values may repeat; the last one wins."""
    if isinstance(value, str):
        return value
    values = list(value)
    return values[-1] if values else ""
