"""The latest kwargs of a session's triggers, in the ``latest`` table, apart from the header.

Every fire sets its trigger's latest kwargs, but only a fire that creates an
instance reads any (those of its task's other ``after`` triggers), so one
large payload must not ride along with every operation
(:mod:`triggers_core.engine.latest`). The header names the triggers that have
latest kwargs (``latestTriggers``, a split header:
:data:`~triggers_core.engine.serialization.SPLIT_HEADER_VERSION`); each value
is a row of ``{prefix}latest``:

* a load hands the engine a :class:`~triggers_core.engine.latest.LatestKwargs`
  that reads a row (one primary key lookup) only when a value is asked for,
  and refuses a row written after the load's version (the row's ``version``
  column) with :class:`~triggers_core.errors.ConflictError`, so the operation
  starts over; a full load (inspection) reads all rows in its snapshot;
* a compare-and-swap writes the rows of the triggers the operation set, in its
  transaction, after the version UPDATE; a mapping from elsewhere (another
  storage, a header that held its latest kwargs) is written in full.

Cost of an operation: one row per latest kwargs it reads or sets, whatever
the other triggers hold. Headers that hold their latest kwargs
(``latestKwargs``, written before the table existed) load as they are and
move to the table on their next write; while a process finds the table missing
(tables not upgraded yet) it keeps writing that older layout, which every
reader understands. A process that knows only that older layout refuses a split
header ("schemaVersion 3 is newer than this library understands") instead of
reading a session without its latest kwargs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from triggers_backends.sqlalchemy._base import SQLStorageBase
from triggers_backends.sqlalchemy._due import RECHECK_MISSING
from triggers_backends.sqlalchemy._errors import driver_error, is_missing_table
from triggers_backends.sqlalchemy._raw import SQLConnection
from triggers_backends.sqlalchemy._schema import latest_table_state
from triggers_backends.sqlalchemy._statements import chunks
from triggers_backends.sqlalchemy._tables import Tables, row_key
from triggers_core.engine.latest import LatestKwargs, Loader
from triggers_core.engine.serialization import dumps, loads
from triggers_core.errors import ConflictError, SerializationError

__all__ = ["LatestMixin"]


class _Statements:
    """The statements on one prefix's latest table."""

    def __init__(self, tables: Tables) -> None:
        latest = tables.latest
        key = latest.c.session_key == sa.bindparam("b_key")
        self.one = sa.select(latest.c.trigger, latest.c.version, latest.c.value).where(
            key, latest.c.trigger_key == sa.bindparam("b_trigger")
        )
        self.all = sa.select(latest.c.trigger, latest.c.value).where(key)
        self.all_versions = sa.select(latest.c.trigger, latest.c.version, latest.c.value).where(key)
        self.version = sa.select(tables.sessions.c.version).where(
            tables.sessions.c.session_key == sa.bindparam("b_key")
        )
        self.delete_all = sa.delete(latest).where(key)
        self.delete_some = sa.delete(latest).where(
            key, latest.c.trigger_key.in_(sa.bindparam("b_triggers", expanding=True))
        )
        self.insert = sa.insert(latest)
        #: Reads nothing (an empty primary key range): does the table exist?
        self.probe = sa.select(latest.c.trigger_key).where(latest.c.session_key == "")


_STATEMENTS: dict[int, _Statements] = {}


