"""SQLAlchemy storage: SQLite (the embedded default), PostgreSQL and MySQL/MariaDB.

:class:`SQLAlchemyStorage` keeps one session in five tables per prefix
(default ``triggers_``): one row per session, one per task instance, one per
fire record, one per entry of the store's due index (the leases of running
instances and the scheduled ones a sweeper looks at), and one per trigger's
latest kwargs. An operation reads the header plus the instances its scope
names (and the latest kwargs it needs) and writes the header plus the
instances (and latest kwargs) it changed, in one compare-and-swap transaction that a version
``UPDATE`` serializes; a lost race is a :class:`~triggers_core.errors.ConflictError`.

Every wait for the server is bounded (connect, lock wait, statement; URL
options, see :mod:`triggers_backends.sqlalchemy._timeouts`): a server that stops
answering is a :class:`~triggers_core.errors.StorageError` within the bound.

Tables on a database server are never created behind your back: call
:func:`create_schema` (or pass ``create_schema=True``, or add
``triggers_create_schema=true`` to the URL), or include :data:`metadata` (or
:func:`metadata_for`) in your migrations. A SQLite file opened from a URL is
the application's own, so its tables are created unless the URL says
``triggers_create_schema=false``. Tables of an older layout are upgraded with
:func:`triggers_backends.sqlalchemy_upgrade.upgrade_schema`.

The modules, each importing only those above it:

* :mod:`~triggers_backends.sqlalchemy._tables`: the tables, their columns and
  indexes (the layout), :data:`metadata`, the hashed row keys;
* :mod:`~triggers_backends.sqlalchemy._statements`: the statements a storage
  runs, built once per set of tables;
* :mod:`~triggers_backends.sqlalchemy._timeouts`: the bounds on every wait;
* :mod:`~triggers_backends.sqlalchemy._errors`: what a driver's error means,
  told without secrets;
* :mod:`~triggers_backends.sqlalchemy._engines`: one engine per URL, the
  ``triggers_*`` URL options, SQLite's transactions and ``synchronous`` level;
* :mod:`~triggers_backends.sqlalchemy._schema`: creating and dropping the tables;
* :mod:`~triggers_backends.sqlalchemy._listing`: listing sessions a page at a time;
* :mod:`~triggers_backends.sqlalchemy._base`: the state a storage object holds,
  and its errors;
* :mod:`~triggers_backends.sqlalchemy._due`: leases and the due index (renewals,
  claims, what is due), written by the compare-and-swap;
* :mod:`~triggers_backends.sqlalchemy._reading` (loads, one snapshot) and
  :mod:`~triggers_backends.sqlalchemy._writes` (compare-and-swap, concurrency);
* :mod:`~triggers_backends.sqlalchemy._storage`: :class:`SQLAlchemyStorage`
  itself, opened from an engine or a URL;
* :mod:`~triggers_backends.sqlalchemy._transactional`: fires that commit with
  the caller's transaction (an ORM session, or :func:`transaction` around a
  Core connection; docs/transactions.md);
  :mod:`~triggers_backends.sqlalchemy._async_transactional` its asyncio face
  (an ``AsyncSession``, or :func:`transaction` around an ``AsyncConnection``),
  and :mod:`~triggers_backends.sqlalchemy._blocks` the :func:`transaction` block
  of both.
"""

from __future__ import annotations

from triggers_backends.sqlalchemy._blocks import transaction

# The module-level constants of the one-module version, still importable from here:
from triggers_backends.sqlalchemy._engines import DEFAULT_DRIVERS as DEFAULT_DRIVERS
from triggers_backends.sqlalchemy._engines import SQLITE_BUSY_TIMEOUT_MS as SQLITE_BUSY_TIMEOUT_MS
from triggers_backends.sqlalchemy._engines import (
    SQLITE_SYNCHRONOUS_LEVELS as SQLITE_SYNCHRONOUS_LEVELS,
)
from triggers_backends.sqlalchemy._engines import URL_CREATE_OPTION as URL_CREATE_OPTION
from triggers_backends.sqlalchemy._engines import URL_PREFIX_OPTION as URL_PREFIX_OPTION
from triggers_backends.sqlalchemy._engines import URL_SYNCHRONOUS_OPTION as URL_SYNCHRONOUS_OPTION
from triggers_backends.sqlalchemy._engines import dispose_engines, shared_engine
from triggers_backends.sqlalchemy._listing import list_sessions
from triggers_backends.sqlalchemy._schema import create_schema, drop_schema
from triggers_backends.sqlalchemy._storage import SQLAlchemyStorage
from triggers_backends.sqlalchemy._tables import DEFAULT_TABLE_PREFIX, metadata, metadata_for
from triggers_backends.sqlalchemy._transactional import SQLTransaction

__all__ = [
    "DEFAULT_TABLE_PREFIX",
    "SQLAlchemyStorage",
    "SQLTransaction",
    "create_schema",
    "dispose_engines",
    "drop_schema",
    "list_sessions",
    "metadata",
    "metadata_for",
    "shared_engine",
    "transaction",
]
