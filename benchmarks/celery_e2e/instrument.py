"""Counters of storage round trips, broker round trips and published messages, per process.

Counted on the client side, in every producer and every worker pool process
(the servers are shared with other users of the machine, so their own
counters would mix in other people's commands):

* **Redis** (the Django cache on Redis, and the Redis broker): every call of
  redis-py's ``Connection.send_packed_command`` is one request the client then
  waits for (a pipeline or a Lua script is one); it is counted as a storage or
  a broker round trip by the connection's port and database number, which
  differ between the two.
* **memcached**: every pymemcache ``Client._fetch_cmd`` / ``_store_cmd`` /
  ``_misc_cmd`` call is one request and its reply (``get_many`` and
  ``set_many`` send their keys in one request).
* **PostgreSQL** (SQLAlchemy on psycopg 3): every statement (psycopg's
  ``Cursor.execute`` on a connection of a SQLAlchemy pool, so the statements
  the storage runs on the driver connection directly count too, and a
  ``before_cursor_execute`` listener does not turn that path off), every
  connection ping (the dialect's
  ``do_ping``, which the storage runs on checkout of a pooled connection
  that sat idle), and for every transaction that ran a statement its ``BEGIN``
  and its ``COMMIT`` or ``ROLLBACK`` (psycopg sends ``BEGIN`` as a request of
  its own before the first statement; nothing on an autocommit connection).
* **Published messages**: Celery's ``after_task_publish`` signal (any broker).
* **Storage operations** (not round trips: what the runtime asks of the storage
  port): ``load``/``load_full``, ``compare_and_swap`` and the conflicts it
  raised (another writer was first: the commit loop backs off and starts over),
  and the lease calls; only the outermost call counts when one calls another.
  The round trips made inside each are also counted under ``rt:<operation>``.

Counts are attributed to the measured run whose message (worker) or phase
(producer) was being handled: :func:`begin` / :func:`end` around each task.
What happens outside (connecting, the lease keeper between tasks) is kept
under ``"-"``.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STORAGE = "storage_round_trips"
BROKER = "broker_round_trips"
PUBLISHED = "published"
STATEMENTS = "sql_statements"
TRANSACTIONS = "sql_transactions"
PINGS = "sql_pings"
TASKS = "tasks"
OUTSIDE = "-"
#: Storage port methods counted as ``op:<name>``; ``op:conflict`` counts lost compare-and-swaps.
OPERATIONS = (
    "load",
    "load_full",
    "compare_and_swap",
    "renew_lease",
    "claim_lease",
    "get_lease",
    "due_entries",
    "check_leases",
    "check_fire_keys",
)
CONFLICTS = "op:conflict"
#: The storage class of each kind (its methods are wrapped where they are defined).
STORAGE_CLASSES = {
    "redis": "triggers_backends.django_cache:CacheStorageBackend",
    "memcached": "triggers_backends.memcached:MemcachedStorage",
    "sql": "triggers_backends.sqlalchemy:SQLAlchemyStorage",
}

#: Running totals of this process.
COUNTS: Counter[str] = Counter()
_by_label: dict[str, Counter[str]] = {}
_attributed: Counter[str] = Counter()
_current: tuple[str, Counter[str]] | None = None
_installed: set[str] = set()
_redis_targets: dict[tuple[int, int], str] = {}


def install(counting: Mapping[str, Any]) -> None:
    """Start counting in this process (idempotent per kind).

    ``counting``: ``storage`` is ``"redis"``, ``"memcached"`` or ``"sql"``;
    ``storage_redis`` / ``broker_redis`` are ``[port, db]`` of the Redis
    databases the storage and the broker use (when they are on Redis).
    """
    if counting.get("storage_redis"):
        port, db = counting["storage_redis"]
        _redis_targets[(int(port), int(db))] = STORAGE
    if counting.get("broker_redis"):
        port, db = counting["broker_redis"]
        _redis_targets[(int(port), int(db))] = BROKER
    if _redis_targets:
        _count_redis()
    if counting.get("storage") == "memcached":
        _count_memcached()
    if counting.get("storage") == "sql":
        _count_sql()
    if counting.get("storage") in STORAGE_CLASSES:
        _count_operations(STORAGE_CLASSES[counting["storage"]])
    _count_publishes()


def reset() -> None:
    """Forget every count (a forked pool process starts from zero)."""
    global _current  # noqa: PLW0603 - process-wide counters
    COUNTS.clear()
    _by_label.clear()
    _attributed.clear()
    _current = None


def begin(label: str | None) -> None:
    """Counts from now until :func:`end` belong to ``label`` (None: outside any run)."""
    global _current  # noqa: PLW0603
    _current = (label or OUTSIDE, Counter(COUNTS))


def end(tasks: int = 0) -> None:
    """Attribute what was counted since :func:`begin` (and ``tasks`` tasks) to its label."""
    global _current  # noqa: PLW0603
    if _current is None:
        return
    label, before = _current
    _current = None
    counted = COUNTS - before
    _attributed.update(counted)
    bucket = _by_label.setdefault(label, Counter())
    bucket.update(counted)
    if tasks:
        bucket[TASKS] += tasks


def snapshot() -> dict[str, dict[str, int]]:
    """Counts per label; what was never attributed is under ``"-"``."""
    found = {label: dict(counts) for label, counts in _by_label.items()}
    outside = COUNTS - _attributed
    if outside:
        merged = Counter(found.get(OUTSIDE, {}))
        merged.update(outside)
        found[OUTSIDE] = dict(merged)
    return found


def dump(path: Path, **extra: Any) -> None:
    """Write this process's counts (and ``extra``) as JSON, atomically."""
    data = {"pid": os.getpid(), "counts": snapshot(), **extra}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


