"""Leases and the due index in SQL: one ``{prefix}due`` table for the whole store.

One row per instance a sweeper may have to look at (see
:mod:`triggers_core.engine.leases`): a ``scheduled`` instance (``kind``
``dispatch``, due when it was scheduled) and a ``running`` instance under a
lease (``kind`` ``lease``, due when its lease expires, with the ``owner``
token of the run and whether a sweeper ``claimed`` it). The time is an integer
of microseconds since 1970-01-01 UTC: it sorts, compares and round-trips
exactly on SQLite, PostgreSQL and MySQL/MariaDB alike (MySQL's ``DATETIME`` and
SQLite keep no offset, MySQL's ``TIMESTAMP`` converts by the connection's time
zone and ends in 2038), and a claim matches the time a sweeper saw to the
microsecond.

What each operation costs:

* ``compare_and_swap`` writes ``changes.due`` in its own transaction, after
  the session's version ``UPDATE`` has taken the session's row lock (which
  keeps two writers of one session from racing on its rows), and nothing when
  ``changes.due`` is empty (most fires, which schedule nothing). On PostgreSQL
  the version ``UPDATE`` itself carries them (``Statements.update_with_due``:
  no extra round trip, up to
  :data:`~triggers_backends.sqlalchemy._statements.MAX_DUE_IN_UPDATE` entries
  of each kind); elsewhere, and for larger commits, one ``DELETE`` for the
  entries that go and one multi-row upsert (``ON CONFLICT`` /
  ``ON DUPLICATE KEY``) for those that appear or move.
* ``renew_lease`` and ``claim_lease`` are one ``UPDATE`` of one row by primary
  key, in a transaction of their own, with the expected record in the
  ``WHERE`` clause (``owner``, not ``claimed``; ``owner`` and the time seen):
  the row lock makes the second of two racing updates re-check the row as the
  first left it, so exactly one succeeds. They never touch the session row or
  an instance, so they never wait for, nor fail, a session's compare-and-swap
  (on SQLite, which has one writer at a time, they wait for the write lock
  like every write).
* ``due_entries`` is one range scan of the ``(kind, due_at)`` index, oldest
  first, up to ``limit`` rows: its cost grows with what it returns, not with
  the number of sessions.

Tables created before the due table existed keep working for everything else:
:meth:`LeasesMixin.check_leases` then raises
:class:`~triggers_core.errors.UnsupportedOperationError` saying how to add it
(the manager runs instances without leases), a warning says so once per
process, engine and prefix, and compare-and-swap writes no entries. A missing
table is looked for again every :data:`RECHECK_MISSING` seconds, so processes
start keeping leases soon after an upgrade added it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from triggers_backends.sqlalchemy._base import SQLStorageBase
from triggers_backends.sqlalchemy._errors import driver_error, is_missing_table, public_url
from triggers_backends.sqlalchemy._schema import due_table_state
from triggers_backends.sqlalchemy._statements import MAX_DUE_IN_UPDATE
from triggers_backends.sqlalchemy._tables import row_key
from triggers_core.engine.leases import Due, DueKind
from triggers_core.errors import SerializationError, UnsupportedOperationError
from triggers_core.runtime.storage import DueRef

__all__ = ["RECHECK_MISSING", "LeasesMixin", "from_micros", "to_micros"]

log = logging.getLogger("triggers_backends.sqlalchemy")

#: Seconds before a due table found missing is looked for again.
RECHECK_MISSING = 30.0

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(at: object, what: str) -> int:
    """An aware datetime as integer microseconds since 1970-01-01 UTC (exact)."""
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {at!r}")
    return (at - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    """Integer microseconds since 1970-01-01 UTC as an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=value)


