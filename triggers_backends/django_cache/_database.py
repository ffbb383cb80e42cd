"""Key-value adapter for Django's ``DatabaseCache`` (SQLite and PostgreSQL).

We use the cache's table (``createcachetable`` makes it: ``cache_key`` primary
key, ``value`` text, ``expires`` timestamp) through Django's connection for the
database the router picks for writing that table (every call, reads included,
goes there: a replica could be behind). Statements:

* ``cas``: ``UPDATE ... SET value = new WHERE cache_key = k AND value = old AND
  expires >= now``. The token is the text read by :meth:`gets`. One statement in
  autocommit mode; PostgreSQL re-checks the ``WHERE`` clause against the committed
  row after waiting for a concurrent writer's row lock, SQLite runs one writer at a
  time, so exactly one of several racing writers updates the row.
* ``add``: ``INSERT``; on a primary-key conflict, ``UPDATE`` the row only if it has
  expired (as Django's own ``add`` does).
* ``set_many``: one transaction of ``UPDATE``-else-``INSERT`` per key.

Values are ``triggers-kv01:`` followed by the base64 of our bytes: text the column
accepts, never pickle. The marker contributes twelve base64 characters, so Django's
own ``cache.get`` on one of our keys base64-decodes to a first byte (``0xb6``) that
is no pickle opcode and fails at once instead of unpickling anything.

Refused: use inside ``transaction.atomic()`` on the cache's database (the write
would commit only with the surrounding transaction, after the tasks it schedules
were already sent, and its row lock would block every other writer until then;
route the cache table to a database alias of its own), and database vendors other
than SQLite and PostgreSQL (MySQL's default collations compare text
case-insensitively, which base64 cannot afford).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connections, router, transaction
from django.utils import timezone

from triggers_backends.django_cache._common import (
    AdapterOptions,
    UnsupportedCacheError,
    check_sizes,
    chunked,
    class_path,
)
from triggers_backends.kv_client import CasToken, KeyValueError, KeyValueUnavailable

__all__ = ["DatabaseKeyValueClient", "for_database_cache"]

#: Written before the base64 of every value (see the module docstring).
MARKER = "triggers-kv01:"
#: The ``cache_key`` column's width in ``createcachetable``.
MAX_CACHE_KEY_LENGTH = 255
SUPPORTED_VENDORS = frozenset({"sqlite", "postgresql"})
_BATCH = 200


class DatabaseKeyValueClient:
    """A :class:`~triggers_backends.kv_client.KeyValueClient` on one ``DatabaseCache`` table."""

    #: Every process that opens the same database sees the same rows.
    shared_across_processes = True

    def __init__(self, cache: Any, options: AdapterOptions) -> None:
        self._cache = cache
        self._options = options
        self.max_value_size = options.max_value_size
        self.db = router.db_for_write(cache.cache_model_class)
        vendor = connections[self.db].vendor
        if vendor not in SUPPORTED_VENDORS:
            raise UnsupportedCacheError(
                class_path(type(cache)),
                f"its database {self.db!r} is {vendor}; the conditional writes are built "
                f"and tested for {' and '.join(sorted(SUPPORTED_VENDORS))} only",
                alias=options.alias,
            )
        self.backend_name = f"django-cache/database({vendor})"
        self.table = cache._table

    def __repr__(self) -> str:
        return (
            f"<DatabaseKeyValueClient alias={self._options.alias!r} db={self.db!r} "
            f"table={self.table!r}>"
        )

    # -- helpers ----------------------------------------------------------------------

    def _key(self, key: str) -> str:
        mapped: str = self._cache.make_key(key)
        if len(mapped) > MAX_CACHE_KEY_LENGTH:
            raise KeyValueError(
                f"{self.backend_name}: cache key {mapped!r} is longer than the "
                f"{MAX_CACHE_KEY_LENGTH} characters the cache table holds (shorten KEY_PREFIX)"
            )
        return mapped

    def _encode(self, value: bytes) -> str:
        return MARKER + base64.b64encode(value).decode("ascii")

    def _decode(self, text: str, key: str) -> bytes:
        if not isinstance(text, str) or not text.startswith(MARKER):
            raise KeyValueError(
                f"{self.backend_name}: key {key!r} holds a value Triggers did not write "
                "(another program uses the same cache keys?)"
            )
        try:
            return base64.b64decode(text[len(MARKER) :].encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise KeyValueError(f"{self.backend_name}: key {key!r}: damaged value") from exc

    def _expires(self, connection: Any) -> Any:
        timeout = self._options.timeout
        if timeout is None:
            expires = datetime.max
        else:
            # As Django's DatabaseCache computes it, so its own culling reads it alike.
            stamp = timezone.now().timestamp() + timeout
            expires = datetime.fromtimestamp(stamp, tz=UTC if settings.USE_TZ else None)
        return connection.ops.adapt_datetimefield_value(expires.replace(microsecond=0))

    def _now(self, connection: Any) -> Any:
        return connection.ops.adapt_datetimefield_value(timezone.now())

    @contextmanager
    def _cursor(self, action: str) -> Iterator[tuple[Any, Any, Any]]:
        """(connection, cursor, quote) on the cache's database, errors translated."""
        connection = connections[self.db]
        if connection.in_atomic_block:
            raise KeyValueError(
                f"{self.backend_name}: {action} called inside transaction.atomic() on "
                f"database {self.db!r}; a Triggers write must commit on its own (route the "
                "cache table to a database alias of its own, see docs/storage.md)"
            )
        try:
            with connection.cursor() as cursor:
                yield connection, cursor, connection.ops.quote_name
        except KeyValueError:
            raise
        except DatabaseError as exc:
            raise KeyValueUnavailable(
                f"{self.backend_name}: {action} on table {self.table!r} of database "
                f"{self.db!r} failed: {type(exc).__name__}: {exc}"
            ) from exc

    # -- the client -------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        mapped = {self._key(k): k for k in keys}
        found: dict[str, bytes] = {}
        with self._cursor("get_many") as (connection, cursor, q):
            now = self._now(connection)
            for batch in chunked(list(mapped), _BATCH):
                cursor.execute(
                    f"SELECT {q('cache_key')}, {q('value')} FROM {q(self.table)} "
                    f"WHERE {q('cache_key')} IN ({', '.join(['%s'] * len(batch))}) "
                    f"AND {q('expires')} >= %s",
                    [*batch, now],
                )
                for cache_key, text in cursor.fetchall():
                    key = mapped[cache_key]
                    found[key] = self._decode(connection.ops.process_clob(text), key)
        return found

    def gets(self, key: str) -> tuple[bytes, CasToken] | None:
        with self._cursor("gets") as (connection, cursor, q):
            cursor.execute(
                f"SELECT {q('value')} FROM {q(self.table)} "
                f"WHERE {q('cache_key')} = %s AND {q('expires')} >= %s",
                [self._key(key), self._now(connection)],
            )
            row = cursor.fetchone()
        if row is None:
            return None
        text = connection.ops.process_clob(row[0])
        return self._decode(text, key), text

    def add(self, key: str, value: bytes) -> bool:
        check_sizes([value], self.max_value_size, self.backend_name)
        mapped, text = self._key(key), self._encode(bytes(value))
        with self._cursor("add") as (connection, cursor, q):
            expires = self._expires(connection)
            try:
                with transaction.atomic(using=self.db):
                    cursor.execute(
                        f"INSERT INTO {q(self.table)} "
                        f"({q('cache_key')}, {q('value')}, {q('expires')}) VALUES (%s, %s, %s)",
                        [mapped, text, expires],
                    )
            except IntegrityError:
                # The key exists; take it over only if it has expired.
                cursor.execute(
                    f"UPDATE {q(self.table)} SET {q('value')} = %s, {q('expires')} = %s "
                    f"WHERE {q('cache_key')} = %s AND {q('expires')} < %s",
                    [text, expires, mapped, self._now(connection)],
                )
                return bool(cursor.rowcount == 1)
        return True

    def cas(self, key: str, value: bytes, token: CasToken) -> bool:
        check_sizes([value], self.max_value_size, self.backend_name)
        if not isinstance(token, str):
            raise TypeError(f"{self.backend_name}: not a token from gets(): {token!r}")
        mapped, text = self._key(key), self._encode(bytes(value))
        with self._cursor("cas") as (connection, cursor, q):
            cursor.execute(
                f"UPDATE {q(self.table)} SET {q('value')} = %s, {q('expires')} = %s "
                f"WHERE {q('cache_key')} = %s AND {q('value')} = %s AND {q('expires')} >= %s",
                [text, self._expires(connection), mapped, token, self._now(connection)],
            )
            return bool(cursor.rowcount == 1)

    def set_many(self, items: Mapping[str, bytes]) -> None:
        check_sizes(items.values(), self.max_value_size, self.backend_name)
        rows = [(self._key(k), self._encode(bytes(v))) for k, v in items.items()]
        if not rows:
            return
        with self._cursor("set_many") as (connection, cursor, q):
            expires = self._expires(connection)
            update = (
                f"UPDATE {q(self.table)} SET {q('value')} = %s, {q('expires')} = %s "
                f"WHERE {q('cache_key')} = %s"
            )
            insert = (
                f"INSERT INTO {q(self.table)} ({q('cache_key')}, {q('value')}, {q('expires')}) "
                "VALUES (%s, %s, %s)"
            )
            with transaction.atomic(using=self.db):
                for mapped, text in rows:
                    cursor.execute(update, [text, expires, mapped])
                    if cursor.rowcount == 1:
                        continue
                    try:
                        with transaction.atomic(using=self.db):
                            cursor.execute(insert, [mapped, text, expires])
                    except IntegrityError:
                        # Inserted by someone else since our UPDATE: overwrite it.
                        cursor.execute(update, [text, expires, mapped])

    def delete_many(self, keys: Sequence[str]) -> None:
        mapped = [self._key(k) for k in keys]
        if not mapped:
            return
        with self._cursor("delete_many") as (_connection, cursor, q):
            for batch in chunked(mapped, _BATCH):
                cursor.execute(
                    f"DELETE FROM {q(self.table)} "
                    f"WHERE {q('cache_key')} IN ({', '.join(['%s'] * len(batch))})",
                    list(batch),
                )

    def close(self) -> None:
        """Close the calling thread's connection to the cache's database.

        Django opens one connection per thread and closes it at the end of a
        request; a thread of your own that used this client should call this before
        it ends. Does nothing inside ``transaction.atomic()`` (Django reopens the
        connection on the next use).
        """
        connection = connections[self.db]
        if not connection.in_atomic_block:
            connection.close()


def for_database_cache(cache: Any, options: AdapterOptions) -> DatabaseKeyValueClient:
    """Adapter for ``django.core.cache.backends.db.DatabaseCache``."""
    return DatabaseKeyValueClient(cache, options)
