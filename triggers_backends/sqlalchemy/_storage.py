"""``SQLAlchemyStorage``: opening one session's storage from an engine or a URL.

The storage's layout is in :mod:`~triggers_backends.sqlalchemy._tables`, its
loads in :mod:`~triggers_backends.sqlalchemy._reading`, its compare-and-swap
in :mod:`~triggers_backends.sqlalchemy._writes`; this module puts them together
and reads the ``triggers_*`` URL options.
"""

from __future__ import annotations

import os
from typing import ClassVar

import attrs
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine

from triggers_backends.sqlalchemy._engines import (
    URL_CREATE_OPTION,
    URL_PREFIX_OPTION,
    URL_SYNCHRONOUS_OPTION,
    parse_url,
    prepare_engine,
    query_value,
    shared_engine,
    synchronous_level,
    with_options,
)
from triggers_backends.sqlalchemy._errors import describe, public_url
from triggers_backends.sqlalchemy._listing import list_sessions
from triggers_backends.sqlalchemy._reading import ReadingMixin
from triggers_backends.sqlalchemy._schema import ensure_schema
from triggers_backends.sqlalchemy._statements import statements_for
from triggers_backends.sqlalchemy._tables import DEFAULT_TABLE_PREFIX, row_key, tables_for
from triggers_backends.sqlalchemy._timeouts import Timeouts, timeouts_of
from triggers_backends.sqlalchemy._transactional import bind
from triggers_backends.sqlalchemy._writes import WritingMixin
from triggers_core.engine.serialization import HeaderCodec
from triggers_core.engine.sizes import (
    DEFAULT_MAX_VALUE_BYTES,
    check_value_limit,
    parse_value_limit,
)
from triggers_core.errors import RegistryError, StorageError
from triggers_core.runtime.registry import install_hint
from triggers_core.runtime.sessions import SessionFilter, SessionPage
from triggers_core.runtime.transactional import CallerTransaction

__all__ = [
    "URL_MAX_VALUE_OPTION",
    "SQLAlchemyStorage",
    "UrlOptions",
    "storage_reference",
    "store_identity_of",
    "url_options",
]

#: The URL option setting :attr:`~triggers_core.Storage.max_value_bytes` (docs/limits.md).
URL_MAX_VALUE_OPTION = "triggers_max_value_bytes"


@attrs.frozen
class UrlOptions:
    """A storage URL's ``triggers_*`` options (but the timeouts), taken out of the URL."""

    #: The URL without them (the timeouts are still in it: the engine takes them out).
    url: URL
    table_prefix: str
    create_schema: bool
    sqlite_synchronous: str
    max_value_bytes: int


def url_options(url: str | URL) -> UrlOptions:
    """Read (and remove) the options :meth:`SQLAlchemyStorage.from_url` understands.

    Shared by the sync and the async storage, so one URL means one storage on both.
    """
    parsed = parse_url(url)
    query = dict(parsed.query)
    prefix = query_value(query.pop(URL_PREFIX_OPTION, DEFAULT_TABLE_PREFIX))
    synchronous = query_value(query.pop(URL_SYNCHRONOUS_OPTION, "full"))
    limit_text = query.pop(URL_MAX_VALUE_OPTION, None)
    limit = (
        DEFAULT_MAX_VALUE_BYTES
        if limit_text is None
        else parse_value_limit(query_value(limit_text), URL_MAX_VALUE_OPTION)
    )
    # An embedded SQLite file belongs to the application: create its tables
    # unless told not to. Server databases are migrated by their owners.
    default = "true" if parsed.get_backend_name() == "sqlite" else "false"
    create = query_value(query.pop(URL_CREATE_OPTION, default)).lower() in {"1", "true", "yes"}
    return UrlOptions(parsed.set(query=query), prefix, create, synchronous, limit)


