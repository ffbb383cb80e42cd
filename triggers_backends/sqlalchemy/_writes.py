"""Writes: one compare-and-swap transaction per operation, and deleting a session.

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
:class:`~triggers_core.errors.SerializationError`, with nothing written.
The due index (``changes.due``, :mod:`~triggers_backends.sqlalchemy._due`) is
written in the same transaction, and only when it changed: on PostgreSQL by
the version UPDATE itself (one statement with CTEs, so no extra round trip),
elsewhere last, after the instances. The latest kwargs the operation set are
written in the same transaction too (:mod:`~triggers_backends.sqlalchemy._latest`).
On PostgreSQL a compare-and-swap of an existing session with few rows is all
of this as *one* statement in autocommit mode (its own transaction:
``Statements.commit_in_one``), with the same outcomes.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from triggers_backends.sqlalchemy._due import LeasesMixin
from triggers_backends.sqlalchemy._latest import LatestMixin
from triggers_backends.sqlalchemy._statements import (
    CHANGING,
    MAX_DUE_IN_UPDATE,
    MAX_IN,
    MAX_IN_ONE,
)
from triggers_backends.sqlalchemy._tables import row_key
from triggers_core.engine.scopes import Changes
from triggers_core.engine.serialization import config_to_json, dumps, instance_to_json
from triggers_core.engine.state import SessionState
from triggers_core.engine.task_table import TaskTable
from triggers_core.errors import ConflictError, SerializationError
from triggers_core.runtime.storage import Version

__all__ = ["WritingMixin"]


class WritingMixin(LeasesMixin, LatestMixin):
    """The writes of :class:`~triggers_backends.sqlalchemy.SQLAlchemyStorage`.

    A :class:`~triggers_backends.sqlalchemy._due.LeasesMixin`: a
    compare-and-swap writes the due index too.
    """

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
        split = self._latest_ready()  # else an older layout: the header holds them
        header = self._codec.encode(state, split=split)
        latest = None
        if split:
            next_version = 1 if expected is None else expected + 1
            latest = self._latest_rows(state.latest_kwargs, next_version, fresh=expected is None)
        config: dict[str, Any] = {}
        if changes.config or expected is None:
            config = {"config": dumps(config_to_json(state.tasks)), "config_id": uuid.uuid4().hex}
        created: list[dict[str, Any]] = []
        updated: list[dict[str, Any]] = []
        for name in sorted(changes.instances):
            instance = state.instances[name]
            row = {
                "session_key": self._key,
                "name_key": row_key(name),
                "name": name,
                "task_key": row_key(instance.task_name),
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
        due = self._due_rows(changes.due)
        # The one statement upserts the latest kwargs an operation set (their rows replace
        # the same triggers' rows); replacing them all (a first or foreign write) takes the
        # transaction.
        latest_rows: list[dict[str, Any]] = [] if latest is None else latest[1]
        if (
            expected is not None
            and (latest is None or latest[0] is not None)
            and len(latest_rows) <= MAX_IN_ONE
            and self._fits_one_statement(created, updated, records, due)
        ):
            self._swap_in_one(
                expected, header, now, config, created, updated, records, due, latest_rows
            )
            if config:
                self._config = (config["config_id"], TaskTable.of(state.tasks))
            return expected + 1
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
                    if due is not None and self._due_in_update(conn, due):
                        # The due writes ride on the version UPDATE: no extra round trip.
                        gone, put = len(due[0]), len(due[1])
                        values.update(self._due_values(due))
                        statement = sql.update_with_due(conn.dialect, bool(config), gone, put)
                        matched = conn.execute(statement, values).scalar_one()
                        due = None
                    else:
                        statement = sql.update_config if config else sql.update
                        matched = conn.execute(statement, values).rowcount
                    if matched != 1:  # leaving the block rolls back
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
                if latest is not None:
                    self._write_latest(conn, *latest)
                if due is not None:
                    self._write_due(conn, due)
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

    def _fits_one_statement(
        self,
        created: list[dict[str, Any]],
        updated: list[dict[str, Any]],
        records: list[dict[str, Any]],
        due: tuple[list[str], list[dict[str, Any]]] | None,
    ) -> bool:
        """PostgreSQL, and few enough rows for :meth:`Statements.commit_in_one`."""
        return (
            self.engine.dialect.name == "postgresql"
            and len(created) + len(updated) <= MAX_IN_ONE
            and len(records) <= MAX_IN_ONE
            and (
                due is None
                or (len(due[0]) <= MAX_DUE_IN_UPDATE and len(due[1]) <= MAX_DUE_IN_UPDATE)
            )
        )

    def _swap_in_one(  # noqa: PLR0917 - the parts of one compare-and-swap
        self,
        expected: int,
        header: str,
        now: datetime,
        config: dict[str, Any],
        created: list[dict[str, Any]],
        updated: list[dict[str, Any]],
        records: list[dict[str, Any]],
        due: tuple[list[str], list[dict[str, Any]]] | None,
        latest: list[dict[str, Any]],
    ) -> None:
        """The compare-and-swap of an existing session as one statement in autocommit mode.

        The statement is its own transaction, so it writes all of it or nothing,
        exactly as the transaction of several statements does: a version that
        moved on matches no row and writes nothing (ConflictError); a fire
        record that exists is a conflict and a created instance that exists is
        corruption, each with nothing written (the whole statement fails).
        """
        values: dict[str, Any] = {
            "b_key": self._key,
            "b_expected": expected,
            "b_version": expected + 1,
            "b_header": header,
            "b_now": now,
        }
        if config:
            values.update(b_config=config["config"], b_config_id=config["config_id"])
        gone = put = 0
        if due is not None:
            gone, put = len(due[0]), len(due[1])
            values.update(self._due_values(due))
        for tag, rows in (("c", created), ("u", updated)):
            for n, row in enumerate(rows):
                for column in ("name_key", "name", "task_key", "status", "resolved", "doc"):
                    values[f"{tag}{n}_{column}"] = row[column]
        for n, record in enumerate(records):
            for column in ("key_hash", "trigger_name", "scheduled"):
                values[f"r{n}_{column}"] = record[column]
        for n, row in enumerate(latest):
            for column in ("trigger_key", "trigger", "value"):
                values[f"l{n}_{column}"] = row[column]
        statement = self._sql.commit_in_one(
            self.engine.dialect,
            bool(config),
            gone=gone,
            put=put,
            created=len(created),
            updated=len(updated),
            records=len(records),
            latest=len(latest),
        )
        try:
            raw = self._raw_autocommit
            with (raw or self._autocommit).connect() as conn:
                matched = conn.execute(statement, values).scalar_one()
        except sa_exc.IntegrityError as exc:
            table = _duplicate_in(exc)
            if table == self._tables.fire_keys.name:
                raise ConflictError(
                    "a fire record this write creates is already stored (that fire was "
                    "applied meanwhile); nothing was written",
                    backend=self._label,
                    session=self.uid,
                ) from None
            if table == self._tables.instances.name:
                raise self._corruption([row["name"] for row in created]) from exc
            raise self._error(exc, "compare_and_swap") from exc
        except sa_exc.SQLAlchemyError as exc:
            raise self._error(exc, "compare_and_swap") from exc
        if matched != 1:
            raise ConflictError(
                f"version moved on from {expected!r}", backend=self._label, session=self.uid
            )

    def _corruption(self, names: list[str]) -> SerializationError:
        """The error for created instances that were already stored (nothing was written)."""
        table = self._tables.instances
        try:
            with self._reader.connect() as conn, conn.begin():
                existing = sorted(
                    conn.execute(
                        sa.select(table.c.name)
                        .where(table.c.session_key == self._key)
                        .where(table.c.name_key.in_([row_key(n) for n in names[:MAX_IN]]))
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
        """Remove this session (header, instances, fire records, due entries, latest kwargs)."""
        sessions, instances = self._tables.sessions, self._tables.instances
        try:
            with self._writer.connect() as conn, conn.begin():
                conn.execute(sa.delete(sessions).where(sessions.c.session_key == self._key))
                conn.execute(sa.delete(instances).where(instances.c.session_key == self._key))
                inspector = sa.inspect(conn)
                for table in (self._tables.fire_keys, self._tables.due, self._tables.latest):
                    if inspector.has_table(table.name):  # older tables lack them
                        conn.execute(sa.delete(table).where(table.c.session_key == self._key))
        except sa_exc.SQLAlchemyError as exc:
            raise self._error(exc, "delete") from exc


def _duplicate_in(exc: sa_exc.IntegrityError) -> str | None:
    """The table whose unique key ``exc`` violated (PostgreSQL), else None."""
    if getattr(exc.orig, "sqlstate", None) != "23505":  # unique_violation
        return None
    table = getattr(getattr(exc.orig, "diag", None), "table_name", None)  # psycopg
    if table is None:  # asyncpg, under SQLAlchemy's emulated error (its ``orig``)
        table = getattr(getattr(exc.orig, "orig", None), "table_name", None)
    return table if isinstance(table, str) else None


class _CreatedExists(Exception):
    """Internal: an INSERT of a created instance hit an existing row (rolls the write back)."""


class _RecordExists(Exception):
    """Internal: an INSERT of a fire record hit an existing row (rolls the write back)."""