class LeasesMixin(SQLStorageBase):
    """Leases and the due index of :class:`~triggers_backends.sqlalchemy.SQLAlchemyStorage`."""

    # -- is there a due table? ------------------------------------------------------------

    def _due_ready(self) -> bool:
        """True if the due table exists (one probe per engine and prefix, then remembered).

        A missing one is warned about once and looked for again after
        :data:`RECHECK_MISSING` seconds; other errors raise
        :class:`~triggers_core.errors.StorageError`.
        """
        state = due_table_state(self.engine)
        prefix = self.table_prefix
        if prefix in state.ready:
            return True
        missing_since = state.missing.get(prefix)
        if missing_since is not None and time.monotonic() - missing_since < RECHECK_MISSING:
            return False
        try:
            with self._reader.connect() as conn, conn.begin():
                conn.execute(self._sql.probe_due).all()
        except sa_exc.SQLAlchemyError as exc:
            if not (is_missing_table(exc) and self._tables.due.name in str(driver_error(exc))):
                raise self._error(exc, "checking the due table") from exc
            if not self._sessions_exist():
                return False  # no tables at all: every operation says how to create them
            with state.lock:
                state.missing[prefix] = time.monotonic()
                warn = prefix not in state.warned
                state.warned.add(prefix)
            if warn:
                log.warning(
                    "table %r does not exist in %s: %s",
                    self._tables.due.name,
                    public_url(self.engine.url),
                    self._due_table_advice(),
                )
            return False
        with state.lock:
            state.ready.add(prefix)
            state.missing.pop(prefix, None)
        return True

    def _sessions_exist(self) -> bool:
        """Whether the sessions table exists (asked only once the due table was missing)."""
        try:
            with self._reader.connect() as conn, conn.begin():
                conn.execute(self._sql.head, {"b_key": "", "b_config_id": ""}).all()
        except sa_exc.SQLAlchemyError as exc:
            if is_missing_table(exc):
                return False
            raise self._error(exc, "checking the tables") from exc
        return True

    def check_leases(self) -> None:
        """Leases are kept in the due table: check once that it exists.

        One query per engine and table prefix in a process (then remembered).
        Tables without it (created by an earlier version) raise
        :class:`~triggers_core.errors.UnsupportedOperationError` saying how to
        add it, so instances run without leases, and a warning says so once.
        """
        if not self._due_ready():
            raise UnsupportedOperationError(
                "leases (recovering the instances of dead workers)",
                self._label,
                f"table {self._tables.due.name!r} does not exist in "
                f"{public_url(self.engine.url)}: {self._due_table_advice()}",
            )

    # -- written by compare_and_swap ------------------------------------------------------

    def _due_rows(
        self, due: Mapping[str, Due | None]
    ) -> tuple[list[str], list[dict[str, Any]]] | None:
        """``changes.due`` as (name keys to delete, rows to upsert); None: nothing to write.

        Built before the transaction opens (so it holds the session's row lock
        no longer than it must); None too when the tables have no due table.
        """
        if not due or not self._due_ready():
            return None
        deleted: list[str] = []
        upserted: list[dict[str, Any]] = []
        for name in sorted(due):
            entry = due[name]
            if entry is None:
                deleted.append(row_key(name))
                continue
            upserted.append(
                {
                    "session_key": self._key,
                    "name_key": row_key(name),
                    "uid": self.uid,
                    "name": name,
                    "kind": entry.kind.value,
                    "due_at": to_micros(entry.at, f"the due time of {name!r}"),
                    "owner": entry.owner,
                    "claimed": False,
                }
            )
        return deleted, upserted

    def _due_in_update(
        self, conn: Connection, rows: tuple[list[str], list[dict[str, Any]]]
    ) -> bool:
        """Whether the version ``UPDATE`` carries these due writes (PostgreSQL, few rows)."""
        deleted, upserted = rows
        return (
            conn.dialect.name == "postgresql"
            and len(deleted) <= MAX_DUE_IN_UPDATE
            and len(upserted) <= MAX_DUE_IN_UPDATE
        )

    def _due_values(self, rows: tuple[list[str], list[dict[str, Any]]]) -> dict[str, Any]:
        """:meth:`_due_rows` as the parameters of ``Statements.update_with_due``."""
        deleted, upserted = rows
        values: dict[str, Any] = {"d_uid": self.uid}
        for n, key in enumerate(deleted):
            values[f"g{n}"] = key
        for n, row in enumerate(upserted):
            values[f"k{n}"] = row["name_key"]
            values[f"n{n}"] = row["name"]
            values[f"t{n}"] = row["kind"]
            values[f"a{n}"] = row["due_at"]
            values[f"o{n}"] = row["owner"]
        return values

    def _write_due(self, conn: Connection, rows: tuple[list[str], list[dict[str, Any]]]) -> None:
        """Apply :meth:`_due_rows` inside the compare-and-swap transaction."""
        deleted, upserted = rows
        sql = self._sql
        if deleted:
            conn.execute(sql.delete_due, {"b_key": self._key, "b_names": deleted})
        if not upserted:
            return
        statement = sql.upsert_due(conn.dialect.name)
        if statement is None:  # any other dialect: the session's row lock makes this safe
            keys = [row["name_key"] for row in upserted]
            conn.execute(sql.delete_due, {"b_key": self._key, "b_names": keys})
            statement = sql.insert_due
        conn.execute(statement, upserted)

    # -- leases -------------------------------------------------------------------------

    def _update_one(self, statement: Any, params: dict[str, Any], doing: str) -> bool:
        """Run one statement on one due row in a transaction of its own; True if it matched."""
        self.check_leases()
        try:
            with self._writer.connect() as conn, conn.begin():
                return bool(conn.execute(statement, params).rowcount == 1)
        except sa_exc.SQLAlchemyError as exc:
            raise self._error(exc, doing) from exc

    def renew_lease(self, name: str, owner: str, expires: datetime) -> bool:
        params = {
            "b_key": self._key,
            "b_name": row_key(name),
            "b_owner": owner,
            "b_until": to_micros(expires, "expires"),
        }
        return self._update_one(self._sql.renew_lease, params, "renew_lease")

    def claim_lease(self, name: str, owner: str, seen: datetime, until: datetime) -> bool:
        params = {
            "b_key": self._key,
            "b_name": row_key(name),
            "b_owner": owner,
            "b_seen": to_micros(seen, "seen"),
            "b_until": to_micros(until, "until"),
        }
        return self._update_one(self._sql.claim_lease, params, "claim_lease")

    def forget_due(self, name: str, kind: DueKind, seen: datetime) -> bool:
        params = {
            "b_key": self._key,
            "b_name": row_key(name),
            "b_kind": kind.value,
            "b_seen": to_micros(seen, "seen"),
        }
        return self._update_one(self._sql.forget_due, params, "forget_due")

    def get_lease(self, name: str) -> DueRef | None:
        self.check_leases()
        params = {"b_key": self._key, "b_name": row_key(name)}
        try:
            with self._reader.connect() as conn, conn.begin():
                row = conn.execute(self._sql.get_lease, params).one_or_none()
        except sa_exc.SQLAlchemyError as exc:
            raise self._error(exc, "get_lease") from exc
        return None if row is None else self._ref(row)

    def due_entries(self, kind: DueKind, before: datetime, *, limit: int) -> list[DueRef]:
        """Up to ``limit`` entries of ``kind`` due at or before ``before``, oldest first.

        One range scan of the ``(kind, due_at)`` index across every session of
        these tables: it reads the rows it returns and no others.
        """
        if not isinstance(kind, DueKind):
            raise ValueError(f"kind must be a DueKind, got {kind!r}")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        params = {
            "b_kind": kind.value,
            "b_before": to_micros(before, "before"),
            "b_limit": limit,
        }
        self.check_leases()
        try:
            with self._reader.connect() as conn, conn.begin():
                rows = conn.execute(self._sql.due_before, params).all()
        except sa_exc.SQLAlchemyError as exc:
            raise self._error(exc, "due_entries") from exc
        return [self._ref(row) for row in rows]

    def _ref(self, row: Any) -> DueRef:
        """A due row as a :class:`DueRef`; a row no writer could have left is an error."""
        try:
            kind = DueKind(row.kind)
            at = from_micros(int(row.due_at))
        except (ValueError, TypeError, OverflowError) as exc:
            raise SerializationError(
                f"{self._label} storage, table {self._tables.due.name!r}: the entry of "
                f"{row.name!r} in session {row.uid!r} is malformed ({exc}); "
                "the row was left as it is"
            ) from exc
        owner = row.owner if isinstance(row.owner, str) else None
        return DueRef(row.uid, row.name, kind, at, owner, bool(row.claimed))