def storage_reference(
    url: URL,
    timeouts: Timeouts | None,
    *,
    table_prefix: str,
    sqlite_synchronous: str,
    max_value_bytes: int,
) -> str:
    """A storage's URL without the password, plus its non-default ``triggers_*`` options.

    A relative SQLite path is made absolute so a worker started elsewhere
    opens the same file.
    """
    if url.get_backend_name() == "sqlite" and url.database:
        # A worker may run in another directory: name the file absolutely.
        url = url.set(database=os.path.abspath(url.database))
    if table_prefix != DEFAULT_TABLE_PREFIX:
        url = url.update_query_dict({URL_PREFIX_OPTION: table_prefix})
    if timeouts is not None and timeouts.as_query():
        url = url.update_query_dict(timeouts.as_query())
    if url.get_backend_name() == "sqlite" and sqlite_synchronous != "full":
        url = url.update_query_dict({URL_SYNCHRONOUS_OPTION: sqlite_synchronous})
    if max_value_bytes != DEFAULT_MAX_VALUE_BYTES:
        url = url.update_query_dict({URL_MAX_VALUE_OPTION: str(max_value_bytes)})
    return public_url(url)


def store_identity_of(url: URL, table_prefix: str) -> tuple[str, str, str]:
    """The database (its URL, password left out) and the table prefix: a key, never shown."""
    if url.get_backend_name() == "sqlite" and url.database:
        url = url.set(database=os.path.abspath(url.database))
    return ("sqlalchemy", url.render_as_string(hide_password=True), table_prefix)


