"""The SQL statements of the SQLAlchemy storage, built once per set of tables.

Building a SELECT or an UPDATE and computing its cache key cost SQLAlchemy more
than SQLite spends running it, so each statement a storage runs is built once
per table prefix, with every value a bind parameter named ``b_*`` (expanding
ones for IN lists): SQLAlchemy then compiles each shape once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect

from triggers_backends.sqlalchemy._tables import Tables
from triggers_core.engine.leases import DueKind
from triggers_core.engine.state import Status

__all__ = [
    "CHANGING",
    "DUE_CHANGING",
    "MAX_DUE_IN_UPDATE",
    "MAX_IN",
    "MAX_IN_ONE",
    "Statements",
    "chunks",
    "statements_for",
]

#: Instance columns a write may change (the keys and the name never change).
CHANGING = ("task_key", "status", "resolved", "doc", "updated_at")
#: Due-index columns a compare-and-swap sets (everything but the keys).
DUE_CHANGING = ("uid", "name", "kind", "due_at", "owner", "claimed")

#: Bind parameters per IN list; longer lists are split (SQLite allows 999 in old builds).
MAX_IN = 500

#: PostgreSQL: due entries (of each of going and coming) a version ``UPDATE`` carries
#: itself; a commit with more writes them with statements of their own.
MAX_DUE_IN_UPDATE = 8

#: PostgreSQL: instance rows (created plus updated) and fire records a compare-and-swap
#: may write to be sent as one statement (:meth:`Statements.commit_in_one`); larger
#: commits run as a transaction of several statements.
MAX_IN_ONE = 8


def chunks(keys: list[str]) -> Iterable[list[str]]:
    """``keys`` in lists of at most :data:`MAX_IN`."""
    for start in range(0, len(keys), MAX_IN):
        yield keys[start : start + MAX_IN]


class Statements:
    """The statements a storage runs, built once per set of tables (SQLAlchemy then
    caches their compiled forms); every value is a bind parameter named ``b_*``."""

    def __init__(self, tables: Tables) -> None:
        sessions, instances = tables.sessions, tables.instances
        self._instances = instances
        self._latest = tables.latest
        self.head = sa.select(
            sessions.c.uid,
            sessions.c.version,
            sessions.c.config_id,
            sa.case(
                (sessions.c.config_id == sa.bindparam("b_config_id"), sa.null()),
                else_=sessions.c.config,
            ).label("config"),
            sessions.c.header,
        ).where(sessions.c.session_key == sa.bindparam("b_key"))
        #: The header and the instances named (by ``b_names``) in one statement: one row
        #: per instance found, or one with null instance columns (``LEFT JOIN``).
        self.head_named = (
            sa.select(
                *self.head.selected_columns,
                instances.c.name,
                instances.c.doc,
                instances.c.task_key,
            )
            .select_from(
                sessions.outerjoin(
                    instances,
                    sa.and_(
                        instances.c.session_key == sessions.c.session_key,
                        instances.c.name_key.in_(sa.bindparam("b_names", expanding=True)),
                    ),
                )
            )
            .where(sessions.c.session_key == sa.bindparam("b_key"))
        )
        fire_keys = tables.fire_keys
        #: :attr:`head_named` and the fire records of the hashes ``b_hashes`` (``UNION
        #: ALL``, one snapshot): one row each, with ``key_hash`` set, the record's
        #: ``scheduled`` as ``doc`` and every other column null; the session's rows have
        #: a null ``key_hash`` (and a ``uid``).
        self.head_named_records = sa.union_all(
            self.head_named.add_columns(sa.cast(sa.null(), sa.String(64)).label("key_hash")),
            _record_rows(
                fire_keys,
                [*sessions.c["uid", "version", "config_id", "config", "header"], instances.c.name],
                instances.c.task_key,
            ),
        )
        self._rows: dict[tuple[Any, ...], Any] = {}
        self.create = sa.insert(sessions)
        update = (
            sa.update(sessions)
            .where(sessions.c.session_key == sa.bindparam("b_key"))
            .where(sessions.c.version == sa.bindparam("b_expected"))
        )
        base: dict[str, Any] = {
            "version": sa.bindparam("b_version"),
            "header": sa.bindparam("b_header"),
            "updated_at": sa.bindparam("b_now"),
        }
        self.update = update.values(base)
        self.update_config = update.values(
            {**base, "config": sa.bindparam("b_config"), "config_id": sa.bindparam("b_config_id")}
        )
        self._sessions = sessions
        self._update_with_due: dict[tuple[bool | int, ...], Any] = {}
        self.insert_instances = sa.insert(instances)
        self._upserts: dict[str, Any] = {}
        #: Fire records of some keys (by primary key).
        self.fire_records = (
            sa.select(fire_keys.c.key_hash, fire_keys.c.scheduled)
            .where(fire_keys.c.session_key == sa.bindparam("b_key"))
            .where(fire_keys.c.key_hash.in_(sa.bindparam("b_hashes", expanding=True)))
        )
        self.insert_fire_records = sa.insert(fire_keys)
        self._fire_keys = fire_keys
        #: Reads nothing (an empty primary key range): does the table exist?
        self.probe_fire_keys = (
            sa.select(fire_keys.c.key_hash)
            .where(fire_keys.c.session_key == "")
            .where(fire_keys.c.key_hash == "")
        )
        self._due_statements(tables.due)

    def _due_statements(self, due: sa.Table) -> None:
        """The due index's statements (see :mod:`~triggers_backends.sqlalchemy._due`)."""
        self._due = due
        columns = (due.c.uid, due.c.name, due.c.kind, due.c.due_at, due.c.owner, due.c.claimed)
        one = sa.and_(
            due.c.session_key == sa.bindparam("b_key"), due.c.name_key == sa.bindparam("b_name")
        )
        lease = sa.and_(one, due.c.kind == DueKind.LEASE.value)
        #: Reads nothing (an empty primary key range): does the table exist?
        self.probe_due = (
            sa.select(due.c.due_at).where(due.c.session_key == "").where(due.c.name_key == "")
        )
        #: The lease record of one instance.
        self.get_lease = sa.select(*columns).where(lease)
        #: Renewal: only the run that holds the lease, and only while no sweeper claimed it.
        self.renew_lease = (
            sa.update(due)
            .where(lease)
            .where(due.c.owner == sa.bindparam("b_owner"))
            .where(sa.not_(due.c.claimed))
            .values(due_at=sa.bindparam("b_until"))
        )
        #: Claim: only the record as the sweeper saw it (owner and time).
        self.claim_lease = (
            sa.update(due)
            .where(lease)
            .where(due.c.owner == sa.bindparam("b_owner"))
            .where(due.c.due_at == sa.bindparam("b_seen"))
            .values(due_at=sa.bindparam("b_until"), claimed=sa.true())
        )
        #: Drop a stale entry, only as the sweeper saw it (kind and time).
        self.forget_due = (
            sa.delete(due)
            .where(one)
            .where(due.c.kind == sa.bindparam("b_kind"))
            .where(due.c.due_at == sa.bindparam("b_seen"))
        )
        #: A range of the (kind, due_at) index, oldest first.
        self.due_before = (
            sa.select(*columns)
            .where(due.c.kind == sa.bindparam("b_kind"))
            .where(due.c.due_at <= sa.bindparam("b_before"))
            .order_by(due.c.due_at)
            .limit(sa.bindparam("b_limit"))
        )
        #: Entries of some instances of one session (by primary key).
        self.delete_due = (
            sa.delete(due)
            .where(due.c.session_key == sa.bindparam("b_key"))
            .where(due.c.name_key.in_(sa.bindparam("b_names", expanding=True)))
        )
        self.insert_due = sa.insert(due)
        self._due_upserts: dict[str, Any] = {}

    def rows(
        self,
        *,
        names: bool = False,
        tasks: bool = False,
        unstarted: bool = False,
        unresolved: bool = False,
    ) -> Any:
        """Instances by name, unstarted of some tasks, all unstarted, unresolved (OR-ed);
        every instance of the session when none is asked for."""
        shape = (names, tasks, unstarted, unresolved)
        found = self._rows.get(shape)
        if found is None:
            t = self._instances
            waiting = t.c.status == Status.UNSTARTED.value
            conditions: list[Any] = []
            if names:
                conditions.append(t.c.name_key.in_(sa.bindparam("b_names", expanding=True)))
            if tasks:
                tasks_in = t.c.task_key.in_(sa.bindparam("b_tasks", expanding=True))
                conditions.append(sa.and_(waiting, tasks_in))
            if unstarted:
                conditions.append(waiting)
            if unresolved:
                conditions.append(sa.not_(t.c.resolved))
            found = sa.select(t.c.name, t.c.doc, t.c.task_key).where(
                t.c.session_key == sa.bindparam("b_key")
            )
            if conditions:
                found = found.where(sa.or_(*conditions))
            self._rows[shape] = found
        return found

    def rows_at_version(
        self,
        *,
        names: bool = False,
        tasks: bool = False,
        unresolved: bool = False,
        records: bool = False,
    ) -> Any:
        """:meth:`rows` (some asked for) on the session's row, which carries ``version``
        and ``config_id`` into every result row (``LEFT JOIN``: one row with null
        instance columns when no instance matches, none when the session is gone).

        For a load outside a transaction: the caller compares them with the
        header it read, so that two statements read one state (see
        :meth:`~triggers_backends.sqlalchemy._reading.ReadingMixin.load`).

        With ``records``, the same statement (so the same snapshot) also returns
        the fire records of the hashes ``b_hashes`` (``UNION ALL``): one row
        each, with ``key_hash`` set, the record's ``scheduled`` as ``doc`` and
        null session and instance columns; every instance row has a null
        ``key_hash``.
        """
        shape = ("versioned", names, tasks, unresolved, records)
        found = self._rows.get(shape)
        if found is None:
            s, t = self._sessions, self._instances
            waiting = t.c.status == Status.UNSTARTED.value
            conditions: list[Any] = []
            if names:
                conditions.append(t.c.name_key.in_(sa.bindparam("b_names", expanding=True)))
            if tasks:
                tasks_in = t.c.task_key.in_(sa.bindparam("b_tasks", expanding=True))
                conditions.append(sa.and_(waiting, tasks_in))
            if unresolved:
                conditions.append(sa.not_(t.c.resolved))
            joined = sa.and_(
                t.c.session_key == s.c.session_key,
                sa.or_(*conditions) if conditions else sa.false(),
            )
            columns = [
                s.c.version.label("session_version"),
                s.c.config_id.label("session_config_id"),
                t.c.name,
                t.c.doc,
                t.c.task_key,
            ]
            if records:
                columns.append(sa.cast(sa.null(), sa.String(64)).label("key_hash"))
            found = (
                sa.select(*columns)
                .select_from(s.outerjoin(t, joined))
                .where(s.c.session_key == sa.bindparam("b_key"))
            )
            if records:
                found = sa.union_all(
                    found,
                    _record_rows(
                        self._fire_keys, [s.c.version, s.c.config_id, t.c.name], t.c.task_key
                    ),
                )
            self._rows[shape] = found
        return found

    def upsert(self, dialect: str) -> Any:
        """Insert-or-update of instance rows for ``dialect`` (None: no such statement)."""
        if dialect in self._upserts:
            return self._upserts[dialect]
        table = self._instances
        statement: Any = None
        if dialect in ("postgresql", "sqlite"):
            pg_or_lite = (postgresql if dialect == "postgresql" else sqlite).insert(table)
            statement = pg_or_lite.on_conflict_do_update(
                index_elements=[table.c.session_key, table.c.name_key],
                set_={column: pg_or_lite.excluded[column] for column in CHANGING},
            )
        elif dialect in ("mysql", "mariadb"):
            my = mysql.insert(table)
            statement = my.on_duplicate_key_update(
                {column: my.inserted[column] for column in CHANGING}
            )
        self._upserts[dialect] = statement
        return statement

    def update_with_due(self, dialect: Dialect, config: bool, gone: int, put: int) -> Any:
        """PostgreSQL: the version ``UPDATE`` and the due-index writes in one statement.

        ``WITH s AS (UPDATE sessions ... RETURNING ...)``, then a ``DELETE`` of
        ``gone`` due rows and an upsert of ``put`` rows that run only if ``s``
        updated the session's row (an uncorrelated ``EXISTS``: PostgreSQL
        evaluates it once, before either touches a due row, so the session's
        row lock is still taken first); it returns how many session rows it
        updated. This saves the round trip a separate due statement would cost
        every commit that changes the index. Scalar parameters (``g0``...,
        ``k0``, ``n0``, ``t0``, ``a0``, ``o0``...), one statement per shape, at
        most :data:`MAX_DUE_IN_UPDATE` of each: arrays would cost more to adapt
        than the round trip they save.
        """
        return self.commit_in_one(dialect, config, gone=gone, put=put)

    def commit_in_one(
        self,
        dialect: Dialect,
        config: bool,
        *,
        gone: int = 0,
        put: int = 0,
        created: int = 0,
        updated: int = 0,
        records: int = 0,
        latest: int = 0,
    ) -> Any:
        """PostgreSQL: a whole compare-and-swap of an existing session as one statement.

        :meth:`update_with_due`, plus an ``INSERT`` of ``created`` instance rows
        (``c0_name_key``... : a duplicate key is an error, as in the transaction),
        an upsert of ``updated`` rows (``u0_...``) and an ``INSERT`` of
        ``records`` fire records (``r0_...``) and an upsert of ``latest`` rows of
        latest kwargs (``l0_...``, written at the new version), each only if ``s``
        updated the session's row. Run in autocommit mode, the statement is its own
        transaction: one round trip instead of ``BEGIN``, three or four
        statements and ``COMMIT``, with the same outcome (all or nothing; the
        session's row lock first). One statement per shape; callers keep the
        counts small (:data:`MAX_IN_ONE`).
        """
        key = (config, gone, put, created, updated, records, latest)
        found = self._update_with_due.get(key)
        if found is not None:
            return found
        preparer = dialect.identifier_preparer
        sessions = preparer.format_table(self._sessions)
        due = preparer.format_table(self._due)
        assignments = "version = :b_version, header = :b_header, updated_at = :b_now"
        if config:
            assignments += ", config = :b_config, config_id = :b_config_id"
        parts = [
            f"WITH s AS (UPDATE {sessions} SET {assignments} "
            "WHERE session_key = :b_key AND version = :b_expected RETURNING session_key)"
        ]
        if gone:
            keys = ", ".join(f":g{n}" for n in range(gone))
            parts.append(
                f"gone AS (DELETE FROM {due} WHERE EXISTS (SELECT 1 FROM s) "
                f"AND session_key = :b_key AND name_key IN ({keys}))"
            )
        if put:
            rows = ", ".join(
                f"(CAST(:k{n} AS VARCHAR(64)), CAST(:n{n} AS TEXT), CAST(:t{n} AS VARCHAR(16)), "
                f"CAST(:a{n} AS BIGINT), CAST(:o{n} AS TEXT))"
                for n in range(put)
            )
            changing = ", ".join(f"{c} = excluded.{c}" for c in DUE_CHANGING)
            parts.append(
                f"put AS (INSERT INTO {due} "
                "(session_key, name_key, uid, name, kind, due_at, owner, claimed) "
                "SELECT :b_key, v.name_key, :d_uid, v.name, v.kind, v.due_at, v.owner, false "
                f"FROM (VALUES {rows}) AS v(name_key, name, kind, due_at, owner) "
                "WHERE EXISTS (SELECT 1 FROM s) "
                f"ON CONFLICT (session_key, name_key) DO UPDATE SET {changing})"
            )
        instances = preparer.format_table(self._instances)
        for tag, count in (("c", created), ("u", updated)):
            if not count:
                continue
            rows = ", ".join(
                f"(CAST(:{tag}{n}_name_key AS VARCHAR(64)), CAST(:{tag}{n}_name AS TEXT), "
                f"CAST(:{tag}{n}_task_key AS VARCHAR(64)), CAST(:{tag}{n}_status AS VARCHAR(16)), "
                f"CAST(:{tag}{n}_resolved AS BOOLEAN), CAST(:{tag}{n}_doc AS TEXT))"
                for n in range(count)
            )
            upsert = ""
            if tag == "u":
                changing = ", ".join(f"{c} = excluded.{c}" for c in CHANGING)
                upsert = f" ON CONFLICT (session_key, name_key) DO UPDATE SET {changing}"
            parts.append(
                f"{tag}i AS (INSERT INTO {instances} "
                "(session_key, name_key, name, task_key, status, resolved, doc, updated_at) "
                "SELECT :b_key, v.name_key, v.name, v.task_key, v.status, v.resolved, v.doc, "
                f":b_now FROM (VALUES {rows}) AS v(name_key, name, task_key, status, resolved, "
                f"doc) WHERE EXISTS (SELECT 1 FROM s){upsert})"
            )
        if records:
            fire_keys = preparer.format_table(self._fire_keys)
            rows = ", ".join(
                f"(CAST(:r{n}_key_hash AS VARCHAR(64)), CAST(:r{n}_trigger_name AS TEXT), "
                f"CAST(:r{n}_scheduled AS TEXT))"
                for n in range(records)
            )
            parts.append(
                f"fr AS (INSERT INTO {fire_keys} "
                "(session_key, key_hash, trigger_name, scheduled, created_at) "
                "SELECT :b_key, v.key_hash, v.trigger_name, v.scheduled, :b_now "
                f"FROM (VALUES {rows}) AS v(key_hash, trigger_name, scheduled) "
                "WHERE EXISTS (SELECT 1 FROM s))"
            )
        if latest:
            table = preparer.format_table(self._latest)
            rows = ", ".join(
                f"(CAST(:l{n}_trigger_key AS VARCHAR(64)), CAST(:l{n}_trigger AS TEXT), "
                f"CAST(:l{n}_value AS TEXT))"
                for n in range(latest)
            )
            parts.append(
                f"lk AS (INSERT INTO {table} (session_key, trigger_key, trigger, version, value) "
                "SELECT :b_key, v.trigger_key, v.trigger, :b_version, v.value "
                f"FROM (VALUES {rows}) AS v(trigger_key, trigger, value) "
                "WHERE EXISTS (SELECT 1 FROM s) "
                "ON CONFLICT (session_key, trigger_key) DO UPDATE SET "
                "trigger = excluded.trigger, version = excluded.version, value = excluded.value)"
            )
        statement = sa.text(", ".join(parts) + " SELECT count(*) FROM s")
        found = self._update_with_due[key] = statement
        return found

    def upsert_due(self, dialect: str) -> Any:
        """Insert-or-replace of due-index rows for ``dialect`` (None: no such statement)."""
        if dialect in self._due_upserts:
            return self._due_upserts[dialect]
        table = self._due
        statement: Any = None
        if dialect in ("postgresql", "sqlite"):
            pg_or_lite = (postgresql if dialect == "postgresql" else sqlite).insert(table)
            statement = pg_or_lite.on_conflict_do_update(
                index_elements=[table.c.session_key, table.c.name_key],
                set_={column: pg_or_lite.excluded[column] for column in DUE_CHANGING},
            )
        elif dialect in ("mysql", "mariadb"):
            my = mysql.insert(table)
            statement = my.on_duplicate_key_update(
                {column: my.inserted[column] for column in DUE_CHANGING}
            )
        self._due_upserts[dialect] = statement
        return statement


