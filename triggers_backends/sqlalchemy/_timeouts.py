"""Bounds on every wait for a SQL server: connecting, waiting for a lock, a statement.

Three URL options (seconds; removed before the URL reaches the driver) set them
for the engines Triggers creates from URLs:

* ``triggers_connect_timeout`` (default 10): opening a connection, the
  handshake included.
* ``triggers_lock_timeout`` (default 5): waiting for the session's row lock
  (PostgreSQL ``lock_timeout``, MySQL/MariaDB ``innodb_lock_wait_timeout``,
  SQLite ``busy_timeout``).
* ``triggers_statement_timeout`` (default 30): one storage call (a load or a
  compare-and-swap, each one short transaction) waiting for the server. The
  server cancels longer statements (PostgreSQL ``statement_timeout``, MariaDB
  ``max_statement_time``) and ends sessions idle inside a transaction for
  longer (PostgreSQL ``idle_in_transaction_session_timeout``, MariaDB
  ``idle_transaction_timeout``), so a client that froze mid-transaction
  cannot keep the session locked. A server that stops answering is caught on
  the client side: PyMySQL's read and write timeouts, and for PostgreSQL a
  watchdog thread that shuts the connection's socket down once the call has
  waited that long (a frozen peer keeps TCP alive, so keepalives never fire).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine

__all__ = [
    "CONNECT_OPTION",
    "LOCK_OPTION",
    "PING_AFTER_IDLE",
    "STATEMENT_OPTION",
    "Timeouts",
    "engine_arguments",
    "expired_here",
    "install",
    "take_expired",
    "timeouts_of",
]

CONNECT_OPTION = "triggers_connect_timeout"
LOCK_OPTION = "triggers_lock_timeout"
STATEMENT_OPTION = "triggers_statement_timeout"

#: The largest timeout accepted (one day), so every bound stays a bound.
_MAX_SECONDS = 86_400.0


def _seconds(option: str, value: object) -> float:
    try:
        seconds = float(str(value))
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= _MAX_SECONDS:  # False for NaN too
        raise ValueError(
            f"{option} must be a number of seconds above 0 and at most {_MAX_SECONDS:g}, "
            f"got {value!r}"
        )
    return seconds


@attrs.frozen
class Timeouts:
    """Seconds: opening a connection, waiting for a row lock, one storage call."""

    connect: float = 10.0
    lock: float = 5.0
    statement: float = 30.0

    @classmethod
    def pop_from(cls, query: dict[str, str | tuple[str, ...]]) -> Timeouts:
        """Take the ``triggers_*_timeout`` options out of a URL query (the last value wins)."""
        values: dict[str, float] = {}
        for field, option in (
            ("connect", CONNECT_OPTION),
            ("lock", LOCK_OPTION),
            ("statement", STATEMENT_OPTION),
        ):
            raw = query.pop(option, None)
            if raw is not None:
                values[field] = _seconds(option, raw if isinstance(raw, str) else _last(raw))
        return cls(**values)

    def as_query(self) -> dict[str, str]:
        """The options that differ from the defaults, for a storage reference."""
        default = Timeouts()
        found = {}
        for field, option in (
            ("connect", CONNECT_OPTION),
            ("lock", LOCK_OPTION),
            ("statement", STATEMENT_OPTION),
        ):
            value = getattr(self, field)
            if value != getattr(default, field):
                found[option] = f"{value:g}"
        return found


def _last(values: Iterable[str]) -> str:
    items = list(values)
    return items[-1] if items else ""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def engine_arguments(url: URL, timeouts: Timeouts) -> tuple[URL, dict[str, Any], bool]:
    """``(url, connect_args, pool_pre_ping)`` that apply ``timeouts`` to a new engine."""
    backend = url.get_backend_name()
    connect_args: dict[str, Any] = {}
    pre_ping = backend != "sqlite"
    if backend == "postgresql" and url.get_driver_name() == "asyncpg":
        # asyncpg takes neither libpq's options nor its connect_timeout; command_timeout
        # is its own client-side bound on one statement (a frozen server).
        connect_args["timeout"] = timeouts.connect
        connect_args["command_timeout"] = timeouts.statement
        connect_args["server_settings"] = {
            "statement_timeout": str(_ms(timeouts.statement)),
            "lock_timeout": str(_ms(timeouts.lock)),
            "idle_in_transaction_session_timeout": str(_ms(timeouts.statement)),
        }
        pre_ping = False  # pinged after PING_AFTER_IDLE instead (see install)
    elif backend == "postgresql":
        # libpq counts whole seconds (and at least 2).
        connect_args["connect_timeout"] = max(1, math.ceil(timeouts.connect))
        settings = (
            f"-c statement_timeout={_ms(timeouts.statement)} "
            f"-c lock_timeout={_ms(timeouts.lock)} "
            f"-c idle_in_transaction_session_timeout={_ms(timeouts.statement)}"
        )
        given = url.query.get("options")
        if given:
            url = url.update_query_dict({"options": f"{_last_or(given)} {settings}"})
        else:
            connect_args["options"] = settings
        pre_ping = False  # pinged under the watchdog instead (see install)
    elif backend in ("mysql", "mariadb"):
        connect_args["connect_timeout"] = max(1, math.ceil(timeouts.connect))
        if url.get_driver_name() != "aiomysql":  # its calls are bounded by the event loop
            connect_args["read_timeout"] = timeouts.statement
            connect_args["write_timeout"] = timeouts.statement
    return url, connect_args, pre_ping


def _last_or(value: str | tuple[str, ...]) -> str:
    return value if isinstance(value, str) else _last(value)


_ENGINE_TIMEOUTS: weakref.WeakKeyDictionary[Engine, Timeouts] = weakref.WeakKeyDictionary()


def timeouts_of(engine: Engine) -> Timeouts | None:
    """The timeouts installed on ``engine`` (None for an engine Triggers did not create)."""
    return _ENGINE_TIMEOUTS.get(engine)


def install(engine: Engine, timeouts: Timeouts, *, watchdog: bool = True) -> None:
    """Apply the server-side settings and the client-side watchdog to a new engine.

    ``watchdog=False`` (the sync face of an async engine, whose calls the event
    loop bounds instead): pooled connections are still pinged after
    :data:`PING_AFTER_IDLE`, without a watch.
    """
    _ENGINE_TIMEOUTS[engine] = timeouts
    backend = engine.dialect.name
    if backend in ("mysql", "mariadb"):
        event.listen(engine, "connect", _mysql_settings(timeouts))
    elif backend == "postgresql":
        _install_watchdog(engine, timeouts.statement if watchdog else None)


def _mysql_settings(timeouts: Timeouts) -> Any:
    statements = (
        f"SET SESSION innodb_lock_wait_timeout = {max(1, math.ceil(timeouts.lock))}",
        # MariaDB only (MySQL answers 1193, unknown variable, and keeps its defaults):
        f"SET SESSION max_statement_time = {timeouts.statement:g}",
        f"SET SESSION idle_transaction_timeout = {max(1, math.ceil(timeouts.statement))}",
    )

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements:
                try:
                    cursor.execute(statement)
                except Exception as exc:
                    if not (exc.args and exc.args[0] == 1193):
                        raise
        finally:
            cursor.close()

    return on_connect


# -- the watchdog ----------------------------------------------------------------------

_WATCH_KEY = "triggers_watch"
_FRESH_KEY = "triggers_fresh"
_RETURNED_KEY = "triggers_returned"

#: Seconds a pooled PostgreSQL connection may sit idle and still be used without a
#: ping first. A connection dies while idle (a server restart, an idle timeout in a
#: proxy or firewall), so one returned to the pool moments ago is used as it is: a
#: busy worker then pays no ping per storage call (one round trip of the four or
#: five a call costs). Should it have died anyway, a load retries once on a new
#: connection, and a compare-and-swap fails before writing anything (its first
#: statement cannot reach the server), as when the server goes down mid-call.
PING_AFTER_IDLE = 1.0


@attrs.define(eq=False)
class _Watch:
    deadline: float
    seconds: float
    sock: socket.socket | None
    owner: int
    fired: bool = False


class _Watchdog:
    """One daemon thread per process that breaks connections waiting past their deadline.

    Shutting a socket down wakes the thread blocked on it with an error, which
    the driver reports and SQLAlchemy treats as a lost connection (discarded).
    The watchdog holds a duplicate of the socket, so it never touches a file
    descriptor that the driver closed and the process reused meanwhile.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._counter = itertools.count()
        self._thread: threading.Thread | None = None
        self._expired: dict[int, float] = {}

    def watch(self, fileno: int, seconds: float) -> _Watch:
        sock = socket.socket(fileno=os.dup(fileno))
        watch = _Watch(time.monotonic() + seconds, seconds, sock, threading.get_ident())
        with self._cond:
            self._expired.pop(watch.owner, None)
            heapq.heappush(self._heap, (watch.deadline, next(self._counter), watch))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="triggers-sql-watchdog", daemon=True
                )
                self._thread.start()
            if self._heap[0][2] is watch:
                # The thread sleeps until the earliest deadline; only an earlier one
                # needs to wake it (a wake-up per checkout costs a busy worker CPU).
                self._cond.notify()
        return watch

    def cancel(self, watch: _Watch) -> None:
        with self._cond:
            sock, watch.sock = watch.sock, None
        if sock is not None:
            sock.close()

    def expired_here(self) -> bool:
        """True if the last watch of this thread expired (left for take_expired)."""
        with self._cond:
            return threading.get_ident() in self._expired

    def take_expired(self) -> float | None:
        """Seconds of the last watch of this thread that expired (and forget it)."""
        with self._cond:
            return self._expired.pop(threading.get_ident(), None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].sock is None:
                    heapq.heappop(self._heap)  # cancelled
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, _, watch = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                sock, watch.sock = watch.sock, None
                watch.fired = True
                self._expired[watch.owner] = watch.seconds
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