class SQLAlchemyStorage(ReadingMixin, WritingMixin):
    """One session in SQL tables (layout and guarantees: see :mod:`triggers_backends.sqlalchemy`).

    ``engine_or_url`` is an :class:`~sqlalchemy.engine.Engine` or a URL
    (``sqlite:///triggers.db``, ``postgresql+psycopg://user@host/db``,
    ``mysql+pymysql://user@host/db``); URLs share one engine per URL.
    Several storages (one per session) should share one engine.
    ``sqlite_synchronous`` (``"full"``, the default, or ``"normal"``) sets
    SQLite's ``PRAGMA synchronous`` for this storage's commits (see
    :mod:`~triggers_backends.sqlalchemy._engines`); other databases ignore it.
    ``max_value_bytes`` bounds the encoded size of each stored value (docs/limits.md).
    """

    backend_name: ClassVar[str] = "sqlalchemy"
    schema_url_option: ClassVar[str | None] = URL_CREATE_OPTION

    def __init__(
        self,
        uid: str,
        engine_or_url: Engine | str | URL,
        *,
        table_prefix: str = DEFAULT_TABLE_PREFIX,
        create_schema: bool = False,
        sqlite_synchronous: str = "full",
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        super().__init__(uid)
        self.max_value_bytes = check_value_limit(max_value_bytes)
        self.sqlite_synchronous = synchronous_level(sqlite_synchronous)
        if isinstance(engine_or_url, Engine):
            engine = engine_or_url
            prepare_engine(engine)
        else:
            engine = shared_engine(engine_or_url)
        self.engine = engine
        self.table_prefix = table_prefix
        self._tables = tables_for(table_prefix)
        self._sql = statements_for(self._tables)
        self._key = row_key(self.uid)
        # name -> (document text, decoded instance) for recent working sets: the
        # same unstarted instances are re-read by every fire that reaches their
        # task, and decoding dominates once there are hundreds. Loads hand out copies.
        self._decoded = {}
        # (config_id, tasks) last decoded: the configuration is re-read only when it changed.
        self._config = None
        # The header's per-task fields (counters, settled) are encoded and decoded again
        # only when they changed: a fire reaching thousands of tasks rarely changes them.
        self._codec = HeaderCodec()
        dialect = engine.dialect.name
        self._label = f"sqlalchemy/{dialect}"
        if dialect in ("postgresql", "mysql", "mariadb"):
            self._reader = with_options(engine, isolation_level="REPEATABLE READ")
            self._writer = with_options(engine, isolation_level="READ COMMITTED")
        else:
            self._reader = engine
            self._writer = with_options(
                engine, triggers_write=True, triggers_synchronous=self.sqlite_synchronous
            )
        if create_schema:
            error = None
            try:
                ensure_schema(engine, table_prefix)
            except sa_exc.SQLAlchemyError as exc:
                error = self._error(exc, "create_schema")
            except Exception as exc:  # drivers raise their own types too (TypeError...)
                error = StorageError(
                    f"create_schema failed on {public_url(engine.url)}: "
                    f"{describe(exc, engine.url)}",
                    backend=self._label,
                    session=self.uid,
                )
            if error is not None:
                # Raised outside the except block: the driver's error is not chained to
                # it (its text, redacted, is in the message), so no traceback of the
                # opening can show what the driver saw.
                raise error

    @classmethod
    def from_url(cls, url: str | URL, uid: str) -> SQLAlchemyStorage:
        """Open ``uid`` from a URL (one shared engine per URL).

        Query options, removed before the URL reaches the driver:
        ``triggers_prefix`` (table prefix), ``triggers_create_schema``
        (create missing tables; default ``true`` for SQLite files, ``false``
        for server databases), ``triggers_sqlite_synchronous`` (``full``, the
        default, or ``normal``; SQLite only), and ``triggers_connect_timeout``,
        ``triggers_lock_timeout``, ``triggers_statement_timeout`` (seconds;
        see :mod:`triggers_backends.sqlalchemy._timeouts`), ``triggers_max_value_bytes``
        (the bound on one stored value, default 1 MiB; see docs/limits.md).
        """
        options = url_options(url)
        return cls(
            uid,
            shared_engine(options.url),
            table_prefix=options.table_prefix,
            create_schema=options.create_schema,
            sqlite_synchronous=options.sqlite_synchronous,
            max_value_bytes=options.max_value_bytes,
        )

    @classmethod
    def list_sessions(
        cls,
        url: str | URL,
        filter: SessionFilter,
        *,
        page_size: int,
        cursor: str | None,
    ) -> SessionPage:
        """One page of the sessions in the tables a storage URL names (see :func:`list_sessions`).

        Understands the same ``triggers_*`` URL options as :meth:`from_url`;
        never creates tables.
        """
        parsed = parse_url(url)
        query = dict(parsed.query)
        prefix = query_value(query.pop(URL_PREFIX_OPTION, DEFAULT_TABLE_PREFIX))
        for option in (URL_SYNCHRONOUS_OPTION, URL_CREATE_OPTION, URL_MAX_VALUE_OPTION):
            query.pop(option, None)
        try:
            engine = shared_engine(parsed.set(query=query))
        except ModuleNotFoundError as exc:  # the driver, imported when first used
            scheme = parsed.get_backend_name()
            raise RegistryError(
                f"storage URL {public_url(parsed)!r} needs the module {exc.name!r}, which "
                f"is not installed: {install_hint(scheme, exc.name)}"
            ) from exc
        return list_sessions(
            engine, filter, table_prefix=prefix, page_size=page_size, cursor=cursor
        )

    def list_store_sessions(
        self,
        filter: SessionFilter,
        *,
        page_size: int,
        cursor: str | None,
    ) -> SessionPage:
        """One page of the sessions in this storage's tables, on its engine (see
        ``Storage.list_store_sessions``; the same query as :meth:`list_sessions`)."""
        return list_sessions(
            self.engine,
            filter,
            table_prefix=self.table_prefix,
            page_size=page_size,
            cursor=cursor,
        )

    def reference(self) -> str:
        """This storage's URL without the password (plus non-default ``triggers_*`` options).

        A relative SQLite path is made absolute so a worker started elsewhere
        opens the same file.
        """
        return storage_reference(
            self.engine.url,
            timeouts_of(self.engine),
            table_prefix=self.table_prefix,
            sqlite_synchronous=self.sqlite_synchronous,
            max_value_bytes=self.max_value_bytes,
        )

    def session(self, uid: str) -> SQLAlchemyStorage:
        """Session ``uid`` in the same tables, sharing this storage's engine (its pool)."""
        return SQLAlchemyStorage(
            uid,
            self.engine,
            table_prefix=self.table_prefix,
            sqlite_synchronous=self.sqlite_synchronous,
            max_value_bytes=self.max_value_bytes,
        )

    def bind_transaction(self, session: object) -> CallerTransaction:
        """This session written inside the caller's open transaction ``session``.

        ``session`` is a SQLAlchemy ORM session or what
        :func:`~triggers_backends.sqlalchemy.transaction` yields, on this
        storage's database (else :class:`ValueError`). What ``manager.fire(...,
        session=...)`` uses: see :mod:`triggers_backends.sqlalchemy._transactional`.
        """
        return bind(self, session)

    def store_identity(self) -> object | None:
        """The database (its URL, password left out) and the table prefix: a key, never shown.

        Engines opened on one database with different passwords name one store.
        """
        return store_identity_of(self.engine.url, self.table_prefix)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} uid={self.uid!r} at {self.reference()}>"
