"""The tables of the SQLAlchemy storage: their layout, :data:`metadata`, row keys.

Layout (five tables per prefix, default ``triggers_``):

* ``{prefix}sessions``: one row per session: ``session_key`` (SHA-256 of the
  UID, so any UID fits a fixed-width, collation-proof primary key), ``uid``
  (the full UID), ``version``, ``config`` (the tasks as JSON text, rewritten
  only when they change), ``config_id`` (a random id, new whenever ``config``
  changes), ``header`` (counters, unsettled instances, settled triggers and
  the names of the triggers that have latest kwargs, as JSON text) and
  ``updated_at``; an index on ``uid``
  (listing sessions by a UID prefix).
* ``{prefix}instances``: one row per task instance: ``(session_key,
  name_key)`` primary key (``name_key`` hashes the instance name for the same
  reason), ``name``, ``task_key`` (SHA-256 of the task name), ``status``,
  ``resolved``, ``doc`` (JSON text), ``updated_at``; indexes on
  ``(session_key, status, task_key)``, ``(session_key, resolved)`` and
  ``(status, session_key)`` (the last one serves listing sessions by the
  status of their instances, :meth:`SQLAlchemyStorage.list_sessions`).
* ``{prefix}fire_keys``: one row per fire record (idempotency key, see
  :mod:`triggers_core.engine.idempotency`): ``(session_key, key_hash)`` primary key
  (``key_hash`` is the record's SHA-256 digest; the key itself is not
  stored), ``trigger_name``, ``scheduled`` (JSON list of the instance names
  the first fire scheduled) and ``created_at``. A keyed fire reads its record
  by primary key inside the load snapshot and inserts it inside the
  compare-and-swap transaction; nothing else reads the table, so the number of
  records a session holds costs nothing. Operations without a key never touch
  it: tables created before it existed keep working for them, while a keyed
  fire raises :class:`~triggers_core.errors.SchemaMissingError` saying how to
  add it (``create_schema`` or ``upgrade_schema``), and a finish that would
  record its cascade (a Celery worker's) runs unguarded, with a warning.
* ``{prefix}due``: the due index of the whole store (see
  :mod:`triggers_core.engine.leases` and
  :mod:`triggers_backends.sqlalchemy._due`): one row per ``scheduled``
  instance and per ``running`` instance under a lease, ``(session_key,
  name_key)`` primary key, ``uid``, ``name``, ``kind`` (``dispatch`` or
  ``lease``), ``due_at`` (integer microseconds since 1970-01-01 UTC), ``owner``
  (the run holding the lease), ``claimed`` (a sweeper took the lease); an
  index on ``(kind, due_at)`` answers a sweep. Tables created before it
  existed work without it: instances then run without leases.
* ``{prefix}latest``: the latest kwargs of each trigger of a session, one row
  each: ``(session_key, trigger_key)`` primary key (``trigger_key`` hashes the
  trigger), ``trigger``, ``version`` (the session version that wrote the row)
  and ``value`` (JSON text). An operation writes only the rows of the triggers
  it fired, in its compare-and-swap transaction, and reads a row only when it
  needs that value (see :mod:`triggers_backends.sqlalchemy._latest`), so a
  large payload costs later operations nothing. Headers written before it
  existed (or while a process found it missing) hold the latest kwargs
  themselves (``latestKwargs``); they load as they are and move to the table
  on their next write.
"""

from __future__ import annotations

import hashlib
import threading

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

__all__ = [
    "DEFAULT_TABLE_PREFIX",
    "Document",
    "Tables",
    "metadata",
    "metadata_for",
    "row_key",
    "tables_for",
]

#: Table name prefix used unless told otherwise.
DEFAULT_TABLE_PREFIX = "triggers_"

# Long JSON documents: MySQL's TEXT stops at 64 KiB, so use LONGTEXT there.
Document = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


@attrs.frozen
class Tables:
    """The tables of one prefix, and the :class:`~sqlalchemy.MetaData` holding them."""

    metadata: sa.MetaData
    sessions: sa.Table
    instances: sa.Table
    fire_keys: sa.Table
    due: sa.Table
    latest: sa.Table


