"""Loads: the header, then the instances a scope names, in one snapshot.

Why this shape: an operation reads the header plus the instances its
:class:`~triggers_core.engine.scopes.Scope` names (by name, or the unstarted ones of
some tasks: the first index) and writes the header plus the instances it
changed, so a fire's cost grows neither with the session's history nor with
the instances waiting for other triggers. The configuration is read only when
its ``config_id`` differs from the one this storage object decoded last (so
the task index is built once per configuration). Inspection reads everything.

The latest kwargs are read only when an operation asks for a value
(:mod:`~triggers_backends.sqlalchemy._latest`), all of them by a full load.

Loads run in one snapshot transaction (REPEATABLE READ on PostgreSQL and
MySQL, a read transaction in WAL mode on SQLite), so the version and the
instances belong to the same point in time. On PostgreSQL a scoped load first
tries without a transaction (no ``BEGIN``/``COMMIT`` round trips), checking in
its last statement that the session did not change since its first
(:meth:`ReadingMixin._read_unlocked`). A keyed fire reads its fire record
by primary key inside the load snapshot; nothing else reads the fire keys table.
"""

from __future__ import annotations

import json
import random
import time
import weakref
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from triggers_backends.sqlalchemy._latest import LatestMixin
from triggers_backends.sqlalchemy._raw import SQLConnection
from triggers_backends.sqlalchemy._statements import MAX_IN, chunks
from triggers_backends.sqlalchemy._tables import row_key
from triggers_backends.sqlalchemy._timeouts import expired_here
from triggers_core.engine.idempotency import FireKey, decode_scheduled
from triggers_core.engine.scopes import HEADER_ONLY, Scope, Selector, known_part
from triggers_core.engine.serialization import (
    check_joined,
    instance_from_json,
    loads,
)
from triggers_core.engine.state import SessionState, TaskInstance, copy_instance
from triggers_core.errors import ConflictError, SerializationError, StorageError
from triggers_core.runtime.config_memo import CONFIGS
from triggers_core.runtime.storage import Snapshot

__all__ = ["ReadingMixin"]

#: Per engine, the table prefixes whose fire keys table was seen to exist.
_FIRE_KEYS_READY: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()


#: Decoded instance documents a storage object keeps (more when one working set is larger).
_DECODED_CACHE = 4096


def _lost_connection(exc: sa_exc.SQLAlchemyError) -> bool:
    """True if ``exc`` is the driver reporting a dead connection (SQLAlchemy dropped it),
    not a call that the watchdog cut short (that one reports its bound)."""
    return (
        isinstance(exc, sa_exc.DBAPIError)
        and bool(exc.connection_invalidated)
        and not expired_here()
    )