_STATEMENTS: dict[str, Statements] = {}
_LOCK = threading.Lock()


def statements_for(tables: Tables) -> Statements:
    """The statements for ``tables`` (one object per table prefix)."""
    key = tables.sessions.name
    with _LOCK:
        found = _STATEMENTS.get(key)
        if (
            found is None
            or found._instances is not tables.instances
            or found._due is not tables.due
        ):
            found = _STATEMENTS[key] = Statements(tables)
        return found


def _record_rows(fire_keys: sa.Table, before: list[Any], task_key: Any) -> sa.Select[Any]:
    """The fire records of the hashes ``b_hashes`` of session ``b_key``, as rows to put
    under instance rows with ``UNION ALL``: null in the columns ``before`` stand for, the
    record's ``scheduled`` where the instance's ``doc`` is, a null ``task_key``, then its
    ``key_hash`` (null in the instance rows)."""
    return (
        sa.select(
            *(sa.cast(sa.null(), column.type) for column in before),
            fire_keys.c.scheduled,
            sa.cast(sa.null(), task_key.type),
            fire_keys.c.key_hash,
        )
        .where(fire_keys.c.session_key == sa.bindparam("b_key"))
        .where(fire_keys.c.key_hash.in_(sa.bindparam("b_hashes", expanding=True)))
    )