# -- the hooks ---------------------------------------------------------------------------


def _count_redis() -> None:
    if "redis" in _installed:
        return
    _installed.add("redis")
    from redis.connection import AbstractConnection  # noqa: PLC0415 - only with Redis

    original = AbstractConnection.send_packed_command

    def send_packed_command(self: Any, command: Any, check_health: bool = True) -> Any:
        which = _redis_targets.get((int(getattr(self, "port", 0) or 0), int(self.db or 0)))
        if which is not None:
            if which == STORAGE:
                _storage_round_trips(1)
            else:
                COUNTS[which] += 1
        return original(self, command, check_health)

    AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]


def _count_memcached() -> None:
    if "memcached" in _installed:
        return
    _installed.add("memcached")
    from pymemcache.client.base import Client  # noqa: PLC0415 - only with memcached

    for name in ("_fetch_cmd", "_store_cmd", "_misc_cmd"):
        original = getattr(Client, name)

        def counted(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            _storage_round_trips(1)
            return _original(self, *args, **kwargs)

        setattr(Client, name, counted)


def _count_sql() -> None:
    if "sql" in _installed:
        return
    _installed.add("sql")
    import weakref  # noqa: PLC0415 - only with SQL storage

    import psycopg  # noqa: PLC0415
    from sqlalchemy import event  # noqa: PLC0415
    from sqlalchemy.engine import Engine  # noqa: PLC0415
    from sqlalchemy.engine.default import DefaultDialect  # noqa: PLC0415
    from sqlalchemy.pool import Pool  # noqa: PLC0415

    # The storage's connections (not the effect rows' own connection of the task bodies).
    pooled: weakref.WeakSet[Any] = weakref.WeakSet()
    # Connections that ran a statement in the transaction they are in (BEGIN went out).
    dirty: weakref.WeakSet[Any] = weakref.WeakSet()

    def connected(dbapi_connection: Any, *_args: Any) -> None:
        pooled.add(dbapi_connection)

    original = psycopg.Cursor.execute

    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        connection = self.connection
        if connection in pooled and not getattr(_inside, "pinging", False):
            _storage_round_trips(1)
            COUNTS[STATEMENTS] += 1
            if not connection.autocommit:
                dirty.add(connection)
        return original(self, *args, **kwargs)

    def end_transaction(conn: Any) -> None:
        dbapi_connection = conn.connection.dbapi_connection
        if dbapi_connection in dirty:  # BEGIN went out before the first statement
            dirty.discard(dbapi_connection)
            _storage_round_trips(2)
            COUNTS[TRANSACTIONS] += 1

    event.listen(Pool, "connect", connected)
    event.listen(Pool, "checkout", connected)  # pooled before the counting began
    psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    event.listen(Engine, "commit", end_transaction)
    event.listen(Engine, "rollback", end_transaction)

    from sqlalchemy.dialects.postgresql._psycopg_common import (  # noqa: PLC0415
        _PGDialect_common_psycopg,
    )

    for dialect in (DefaultDialect, _PGDialect_common_psycopg):  # each defines its own do_ping
        _count_pings(dialect)


def _count_pings(dialect: Any) -> None:
    original = dialect.__dict__["do_ping"]

    def do_ping(self: Any, dbapi_connection: Any) -> bool:
        _storage_round_trips(1)
        COUNTS[PINGS] += 1
        _inside.pinging = True  # its statement is counted as a ping, not a statement
        try:
            return bool(original(self, dbapi_connection))
        finally:
            _inside.pinging = False

    dialect.do_ping = do_ping


_inside = threading.local()


def _storage_round_trips(n: int) -> None:
    """Count ``n`` storage round trips, also under ``rt:<operation>`` inside one."""
    COUNTS[STORAGE] += n
    operation = getattr(_inside, "operation", None)
    if operation is not None:
        COUNTS[f"rt:{operation}"] += n


def _count_operations(where: str) -> None:
    if "operations" in _installed:
        return
    _installed.add("operations")
    import importlib  # noqa: PLC0415

    from triggers_core.errors import ConflictError  # noqa: PLC0415

    module, _, name = where.partition(":")
    storage_class = getattr(importlib.import_module(module), name)
    for operation in OPERATIONS:
        owner = next((k for k in storage_class.__mro__ if operation in k.__dict__), None)
        if owner is None or getattr(owner.__dict__[operation], "_bench_counted", False):
            continue
        original = owner.__dict__[operation]

        def counted(
            self: Any,
            *args: Any,
            _original: Any = original,
            _operation: str = operation,
            **kw: Any,
        ) -> Any:
            if getattr(_inside, "operation", None) is not None:
                return _original(self, *args, **kw)
            COUNTS[f"op:{_operation}"] += 1
            _inside.operation = _operation
            try:
                return _original(self, *args, **kw)
            except ConflictError:
                COUNTS[CONFLICTS] += 1
                raise
            finally:
                _inside.operation = None

        counted._bench_counted = True  # type: ignore[attr-defined]
        setattr(owner, operation, counted)


def _count_publishes() -> None:
    if "publish" in _installed:
        return
    _installed.add("publish")
    from celery.signals import after_task_publish  # noqa: PLC0415

    def published(**_kwargs: Any) -> None:
        COUNTS[PUBLISHED] += 1

    after_task_publish.connect(published, weak=False)
