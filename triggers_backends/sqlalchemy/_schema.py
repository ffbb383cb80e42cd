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
"""

from __future__ import annotations

import weakref

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from triggers_backends.sqlalchemy._engines import prepare_engine
from triggers_backends.sqlalchemy._errors import describe, public_url
from triggers_backends.sqlalchemy._tables import DEFAULT_TABLE_PREFIX, metadata_for, tables_for
from triggers_core.errors import StorageError

__all__ = ["create_schema", "drop_schema", "ensure_schema"]


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


_SCHEMA_READY: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()


def ensure_schema(engine: Engine, table_prefix: str) -> None:
    """``create_schema`` once per engine and prefix (later storages skip the round trips)."""
    done = _SCHEMA_READY.setdefault(engine, set())
    if table_prefix not in done:
        _create_tables(engine, table_prefix)
        done.add(table_prefix)
