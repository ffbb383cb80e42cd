"""What one session's SQL storage holds, and how a driver's error becomes a storage error.

:class:`SQLStorageBase` declares the state that
:class:`~triggers_backends.sqlalchemy._storage.SQLAlchemyStorage` sets up and
its reading (:mod:`~triggers_backends.sqlalchemy._reading`) and writing
(:mod:`~triggers_backends.sqlalchemy._writes`) halves share, and turns a
driver's error into the :class:`~triggers_core.errors.StorageError` the
caller sees (a conflict, missing tables with how to create them, tables of an
older layout, a bound that ran out).
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from triggers_backends.sqlalchemy._engines import URL_CREATE_OPTION, with_options
from triggers_backends.sqlalchemy._errors import (
    describe,
    driver_error,
    first_error,
    is_conflict,
    is_missing_table,
    is_old_layout,
    public_url,
    timeout_hint,
)
from triggers_backends.sqlalchemy._raw import RawEngine, raw_engine
from triggers_backends.sqlalchemy._statements import Statements
from triggers_backends.sqlalchemy._tables import DEFAULT_TABLE_PREFIX, Tables
from triggers_core.engine.serialization import HeaderCodec
from triggers_core.engine.state import TaskInstance
from triggers_core.engine.task_table import TaskTable
from triggers_core.errors import ConflictError, SchemaMissingError, StorageError
from triggers_core.runtime.storage import Storage

__all__ = ["SQLStorageBase"]


class SQLStorageBase(Storage):
    """One session in SQL tables: the state set up by ``SQLAlchemyStorage.__init__``."""

    engine: Engine
    table_prefix: str
    sqlite_synchronous: str
    _tables: Tables
    _sql: Statements
    #: ``row_key(uid)``: the session's primary key.
    _key: str
    _decoded: dict[str, tuple[str, TaskInstance]]
    _config: tuple[str, TaskTable] | None
    _codec: HeaderCodec

    @property
    def _autocommit(self) -> Engine:
        """The engine in autocommit mode: each statement its own snapshot (and, for a
        write, its own transaction), no BEGIN/COMMIT round trips."""
        engine: Engine | None = self.__dict__.get("_autocommit_engine")
        if engine is None:
            engine = with_options(self.engine, isolation_level="AUTOCOMMIT")
            self.__dict__["_autocommit_engine"] = engine
        return engine

    @property
    def _raw_autocommit(self) -> RawEngine | None:
        """:attr:`_autocommit` on the driver connection directly (PostgreSQL on psycopg 3,
        no cursor-execute listeners: see :mod:`~triggers_backends.sqlalchemy._raw`)."""
        if "_raw_engine" not in self.__dict__:
            self.__dict__["_raw_engine"] = raw_engine(self.engine, self._autocommit)
        raw: RawEngine | None = self.__dict__["_raw_engine"]
        return raw if raw is not None and raw.usable else None

    _label: str
    #: Snapshot reads (REPEATABLE READ; SQLite: BEGIN).
    _reader: Engine
    #: Writes (READ COMMITTED; SQLite: BEGIN IMMEDIATE, this storage's synchronous level).
    _writer: Engine

    def _error(self, exc: sa_exc.SQLAlchemyError, doing: str) -> StorageError:
        where = public_url(self.engine.url)
        if is_missing_table(exc) and self._tables.due.name in str(driver_error(exc)):
            return SchemaMissingError(
                f"table {self._tables.due.name!r} does not exist in {where} ({doing}): "
                f"{self._due_table_advice()}",
                backend=self._label,
                session=self.uid,
            )
        if is_missing_table(exc) and self._tables.fire_keys.name in str(driver_error(exc)):
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
        if is_missing_table(exc):
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
        if is_old_layout(exc):
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
        said = describe(exc, self.engine.url)
        message = f"{doing} failed on {where}: {said}"
        first = first_error(exc)
        if first is not exc:
            earlier = describe(first, self.engine.url)
            if earlier != said:  # a connection refused twice is told once
                message = f"{message} (after {earlier})"
        hint = timeout_hint(exc, self.engine)
        if hint is not None:
            message = f"{message}; {hint}"
        if isinstance(exc, sa_exc.IntegrityError):
            message = f"another writer created the session first ({message})"
        if is_conflict(exc):
            return ConflictError(message, backend=self._label, session=self.uid)
        return StorageError(message, backend=self._label, session=self.uid)

    def _due_table_advice(self) -> str:
        """What the due table is for, and how to add it (for errors and the warning)."""
        prefix = self.table_prefix
        prefix_arg = "" if prefix == DEFAULT_TABLE_PREFIX else f", {prefix!r}"
        return (
            "it keeps the leases of running instances and the due index a sweeper reads, "
            "and tables created by an earlier Triggers version lack it. Add it with "
            f"triggers_backends.sqlalchemy_upgrade.upgrade_schema(engine{prefix_arg}) or "
            f"triggers_backends.sqlalchemy.create_schema(engine{prefix_arg}) (each only adds "
            "what is missing and touches no stored row, so processes may keep running), "
            f"'?{URL_CREATE_OPTION}=true' in the URL, or your migrations "
            "(triggers_backends.sqlalchemy.metadata); until then instances run without "
            "leases, and those of a worker that dies are not recovered automatically"
        )
