"""Listing the sessions in the SQL tables, a page at a time (:mod:`triggers_core.tools.listing`).

A page is one query on the sessions table in primary-key order (the SHA-256
``session_key``, so the order is stable but not alphabetical), starting after
the cursor (the last ``session_key`` of the previous page). Each filter adds
``session_key IN (SELECT session_key FROM instances WHERE status IN (...))``,
which the ``(status, session_key)`` index answers without reading any
session's other instances, so a filter that matches few sessions is cheap
however many sessions the store holds. A UID prefix is a range on the
``sessions_by_uid`` index (see :func:`_prefix_condition`). Staleness depends on the time an
instance entered its status, which lives in its document: the scheduled and
running instances of the candidate sessions are read and checked (there are
few: work in flight, and what is stuck).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from triggers_backends.sqlalchemy._engines import prepare_engine
from triggers_backends.sqlalchemy._errors import describe, is_missing_table, public_url
from triggers_backends.sqlalchemy._statements import chunks
from triggers_backends.sqlalchemy._tables import DEFAULT_TABLE_PREFIX, Tables, tables_for
from triggers_core.engine.serialization import instance_from_json, loads
from triggers_core.errors import SchemaMissingError, StorageError
from triggers_core.runtime.sessions import (
    DEFAULT_PAGE_SIZE,
    STALE_STATUSES,
    SessionFilter,
    SessionPage,
    check_page_size,
    is_stale,
    prefix_upper_bound,
)

__all__ = ["check_cursor", "list_page", "list_sessions"]

_CURSOR = re.compile(r"[0-9a-f]{64}")


def check_cursor(cursor: object) -> str:
    """A cursor of this backend (a session key), or ValueError; None means the start."""
    if cursor is None:
        return ""
    if not isinstance(cursor, str) or _CURSOR.fullmatch(cursor) is None:
        raise ValueError(
            f"not a cursor of a SQL store: {cursor!r} (pass the cursor of a previous page)"
        )
    return cursor


def _prefix_condition(uid: Any, prefix: str, dialect: str) -> Any:
    """``uid`` starts with ``prefix``, as a range the ``sessions_by_uid`` index answers.

    Code-point order is UTF-8's byte order: SQLite compares text that way, and
    PostgreSQL's ``~>=~``/``~<~`` operators (of the ``text_pattern_ops`` index)
    do whatever the database's collation. MySQL's binary collation pads with
    spaces (so ``'a\x01' < 'a'``, and the range misses it) and MariaDB's index
    range for a ``LIKE`` whose prefix holds U+10FFFF misses some rows: there the
    union of both, two index ranges. The caller checks each UID again.
    """
    bound = prefix_upper_bound(prefix)
    if dialect == "postgresql":
        condition = uid.op("~>=~")(prefix)
        return condition if bound is None else sa.and_(condition, uid.op("~<~")(bound))
    between = uid >= prefix if bound is None else sa.and_(uid >= prefix, uid < bound)
    if dialect in ("mysql", "mariadb"):
        escaped = prefix.replace("!", "!!").replace("%", "!%").replace("_", "!_")
        return sa.or_(uid.like(escaped + "%", escape="!"), between)
    return between


def _candidates(tables: Tables, filter: SessionFilter, after: str, limit: int, dialect: str) -> Any:
    sessions, instances = tables.sessions, tables.instances
    query = sa.select(sessions.c.session_key, sessions.c.uid).where(sessions.c.session_key > after)
    if filter.uid_prefix:
        query = query.where(_prefix_condition(sessions.c.uid, filter.uid_prefix, dialect))
    for statuses in filter.statuses:
        having = sa.select(instances.c.session_key).where(
            instances.c.status.in_(sorted(s.value for s in statuses))
        )
        query = query.where(sessions.c.session_key.in_(having))
    return query.order_by(sessions.c.session_key).limit(limit)


def _stale_sessions(
    conn: Connection, tables: Tables, filter: SessionFilter, keys: Sequence[str]
) -> set[str]:
    """The session keys among ``keys`` with an instance stale by ``filter``."""
    instances = tables.instances
    older_than, now = filter.stale_after, filter.now
    assert older_than is not None
    assert now is not None
    found: set[str] = set()
    for chunk in chunks(list(keys)):
        rows = conn.execute(
            sa.select(instances.c.session_key, instances.c.name, instances.c.doc)
            .where(instances.c.session_key.in_(chunk))
            .where(instances.c.status.in_(sorted(s.value for s in STALE_STATUSES)))
        )
        for key, name, doc in rows:
            if key in found:
                continue
            instance = instance_from_json(loads(doc, f"instance {name!r}"), f"instance {name!r}")
            if is_stale(instance, older_than, now=now):
                found.add(key)
    return found


def list_page(
    conn: Connection,
    tables: Tables,
    filter: SessionFilter,
    *,
    page_size: int,
    cursor: str | None,
) -> SessionPage:
    """One page of session UIDs (``page_size`` already checked)."""
    after = check_cursor(cursor)
    batch = page_size + 1  # one more than a page: is there a next page?
    found: list[tuple[str, str]] = []
    while len(found) < batch:
        query = _candidates(tables, filter, after, batch, conn.dialect.name)
        rows = conn.execute(query).all()
        if not rows:
            break
        keys = [row.session_key for row in rows]
        wanted = [row for row in rows if filter.wants_uid(row.uid)]
        if filter.stale_after is not None:
            stale = _stale_sessions(conn, tables, filter, [row.session_key for row in wanted])
            found.extend((row.session_key, row.uid) for row in wanted if row.session_key in stale)
        else:
            found.extend((row.session_key, row.uid) for row in wanted)
        if len(rows) < batch:
            break
        after = keys[-1]
    if len(found) > page_size:
        return SessionPage(tuple(uid for _, uid in found[:page_size]), found[page_size - 1][0])
    return SessionPage(tuple(uid for _, uid in found), None)


def list_sessions(
    engine: Engine,
    filter: SessionFilter | None = None,
    *,
    table_prefix: str = DEFAULT_TABLE_PREFIX,
    page_size: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> SessionPage:
    """One page of the UIDs of the sessions in the tables for ``table_prefix``.

    See :mod:`triggers_core.tools.listing` for the filters and the module docstring
    for the queries (indexed: a filter that matches few sessions reads little).
    Raises :class:`~triggers_core.errors.SchemaMissingError` if the tables do
    not exist, :class:`~triggers_core.errors.StorageError` if the database
    fails, ``ValueError`` for a bad page size or a cursor of another store.
    """
    filter = filter or SessionFilter()
    page_size = check_page_size(page_size)
    check_cursor(cursor)
    prepare_engine(engine)
    tables = tables_for(table_prefix)
    label = f"sqlalchemy/{engine.dialect.name}"
    reader = engine
    if engine.dialect.name in ("postgresql", "mysql", "mariadb"):
        reader = engine.execution_options(isolation_level="REPEATABLE READ")
    try:
        with reader.connect() as conn, conn.begin():
            return list_page(conn, tables, filter, page_size=page_size, cursor=cursor)
    except sa_exc.SQLAlchemyError as exc:
        where = public_url(engine.url)
        if is_missing_table(exc):
            error: StorageError = SchemaMissingError(
                f"tables {tables.sessions.name!r}/{tables.instances.name!r} do not exist in "
                f"{where}; nothing to list",
                backend=label,
                session="(listing)",
            )
        else:
            error = StorageError(
                f"listing sessions failed on {where}: {describe(exc, engine.url)}",
                backend=label,
                session="(listing)",
            )
    # raised outside the except block: the driver's error is not chained to it
    raise error
