"""Upgrade SQL tables written by an older Triggers to the current layout.

Triggers 0.1 kept the tasks inside each session's ``header`` and had no
``task_key``/``status`` columns (schema version 1). The storage refuses such
tables with :class:`~triggers_core.errors.SchemaMissingError` rather than
guessing; :func:`upgrade_schema` converts them in place:

1. adds ``config`` and ``config_id`` to the sessions table and ``task_key`` and
   ``status`` to the instances table;
2. fills ``task_key``/``status`` from each instance document;
3. rewrites each session header: the tasks move to ``config``, and the
   ``unsettled`` sets are derived from the session's unresolved instances;
4. makes the new columns ``NOT NULL`` (PostgreSQL, MySQL/MariaDB; SQLite
   cannot alter a column, and the storage always writes them) and creates the
   ``(session_key, status, task_key)`` index;
5. creates the ``fire_keys`` table (fire records of idempotent fires and of
   cascades), which tables of any earlier version lack. This step alone
   touches no stored row, so tables that only lack it can be upgraded while
   processes use them (``create_schema`` adds it too);
6. creates the ``due`` table (leases and the due index a sweeper reads), which
   tables of any earlier version lack: like step 5, it touches no stored row.
   Processes that use the tables meanwhile run instances without leases until
   they find the table (within
   :data:`~triggers_backends.sqlalchemy._due.RECHECK_MISSING` seconds); the
   instances they had running or scheduled then are not in the index, so only
   an operator (``get_stale_instances``, ``triggers sessions --stale``) or
   ``manager.recover()`` finds them if their worker died;
7. creates the ``latest`` table (each trigger's latest kwargs, apart from the
   header), which tables of any earlier version lack: it touches no stored row
   either. Headers that hold their latest kwargs load as they are and move
   them to the table on their next write; until a process finds the table
   (within :data:`~triggers_backends.sqlalchemy._due.RECHECK_MISSING`
   seconds) it keeps them in the header.

Stop every process that uses the tables first: a process still running the old
version would write rows without the new columns. The upgrade is idempotent and
can be re-run after an interruption (each step only touches rows it has not
converted yet). Instance documents keep their version-1 form, which loads as is.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from triggers_backends.sqlalchemy._engines import prepare_engine
from triggers_backends.sqlalchemy._schema import (
    create_schema,
    note_due_table,
    note_latest_table,
)
from triggers_backends.sqlalchemy._tables import (
    DEFAULT_TABLE_PREFIX,
    Document,
    row_key,
    tables_for,
)
from triggers_core.engine.serialization import (
    config_to_json,
    dumps,
    header_from_json,
    header_to_json,
    instance_from_json,
    loads,
)
from triggers_core.errors import SerializationError

__all__ = ["needs_upgrade", "upgrade_schema"]

_NEW_SESSION_COLUMNS = {"config": Document, "config_id": sa.String(32)}
_NEW_INSTANCE_COLUMNS = {"task_key": sa.String(64), "status": sa.String(16)}
_BATCH = 500


def needs_upgrade(engine: Engine, table_prefix: str = DEFAULT_TABLE_PREFIX) -> bool:
    """True if the tables for ``table_prefix`` exist in the layout of an older version."""
    tables = tables_for(table_prefix)
    inspector = sa.inspect(engine)
    names = set(inspector.get_table_names())
    if not {tables.sessions.name, tables.instances.name} <= names:
        return False
    if not {tables.fire_keys.name, tables.due.name, tables.latest.name} <= names:
        return True
    sessions = {c["name"] for c in inspector.get_columns(tables.sessions.name)}
    instances = {c["name"] for c in inspector.get_columns(tables.instances.name)}
    return not (set(_NEW_SESSION_COLUMNS) <= sessions and set(_NEW_INSTANCE_COLUMNS) <= instances)


def upgrade_schema(engine: Engine, table_prefix: str = DEFAULT_TABLE_PREFIX) -> bool:
    """Convert the tables for ``table_prefix`` to the current layout (see the module docstring).

    Creates them if they do not exist. Returns True if anything was converted.
    Raises :class:`~triggers_core.errors.SerializationError` naming the row if a
    stored document cannot be read (nothing of that step is written then).
    """
    prepare_engine(engine)
    tables = tables_for(table_prefix)
    inspector = sa.inspect(engine)
    if not {tables.sessions.name, tables.instances.name} <= set(inspector.get_table_names()):
        create_schema(engine, table_prefix)
        return False
    # Every step skips what an earlier (possibly interrupted) run already did.
    changed = _add_columns(engine, tables.sessions.name, _NEW_SESSION_COLUMNS)
    changed |= _add_columns(engine, tables.instances.name, _NEW_INSTANCE_COLUMNS)
    with engine.begin() as conn:
        changed |= _fill_instances(conn, tables.instances)
    with engine.begin() as conn:
        changed |= _fill_sessions(conn, tables.sessions, tables.instances)
    changed |= _require_values(engine, tables.sessions.name, _NEW_SESSION_COLUMNS)
    changed |= _require_values(engine, tables.instances.name, _NEW_INSTANCE_COLUMNS)
    present = {i["name"] for i in sa.inspect(engine).get_indexes(tables.instances.name)}
    for index in tables.instances.indexes:
        if index.name not in present:
            index.create(engine)
            changed = True
    changed |= _add_table(engine, tables.fire_keys)
    changed |= _add_table(engine, tables.due)
    note_due_table(engine, table_prefix, exists=True)
    changed |= _add_table(engine, tables.latest)
    note_latest_table(engine, table_prefix, exists=True)
    return changed


def _add_table(engine: Engine, table: sa.Table) -> bool:
    """Create ``table`` if it is missing (a concurrent creator winning is fine)."""
    if sa.inspect(engine).has_table(table.name):
        return False
    try:
        table.create(engine)
    except sa.exc.SQLAlchemyError:
        if not sa.inspect(engine).has_table(table.name):
            raise
        return False  # another process created it first
    return True


def _add_columns(engine: Engine, table: str, columns: dict[str, Any]) -> bool:
    present = {c["name"] for c in sa.inspect(engine).get_columns(table)}
    missing = [name for name in columns if name not in present]
    quote = engine.dialect.identifier_preparer.quote
    with engine.begin() as conn:
        for name in missing:  # nullable until filled
            ddl = columns[name].compile(dialect=engine.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(name)} {ddl}")
    return bool(missing)


def _require_values(engine: Engine, table: str, columns: dict[str, Any]) -> bool:
    dialect = engine.dialect.name
    if dialect not in ("postgresql", "mysql", "mariadb"):
        return False  # SQLite cannot alter a column; the storage always writes these
    nullable = {c["name"] for c in sa.inspect(engine).get_columns(table) if c["nullable"]}
    quote = engine.dialect.identifier_preparer.quote
    with engine.begin() as conn:
        for name, kind in columns.items():
            if name not in nullable:
                continue
            if dialect == "postgresql":
                statement = f"ALTER TABLE {quote(table)} ALTER COLUMN {quote(name)} SET NOT NULL"
            else:
                ddl = kind.compile(dialect=engine.dialect)
                statement = f"ALTER TABLE {quote(table)} MODIFY {quote(name)} {ddl} NOT NULL"
            conn.exec_driver_sql(statement)
    return bool(nullable & columns.keys())


def _fill_instances(conn: Connection, table: sa.Table) -> bool:
    rows = conn.execute(
        sa.select(table.c.session_key, table.c.name_key, table.c.name, table.c.doc).where(
            table.c.task_key.is_(None)
        )
    ).all()
    values = []
    for row in rows:
        what = f"instance {row.name!r} (session key {row.session_key})"
        try:
            instance = instance_from_json(loads(row.doc, what), what)
        except SerializationError as exc:
            raise SerializationError(f"cannot upgrade {table.name}: {exc}") from exc
        values.append(
            {
                "s": row.session_key,
                "n": row.name_key,
                "task_key": row_key(instance.task_name),
                "status": instance.status.value,
            }
        )
    statement = (
        sa.update(table)
        .where(table.c.session_key == sa.bindparam("s"))
        .where(table.c.name_key == sa.bindparam("n"))
        .values(task_key=sa.bindparam("task_key"), status=sa.bindparam("status"))
    )
    for start in range(0, len(values), _BATCH):
        conn.execute(statement, values[start : start + _BATCH])
    return bool(values)


def _fill_sessions(conn: Connection, sessions: sa.Table, instances: sa.Table) -> bool:
    rows = conn.execute(
        sa.select(sessions.c.session_key, sessions.c.uid, sessions.c.header).where(
            sessions.c.config.is_(None)
        )
    ).all()
    for row in rows:
        what = f"session {row.uid!r}"
        try:
            unresolved = {}
            for name, doc in conn.execute(
                sa.select(instances.c.name, instances.c.doc)
                .where(instances.c.session_key == row.session_key)
                .where(sa.not_(instances.c.resolved))
            ):
                unresolved[name] = instance_from_json(loads(doc, f"instance {name!r}"))
            # A version-1 header carries its tasks; the unsettled sets are derived
            # from the unresolved instances loaded with it.
            state = header_from_json(loads(row.header, what), unresolved, what)
        except SerializationError as exc:
            raise SerializationError(f"cannot upgrade {sessions.name}: {exc}") from exc
        conn.execute(
            sa.update(sessions)
            .where(sessions.c.session_key == row.session_key)
            .values(
                config=dumps(config_to_json(state.tasks)),
                config_id=uuid.uuid4().hex,
                header=dumps(header_to_json(state)),
            )
        )
    return bool(rows)