class ReadingMixin(LatestMixin):
    """The loads of :class:`~triggers_backends.sqlalchemy.SQLAlchemyStorage`."""

    #: Attempts for a load that hits a transient lock (SQLite checkpoints) before failing.
    read_attempts: ClassVar[int] = 5
    #: Read every latest kwargs value within the load's snapshot instead of on demand
    #: (an async storage runs this code in a greenlet: a value asked for later, outside
    #: it, could not be read).
    eager_latest: ClassVar[bool] = False

    def _pause(self, seconds: float) -> None:
        """Wait before another attempt (an async storage waits without blocking its loop)."""
        time.sleep(seconds)

    def load(self, scope: Scope | Selector = HEADER_ONLY) -> Snapshot:
        return self._read(scope)

    def load_full(self) -> Snapshot:
        return self._read(None)

    def _read(self, scope: Scope | Selector | None) -> Snapshot:
        reconnected = False
        unlocked = scope is not None and self.engine.dialect.name == "postgresql"
        for attempt in range(self.read_attempts):
            try:
                if unlocked:
                    raw = self._raw_autocommit
                    with (raw or self._autocommit).connect() as conn:
                        found = self._read_unlocked(conn, scope)  # type: ignore[arg-type]
                    if found is not None:
                        return found
                    unlocked = False  # the session changed meanwhile: read in one snapshot
                with self._reader.connect() as conn, conn.begin():
                    return self._read_in(conn, scope)
            except sa_exc.SQLAlchemyError as exc:
                if _lost_connection(exc) and not reconnected:
                    # A pooled connection that died while idle (it was not pinged:
                    # see PING_AFTER_IDLE); a read is safe to run again, once, on a new one.
                    reconnected = True
                    continue
                error = self._error(exc, "load")
                if isinstance(error, ConflictError) and attempt + 1 < self.read_attempts:
                    self._pause(random.uniform(0, 0.01 * 2**attempt))
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
        header, triggers = self._decode_header(head.uid, head.config_id, head.config, head.header)
        latest = self._latest_mapping(
            conn,
            int(head.version),
            triggers,
            header.latest_kwargs,
            full=scope is None or self.eager_latest,
        )
        header = attrs.evolve(header, latest_kwargs=latest)
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

    def _read_unlocked(self, conn: SQLConnection, scope: Scope | Selector) -> Snapshot | None:
        """A scoped load without a transaction (PostgreSQL): 2-3 round trips instead of 4-5.

        The header, then (for a keyed operation) the fire records, then the
        instances, each statement in its own snapshot; the instances' statement
        carries the session row's ``version`` and ``config_id`` as of its own
        snapshot. Every write to a session's instances or fire records updates
        its row's version in the same transaction, versions only grow, and a
        session created again gets a new ``config_id``; so if both are still
        what the header said, nothing was committed to the session between the
        first statement and the last, and the three read one state, as one
        snapshot would. Otherwise (or for a scope too large for one statement)
        None: the caller reads in one snapshot transaction.

        What the scope names whatever the header says (its
        :func:`~triggers_core.engine.scopes.known_part`: instances by name, fire
        records) comes with the header, in its statement; when that is all the
        scope needs (a fixed scope, a guarded finish whose cascade needs no other
        instance), the load is that one statement.
        """
        cached = self._config
        params: dict[str, Any] = {
            "b_key": self._key,
            "b_config_id": "" if cached is None else cached[0],
        }
        part = known_part(scope)
        known = part.names if part is not None else frozenset()
        keys = part.fire_keys if part is not None else frozenset()
        named: list[Any] | None = None
        early: dict[FireKey, tuple[str, ...]] = {}
        head: Any
        if (known or keys) and len(known) <= MAX_IN and len(keys) <= MAX_IN:
            # The instances and fire records the scope names whatever the header says
            # come with it.
            params["b_names"] = sorted({row_key(n) for n in known})
            if keys:
                by_hash = {key.digest: key for key in keys}
                params["b_hashes"] = sorted(by_hash)
                found = list(conn.execute(self._sql.head_named_records, params))
                stored = [(r.key_hash, r.doc) for r in found if r.key_hash is not None]
                early = self._decoded_records(by_hash, stored)
                found = [r for r in found if r.key_hash is None]
            else:
                found = list(conn.execute(self._sql.head_named, params))
            head = found[0] if found else None
            named = [row for row in found if row.name is not None]
        else:
            head = conn.execute(self._sql.head, params).one_or_none()
        if head is None:
            return Snapshot(SessionState(), None)  # one statement: no session at its snapshot
        header, triggers = self._decode_header(head.uid, head.config_id, head.config, head.header)
        eager = self.eager_latest and bool(triggers)
        if eager:  # all of them now; the instances' statement below checks the version
            found_latest = self._latest_unlocked(conn, int(head.version), triggers or ())
            if found_latest is None:
                return None
            latest = found_latest
        else:
            # A scoped load: the latest kwargs are read later, one trigger at a time, if asked.
            latest = self._latest_mapping(
                conn, int(head.version), triggers, header.latest_kwargs, full=False
            )
        header = attrs.evolve(header, latest_kwargs=latest)
        chosen = scope if isinstance(scope, Scope) else scope(header)
        if (
            not eager
            and named is not None
            and chosen.names <= known
            and chosen.fire_keys <= keys
            and not (chosen.unstarted_of or chosen.unresolved)
        ):
            # Everything came in that one statement (one snapshot): one round trip (a
            # guarded finish whose cascade needs no other instance, too).
            wanted = [row for row in named if row.name in chosen.names]
            instances = self._decode_instances(wanted, cache=True)
            where = f"{self._label} storage, session {self.uid!r}"
            check_joined(header.tasks, header.counters, instances.values(), where)
            state = attrs.evolve(header, instances=instances)
            if chosen.fire_keys:
                records = {k: v for k, v in early.items() if k in chosen.fire_keys}
                state = attrs.evolve(state, fire_records=records)
            return Snapshot(state, int(head.version))
        names = sorted({row_key(n) for n in chosen.names})
        tasks = sorted({row_key(t) for t in chosen.unstarted_of})
        if len(names) + len(tasks) > MAX_IN or len(chosen.fire_keys) > MAX_IN:
            return None
        # The fire records come in the instances' statement (one snapshot, whose
        # session version the instance rows carry): a guarded finish reads in two
        # statements, not three.
        keyed = {key.digest: key for key in chosen.fire_keys}
        statement = self._sql.rows_at_version(
            names=bool(names), tasks=bool(tasks), unresolved=chosen.unresolved, records=bool(keyed)
        )
        params = {"b_key": self._key, "b_names": names, "b_tasks": tasks}
        if keyed:
            params["b_hashes"] = sorted(keyed)
        rows = list(conn.execute(statement, params))
        found_records: list[tuple[str, str]] = []
        if keyed:
            found_records = [(r.key_hash, r.doc) for r in rows if r.key_hash is not None]
            rows = [r for r in rows if r.key_hash is None]
        if not rows or any(
            r.session_version != head.version or r.session_config_id != head.config_id for r in rows
        ):
            return None
        records = self._decoded_records(keyed, found_records) if keyed else {}
        instances = self._decode_instances([r for r in rows if r.name is not None], cache=True)
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
        rows: list[Any] = []
        for chunk in chunks(sorted(by_hash)):
            params = {"b_key": self._key, "b_hashes": chunk}
            rows += conn.execute(self._sql.fire_records, params)
        return self._decoded_records(by_hash, [(r.key_hash, r.scheduled) for r in rows])

    def _decoded_records(
        self, by_hash: dict[str, FireKey], rows: Sequence[Any]
    ) -> dict[FireKey, tuple[str, ...]]:
        """``(key_hash, scheduled)`` rows of fire records, decoded, by their key."""
        found: dict[FireKey, tuple[str, ...]] = {}
        for key_hash, scheduled in rows:
            key = by_hash[key_hash]
            what = f"{self._label} storage, session {self.uid!r}: fire record of {key!r}"
            try:
                names = json.loads(scheduled)
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
        names = sorted({row_key(n) for n in scope.names})
        tasks = sorted({row_key(t) for t in scope.unstarted_of})
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
    ) -> tuple[SessionState, tuple[str, ...] | None]:
        """The header's state, and the triggers whose latest kwargs are in the latest table
        (None: an older header holding them, in the state)."""
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
                tasks = CONFIGS.from_text(config or "", "configuration")
                self._config = (config_id, tasks)
            return self._codec.decode_split(header, tasks)
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
