"""Engines: one per URL, Triggers' URL options, and SQLite's transactions.

:func:`shared_engine` opens one engine (one connection pool) per URL in a
process; the ``triggers_*`` query options are taken out of the URL before it
reaches the driver (the timeouts: :mod:`triggers_backends.sqlalchemy._timeouts`).
:func:`prepare_engine` gives SQLite explicit transactions (WAL, a busy
timeout, ``BEGIN IMMEDIATE`` for writers).

SQLite commits are durable against power loss by default (``PRAGMA
synchronous=FULL``); ``triggers_sqlite_synchronous=normal`` in the URL (or
``sqlite_synchronous="normal"``) trades that for much faster commits: in WAL
mode a commit then survives an application crash but may be lost if the
machine loses power or the OS crashes before the next checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from triggers_backends.sqlalchemy._errors import public_url, url_secrets
from triggers_backends.sqlalchemy._timeouts import Timeouts, engine_arguments, install, timeouts_of
from triggers_core.errors import StorageURLError
from triggers_core.runtime.redaction import redact

__all__ = [
    "DEFAULT_DRIVERS",
    "SQLITE_BUSY_TIMEOUT_MS",
    "SQLITE_SYNCHRONOUS_LEVELS",
    "URL_CREATE_OPTION",
    "URL_PREFIX_OPTION",
    "URL_SYNCHRONOUS_OPTION",
    "dispose_engines",
    "engine_options",
    "normalize_url",
    "parse_url",
    "prepare_engine",
    "query_value",
    "shared_engine",
    "synchronous_level",
    "with_options",
]

#: Triggers' own URL query options; removed before the URL reaches the driver.
URL_PREFIX_OPTION = "triggers_prefix"
URL_CREATE_OPTION = "triggers_create_schema"
URL_SYNCHRONOUS_OPTION = "triggers_sqlite_synchronous"

#: SQLite ``PRAGMA synchronous`` levels a storage may ask for (FULL is the default).
SQLITE_SYNCHRONOUS_LEVELS = ("full", "normal")

#: Drivers used when a URL names none (``postgresql://`` -> psycopg 3, ...).
DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()
_PREPARED: weakref.WeakSet[Engine] = weakref.WeakSet()

#: SQLite: how long a writer waits for the write lock before it counts as a conflict.
SQLITE_BUSY_TIMEOUT_MS = 5000


def normalize_url(url: URL) -> URL:
    """The driver a URL names (``postgresql://`` -> psycopg 3...); in-memory SQLite refused."""
    driver = DEFAULT_DRIVERS.get(url.drivername)
    if driver is not None:
        url = url.set(drivername=driver)
    if url.get_backend_name() == "sqlite" and url.host:
        # sqlite://triggers.db: two slashes make the file name a host, and no database.
        raise ValueError(
            f"a SQLite URL names a file after three slashes, not a host: "
            f"sqlite:///{url.host}{'/' + url.database if url.database else ''} for a relative "
            "path, four for an absolute one (sqlite:////var/lib/triggers.db); "
            f"got {public_url(url)!r}"
        )
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise ValueError(
            "in-memory SQLite is not supported (every connection would see its own "
            "database); use memory:// for in-process storage or sqlite:///path/to/file.db"
        )
    return url


#: asyncio-only drivers and the blocking driver of the same database, for the synchronous storage.
_BLOCKING_TWINS = {
    "aiosqlite": "",
    "asyncpg": "psycopg",
    "aiomysql": "pymysql",
    "asyncmy": "pymysql",
}


def refuse_async_driver(url: URL) -> None:
    """A URL naming an asyncio driver (``sqlite+aiosqlite://``) cannot open a synchronous
    storage: say which URL does, instead of SQLAlchemy's ``MissingGreenlet`` at first use."""
    driver = url.get_driver_name()
    twin = _BLOCKING_TWINS.get(driver)
    if twin is None:
        return
    backend = url.get_backend_name()
    blocking = url.set(drivername=f"{backend}+{twin}" if twin else backend)
    raise StorageURLError(
        f"{public_url(url)!r} names the asyncio driver {driver!r}: a synchronous storage "
        f"(TriggerManager, workers, the command line) needs a blocking one, e.g. "
        f"{public_url(blocking)!r} for the same database; open this URL with "
        "AsyncTriggerManager (docs/async.md)"
    )


def shared_engine(url: str | URL) -> Engine:
    """One engine (one connection pool) per URL in this process.

    The URL may set ``triggers_connect_timeout``, ``triggers_lock_timeout`` and
    ``triggers_statement_timeout`` (seconds; see ``docs/storage.md``): they
    bound every wait for the server and are removed before the URL reaches the
    driver. Storages opened from the same URL share it. The URL is used exactly
    as given, credentials included: a URL without a password never borrows one
    (from another engine or from the environment), so a URL that differs in
    any part, query options included, can never be sent someone else's
    password. Task messages carry names, and each worker opens the URL its
    own settings configure under that name.
    """
    parsed = parse_url(url)
    refuse_async_driver(parsed)
    parsed = normalize_url(parsed)
    key = parsed.render_as_string(hide_password=False)  # stays in this dict, never shown
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            query = dict(parsed.query)
            timeouts = Timeouts.pop_from(query)
            engine = _ENGINES[key] = _open_engine(parsed.set(query=query), timeouts)
        return engine


def _open_engine(url: URL, timeouts: Timeouts) -> Engine:
    """``_create_engine``, with SQLAlchemy's URL complaints redacted (they quote the URL)."""
    problem = None
    try:
        return _create_engine(url, timeouts)
    except sa_exc.ArgumentError as exc:  # not ImportError: a missing driver is reported as is
        problem = f"{type(exc).__name__}: {redact(str(exc), secrets=url_secrets(url))}"
    # raised outside the except block: the original error is not chained to it
    raise StorageURLError(f"SQLAlchemy cannot use the storage URL {public_url(url)!r}: {problem}")


def engine_options(url: URL, timeouts: Timeouts) -> tuple[URL, dict[str, Any]]:
    """``(url, keyword arguments)`` for ``create_engine`` (or ``create_async_engine``)
    of an engine bounded by ``timeouts``."""
    backend = url.get_backend_name()
    url, connect_args, pre_ping = engine_arguments(url, timeouts)
    for name in url.query:  # the driver's own options in the URL win
        connect_args.pop(name, None)
    kwargs: dict[str, Any] = {"pool_pre_ping": pre_ping, "connect_args": connect_args}
    if backend in ("mysql", "mariadb"):
        kwargs["pool_recycle"] = 3600  # MySQL drops idle connections (wait_timeout)
        if "charset" not in url.query:
            url = url.update_query_dict({"charset": "utf8mb4"})
    return url, kwargs


def _create_engine(url: URL, timeouts: Timeouts) -> Engine:
    url, kwargs = engine_options(url, timeouts)
    engine = sa.create_engine(url, **kwargs)
    install(engine, timeouts)
    prepare_engine(engine)
    return engine


_OPTIONED_ATTRIBUTE = "_triggers_optioned"
_OPTIONED_LOCK = threading.Lock()


def with_options(engine: Engine, **options: Any) -> Engine:
    """``engine.execution_options(**options)``, made once per engine and options.

    Each call of ``execution_options`` builds an engine proxy and registers its
    event listeners; a storage opened per message or per fire would otherwise
    pay that on every open. The proxies hold nothing but the options, and are
    kept on the engine itself (so they go when it goes).
    """
    key = tuple(sorted(options.items()))
    with _OPTIONED_LOCK:
        made: dict[tuple[tuple[str, Any], ...], Engine] = vars(engine).setdefault(
            _OPTIONED_ATTRIBUTE, {}
        )
        found = made.get(key)
        if found is None:
            found = made[key] = engine.execution_options(**options)
        return found


def dispose_engines() -> None:
    """Close every pooled connection of the engines :func:`shared_engine` created."""
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for engine in engines:
        engine.dispose()


def _after_fork_in_child() -> None:
    # A forked child (e.g. a Celery prefork worker) must not reuse its parent's
    # sockets; dispose(close=False) forgets them without closing the parent's.
    for engine in list(_ENGINES.values()):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def prepare_engine(engine: Engine) -> None:
    """SQLite needs explicit transactions: WAL, a busy timeout, BEGIN / BEGIN IMMEDIATE.

    pysqlite's own transaction handling neither starts a transaction before a
    SELECT (so two SELECTs would not share a snapshot) nor lets a writer take
    the write lock up front; SQLAlchemy's documented recipe fixes both.
    """
    if engine.dialect.name != "sqlite" or engine in _PREPARED:
        return
    _PREPARED.add(engine)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        timeouts = timeouts_of(engine)
        busy_ms = SQLITE_BUSY_TIMEOUT_MS if timeouts is None else round(timeouts.lock * 1000)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
            # Fails only while another connection is switching it to WAL right now.
            with contextlib.suppress(Exception):
                cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        write = options.get("triggers_write", False)
        if write:
            _set_synchronous(connection, options.get("triggers_synchronous", "full"))
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _set_synchronous(connection: Connection, level: str) -> None:
    """``PRAGMA synchronous`` per storage, not per engine: set it when it differs.

    Storages with different levels may share one engine (one pool); the level a
    pooled connection has is remembered in its ``info`` so the PRAGMA runs only
    when a connection changes hands between them (it must run outside a transaction).
    """
    info = connection.connection.info
    if info.get("triggers_synchronous") != level:
        connection.exec_driver_sql(f"PRAGMA synchronous = {level.upper()}")
        info["triggers_synchronous"] = level


def synchronous_level(value: str) -> str:
    """``value`` as one of :data:`SQLITE_SYNCHRONOUS_LEVELS` (ValueError otherwise)."""
    level = value.lower()
    if level not in SQLITE_SYNCHRONOUS_LEVELS:
        raise ValueError(
            f"{URL_SYNCHRONOUS_OPTION} must be one of "
            f"{', '.join(SQLITE_SYNCHRONOUS_LEVELS)}, got {value!r}"
        )
    return level


def parse_url(url: str | URL) -> URL:
    """``make_url`` with an error that names the problem but never the URL's secrets."""
    if isinstance(url, URL):
        return url
    problem = None
    try:
        return make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:
        problem = redact(str(exc))
    # raised outside the except block: the original error is not chained to it
    raise StorageURLError(f"cannot parse the SQLAlchemy storage URL {redact(url)!r}: {problem}")


def query_value(value: str | Iterable[str]) -> str:
    """URL query values may repeat; the last one wins."""
    if isinstance(value, str):
        return value
    values = list(value)
    return values[-1] if values else ""