_WATCHDOG = _Watchdog()

if hasattr(os, "register_at_fork"):
    # A forked child has no watchdog thread and must not inherit a held lock.
    os.register_at_fork(after_in_child=_WATCHDOG._reset)


def expired_here() -> bool:
    """True if this thread's last storage call ran out of time (see :func:`take_expired`)."""
    return _WATCHDOG.expired_here()


def take_expired() -> float | None:
    """If this thread's last storage call ran out of time: its bound in seconds."""
    return _WATCHDOG.take_expired()


def _fileno(dbapi_connection: Any) -> int | None:
    fileno = getattr(dbapi_connection, "fileno", None)
    if fileno is None:
        return None
    try:
        value = fileno()
    except Exception:
        return None
    return value if isinstance(value, int) and value >= 0 else None


def _install_watchdog(engine: Engine, seconds: float | None) -> None:
    """Watch every checkout of a pooled connection; ping reused ones under the watch.

    SQLAlchemy's own ``pool_pre_ping`` runs before any event, where nothing
    could bound it; this does the same ping (the dialect's ``do_ping``) once
    the watch is running, and asks the pool for a new connection if it fails.
    A connection returned to the pool less than :data:`PING_AFTER_IDLE`
    seconds ago is not pinged.
    """

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_connection: Any, record: Any) -> None:
        record.info[_FRESH_KEY] = True

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        _stop(record)
        watch = None
        if seconds is not None:  # None: no watch, the caller bounds the call (async)
            fileno = _fileno(dbapi_connection)
            if fileno is None:
                return
            record.info[_WATCH_KEY] = watch = _WATCHDOG.watch(fileno, seconds)
        if record.info.pop(_FRESH_KEY, False):
            return
        returned = record.info.get(_RETURNED_KEY)
        if returned is not None and time.monotonic() - returned < PING_AFTER_IDLE:
            return  # used moments ago (see PING_AFTER_IDLE)
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            _stop(record)
            lost = isinstance(exc, engine.dialect.loaded_dbapi.Error) and (
                engine.dialect.is_disconnect(exc, dbapi_connection, None)
            )
            if (watch is not None and watch.fired) or lost:
                raise sa_exc.DisconnectionError(f"ping failed: {exc}") from exc
            raise

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        _stop(record)
        info = getattr(record, "info", None)
        if info is not None:
            info[_RETURNED_KEY] = time.monotonic()

    @event.listens_for(engine, "invalidate")
    def _invalidate(_dbapi_connection: Any, record: Any, _exception: Any) -> None:
        _stop(record)


def _stop(record: Any) -> None:
    info: Mapping[str, Any] | None = getattr(record, "info", None)
    if info is None:
        return
    watch = record.info.pop(_WATCH_KEY, None)
    if watch is not None:
        _WATCHDOG.cancel(watch)
