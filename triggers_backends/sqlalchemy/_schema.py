"""Creating and dropping the storage tables.

Tables on a database server are never created behind your back: call
:func:`create_schema` (or pass ``create_schema=True``, or add
``triggers_create_schema=true`` to the URL), or include
:data:`~triggers_backends.sqlalchemy.metadata` (or
:func:`~triggers_backends.sqlalchemy.metadata_for`) in your migrations. A
SQLite file opened from a URL is the application's own, so its tables are
created unless the URL says ``triggers_create_schema=false``.

Tables written by a version of Triggers before this layout (schema version 1)
are refused with :class:`~triggers_core.errors.SchemaMissingError`; upgrade
them with :func:`triggers_backends.sqlalchemy_upgrade.upgrade_schema`.

What a process found out about the due table (it exists; it was missing at a
given time; the warning was logged) is kept per engine and table prefix in
:func:`due_table_state`; creating or dropping the tables here updates it, so a
process that creates the table uses it at once.
"""

from __future__ import annotations

import threading
import weakref

import attrs
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from triggers_backends.sqlalchemy._engines import prepare_engine
from triggers_backends.sqlalchemy._errors import describe, public_url
from triggers_backends.sqlalchemy._tables import DEFAULT_TABLE_PREFIX, metadata_for, tables_for
from triggers_core.errors import StorageError

__all__ = [
    "DueTableState",
    "create_schema",
    "drop_schema",
    "due_table_state",
    "ensure_schema",
    "latest_table_state",
    "note_due_table",
    "note_latest_table",
]


@attrs.define
class DueTableState:
    """What this process knows of the due tables of one engine, by table prefix."""

    #: Prefixes whose due table was seen to exist.
    ready: set[str] = attrs.field(factory=set)
    #: Prefix -> ``time.monotonic()`` when its due table was last found missing.
    missing: dict[str, float] = attrs.field(factory=dict)
    #: Prefixes whose missing due table was already warned about.
    warned: set[str] = attrs.field(factory=set)
    lock: threading.Lock = attrs.field(factory=threading.Lock)


_DUE_TABLES: weakref.WeakKeyDictionary[Engine, DueTableState] = weakref.WeakKeyDictionary()
_DUE_TABLES_LOCK = threading.Lock()


def _state_in(
    registry: weakref.WeakKeyDictionary[Engine, DueTableState], engine: Engine
) -> DueTableState:
    with _DUE_TABLES_LOCK:
        found = registry.get(engine)
        if found is None:
            found = registry[engine] = DueTableState()
        return found


def _note(state: DueTableState, table_prefix: str, *, exists: bool) -> None:
    with state.lock:
        state.missing.pop(table_prefix, None)
        if exists:
            state.ready.add(table_prefix)
        else:
            state.ready.discard(table_prefix)


def due_table_state(engine: Engine) -> DueTableState:
    """What this process knows of ``engine``'s due tables (one object per engine)."""
    return _state_in(_DUE_TABLES, engine)


def note_due_table(engine: Engine, table_prefix: str, *, exists: bool) -> None:
    """This process created (``exists``) or dropped the due table of ``table_prefix``."""
    _note(due_table_state(engine), table_prefix, exists=exists)


_LATEST_TABLES: weakref.WeakKeyDictionary[Engine, DueTableState] = weakref.WeakKeyDictionary()


def latest_table_state(engine: Engine) -> DueTableState:
    """What this process knows of ``engine``'s latest kwargs tables (one object per engine)."""
    return _state_in(_LATEST_TABLES, engine)


def note_latest_table(engine: Engine, table_prefix: str, *, exists: bool) -> None:
    """This process created (``exists``) or dropped the latest table of ``table_prefix``."""
    _note(latest_table_state(engine), table_prefix, exists=exists)


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
            f"{public_url(engine.url)}: {describe(exc, engine.url)}",
            backend=f"sqlalchemy/{engine.dialect.name}",
            session="(schema)",
        ) from exc


def _create_tables(engine: Engine, table_prefix: str) -> None:
    prepare_engine(engine)
    meta = metadata_for(table_prefix)
    try:
        meta.create_all(engine, checkfirst=True)
    except sa_exc.SQLAlchemyError:
        if not set(meta.tables) <= set(sa.inspect(engine).get_table_names()):
            raise
        # another process created them first
    note_due_table(engine, table_prefix, exists=True)
    note_latest_table(engine, table_prefix, exists=True)
    tables = tables_for(table_prefix)
    _create_missing_indexes(engine, tables.instances)
    _create_missing_indexes(engine, tables.sessions)


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
    note_due_table(engine, table_prefix, exists=False)
    note_latest_table(engine, table_prefix, exists=False)


_SCHEMA_READY: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()


def ensure_schema(engine: Engine, table_prefix: str) -> None:
    """``create_schema`` once per engine and prefix (later storages skip the round trips)."""
    done = _SCHEMA_READY.setdefault(engine, set())
    if table_prefix not in done:
        _create_tables(engine, table_prefix)
        done.add(table_prefix)