class LatestMixin(SQLStorageBase):
    """The latest kwargs of :class:`~triggers_backends.sqlalchemy.SQLAlchemyStorage`."""

    @property
    def _latest_sql(self) -> _Statements:
        found = _STATEMENTS.get(id(self._tables.latest))
        if found is None:  # tables are defined once per prefix and kept (tables_for)
            found = _STATEMENTS[id(self._tables.latest)] = _Statements(self._tables)
        return found

    @property
    def latest_source(self) -> object:
        """What names this session's stored latest kwargs (see ``LatestKwargs.source``)."""
        url = self.engine.url.render_as_string(hide_password=True)
        return ("sqlalchemy", url, self.table_prefix, self._key)

    def _latest_ready(self) -> bool:
        """True if the latest table exists (one probe per engine and prefix, then remembered).

        A missing one is looked for again after :data:`RECHECK_MISSING` seconds;
        meanwhile headers keep their latest kwargs.
        """
        state = latest_table_state(self.engine)
        prefix = self.table_prefix
        if prefix in state.ready:
            return True
        missing_since = state.missing.get(prefix)
        if missing_since is not None and time.monotonic() - missing_since < RECHECK_MISSING:
            return False
        try:
            with self._reader.connect() as conn, conn.begin():
                conn.execute(self._latest_sql.probe).all()
        except sa_exc.SQLAlchemyError as exc:
            if not (is_missing_table(exc) and self._tables.latest.name in str(driver_error(exc))):
                raise self._error(exc, "checking the latest kwargs table") from exc
            with state.lock:
                state.missing[prefix] = time.monotonic()
            return False
        with state.lock:
            state.ready.add(prefix)
            state.missing.pop(prefix, None)
        return True

    def _latest_mapping(
        self,
        conn: SQLConnection,
        version: int,
        triggers: tuple[str, ...] | None,
        held: Mapping[str, Mapping[str, Any]],
        *,
        full: bool,
    ) -> LatestKwargs:
        """The latest kwargs of a header: ``held`` by an older header (``triggers`` None),
        else read on demand, or all now in ``conn``'s snapshot if ``full``."""
        if triggers is None:  # an older header: written in full by the next write
            return LatestKwargs(held, _never, source=None, values=held)
        values: dict[str, Mapping[str, Any]] = {}
        if full and triggers:
            wanted = frozenset(triggers)
            for row in conn.execute(self._latest_sql.all, {"b_key": self._key}):
                if row.trigger in wanted:
                    values[row.trigger] = self._latest_value(row.trigger, row.value)
            lost = [t for t in triggers if t not in values]
            if lost:
                raise SerializationError(
                    f"{self._label} storage, session {self.uid!r}: the header names latest "
                    f"kwargs of {lost[0]!r}, which are not stored (the rows were left as "
                    "they are)"
                )
        return LatestKwargs(
            triggers, self._latest_loader(version), source=self.latest_source, values=values
        )

    def _latest_unlocked(
        self, conn: SQLConnection, version: int, triggers: tuple[str, ...]
    ) -> LatestKwargs | None:
        """Every latest kwargs value of ``triggers`` as of ``version``, outside a snapshot
        (``eager_latest``, in a load without a transaction): None if a row is missing or
        newer than ``version`` (the session changed: the caller reads in one snapshot)."""
        wanted = frozenset(triggers)
        values: dict[str, Mapping[str, Any]] = {}
        for row in conn.execute(self._latest_sql.all_versions, {"b_key": self._key}):
            if row.trigger in wanted:
                if int(row.version) > version:
                    return None
                values[row.trigger] = self._latest_value(row.trigger, row.value)
        if len(values) != len(wanted):
            return None
        return LatestKwargs(
            triggers, self._latest_loader(version), source=self.latest_source, values=values
        )

    def _latest_loader(self, version: int) -> Loader:
        """Reads the latest kwargs of one trigger as of ``version`` (its own transaction)."""

        def load(trigger: str) -> Mapping[str, Any]:
            sql = self._latest_sql
            try:
                with self._reader.connect() as conn, conn.begin():
                    params = {"b_key": self._key, "b_trigger": row_key(trigger)}
                    row = conn.execute(sql.one, params).one_or_none()
                    now = None
                    if row is None:
                        now = conn.execute(sql.version, {"b_key": self._key}).scalar()
            except sa_exc.SQLAlchemyError as exc:
                raise self._error(exc, f"loading the latest kwargs of {trigger!r}") from exc
            if row is None and now == version:
                raise SerializationError(
                    f"{self._label} storage, session {self.uid!r}: the header names latest "
                    f"kwargs of {trigger!r}, which are not stored"
                )
            if row is not None and row.trigger != trigger:
                raise SerializationError(
                    f"{self._label} storage, session {self.uid!r}: the latest kwargs row of "
                    f"{trigger!r} names the trigger {row.trigger!r} (the row was left as it is)"
                )
            if row is None or int(row.version) > version:
                raise ConflictError(
                    f"version moved on from {version!r} while the latest kwargs of "
                    f"{trigger!r} were read",
                    backend=self._label,
                    session=self.uid,
                )
            return self._latest_value(trigger, row.value)

        return load

    def _latest_value(self, trigger: str, text: str) -> Mapping[str, Any]:
        what = f"{self._label} storage, session {self.uid!r}: latest kwargs of {trigger!r}"
        return loads(text, what)

    def _latest_rows(
        self, latest: Mapping[str, Mapping[str, Any]], version: int, *, fresh: bool
    ) -> tuple[list[str] | None, list[dict[str, Any]]]:
        """(trigger keys to replace, None for all; the rows to insert) for a write of ``latest``.

        Only the triggers set since the load, when ``latest`` came from this
        storage and the write is not a first one (``fresh``); else every one.
        """
        partial = (
            not fresh and isinstance(latest, LatestKwargs) and latest.source == self.latest_source
        )
        which = sorted(latest.changed if isinstance(latest, LatestKwargs) and partial else latest)
        rows = [
            {
                "session_key": self._key,
                "trigger_key": row_key(trigger),
                "trigger": trigger,
                "version": version,
                "value": dumps(dict(latest[trigger])),
            }
            for trigger in which
        ]
        return ([row_key(trigger) for trigger in which] if partial else None), rows

    def _write_latest(
        self, conn: Connection, replace: list[str] | None, rows: list[dict[str, Any]]
    ) -> None:
        """Replace the rows (in the compare-and-swap transaction, after the version UPDATE)."""
        sql = self._latest_sql
        if replace is None:
            conn.execute(sql.delete_all, {"b_key": self._key})
        else:
            for chunk in chunks(replace):
                conn.execute(sql.delete_some, {"b_key": self._key, "b_triggers": chunk})
        if rows:
            conn.execute(sql.insert, rows)


def _never(trigger: str) -> Mapping[str, Any]:  # pragma: no cover - every value is held
    raise KeyError(trigger)