def _define(meta: sa.MetaData, prefix: str) -> Tables:
    sessions = sa.Table(
        f"{prefix}sessions",
        meta,
        # utf8mb4 on MySQL/MariaDB whatever the database default; keys are hex digests,
        # so case-insensitive or PAD SPACE collations cannot merge two UIDs or names.
        sa.Column("session_key", sa.String(64), primary_key=True, comment="sha256(uid), hex"),
        sa.Column("uid", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("config", Document, nullable=False, comment="the tasks (JSON)"),
        sa.Column("config_id", sa.String(32), nullable=False, comment="new when config changes"),
        sa.Column("header", Document, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        # Listing sessions by a UID prefix: a range in code-point order (PostgreSQL's
        # pattern operators, whatever the collation; MySQL indexes the first 255 characters).
        sa.Index(
            f"{prefix}sessions_by_uid",
            "uid",
            mysql_length=255,
            postgresql_ops={"uid": "text_pattern_ops"},
        ),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    instances = sa.Table(
        f"{prefix}instances",
        meta,
        sa.Column("session_key", sa.String(64), primary_key=True),
        sa.Column("name_key", sa.String(64), primary_key=True, comment="sha256(name), hex"),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("task_key", sa.String(64), nullable=False, comment="sha256(task name), hex"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("resolved", sa.Boolean(), nullable=False),
        sa.Column("doc", Document, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        # status before task_key: it serves "unstarted of these tasks" and "all unstarted".
        sa.Index(f"{prefix}instances_by_status", "session_key", "status", "task_key"),
        sa.Index(f"{prefix}instances_unresolved", "session_key", "resolved"),
        # Listing sessions across the store by the status of their instances.
        sa.Index(f"{prefix}instances_by_status_session", "status", "session_key"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    fire_keys = sa.Table(
        f"{prefix}fire_keys",
        meta,
        sa.Column("session_key", sa.String(64), primary_key=True),
        sa.Column(
            "key_hash", sa.String(64), primary_key=True, comment="sha256(trigger NUL key), hex"
        ),
        sa.Column("trigger_name", sa.Text(), nullable=False),
        sa.Column(
            "scheduled", Document, nullable=False, comment="names the first fire scheduled (JSON)"
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    due = sa.Table(
        f"{prefix}due",
        meta,
        sa.Column("session_key", sa.String(64), primary_key=True),
        sa.Column("name_key", sa.String(64), primary_key=True),
        sa.Column("uid", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False, comment="dispatch or lease"),
        # An integer, not a timestamp type: MySQL's DATETIME and SQLite drop the
        # offset (and TIMESTAMP converts by the connection's time zone), while an
        # integer sorts, compares and round-trips exactly on every database.
        sa.Column(
            "due_at", sa.BigInteger(), nullable=False, comment="microseconds since 1970, UTC"
        ),
        sa.Column("owner", sa.Text(), nullable=True, comment="lease: the run holding it"),
        sa.Column("claimed", sa.Boolean(), nullable=False, comment="lease: a sweeper took it"),
        sa.Index(f"{prefix}due_by_time", "kind", "due_at"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    latest = sa.Table(
        f"{prefix}latest",
        meta,
        sa.Column("session_key", sa.String(64), primary_key=True),
        sa.Column("trigger_key", sa.String(64), primary_key=True, comment="sha256(trigger), hex"),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False, comment="session version written"),
        sa.Column("value", Document, nullable=False, comment="the latest kwargs (JSON)"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    return Tables(meta, sessions, instances, fire_keys, due, latest)


#: The tables for the default prefix; use as (part of) Alembic's ``target_metadata``.
metadata = sa.MetaData()
_TABLES: dict[str, Tables] = {DEFAULT_TABLE_PREFIX: _define(metadata, DEFAULT_TABLE_PREFIX)}
_TABLES_LOCK = threading.Lock()


def tables_for(prefix: str) -> Tables:
    """The tables for ``prefix``, defined once per prefix (ValueError for a bad prefix)."""
    if not prefix or not prefix.replace("_", "a").isalnum() or not prefix.isascii():
        raise ValueError(f"table_prefix must be ASCII letters, digits and '_', got {prefix!r}")
    with _TABLES_LOCK:
        found = _TABLES.get(prefix)
        if found is None:
            found = _TABLES[prefix] = _define(sa.MetaData(), prefix)
        return found


def metadata_for(table_prefix: str = DEFAULT_TABLE_PREFIX) -> sa.MetaData:
    """The :class:`~sqlalchemy.MetaData` holding the tables for ``table_prefix``."""
    return tables_for(table_prefix).metadata


def row_key(text: str) -> str:
    """The SHA-256 of ``text``, hex: a fixed-width, collation-proof key for a UID or a name."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
