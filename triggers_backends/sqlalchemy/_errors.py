"""What a database driver's error means, and how it is told without secrets.

Conflicts (a racing first insert, deadlocks, serialization failures, SQLite's
"database is locked"), missing tables, tables of an older layout and bounds
that ran out (see :mod:`triggers_backends.sqlalchemy._timeouts`) are told apart
by SQLSTATE (PostgreSQL), error code (MySQL/MariaDB) or message (SQLite). A
driver's message may quote the URL's password or secret query options:
:func:`describe` and :func:`public_url` redact them.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine

from triggers_backends.sqlalchemy._timeouts import (
    CONNECT_OPTION,
    LOCK_OPTION,
    STATEMENT_OPTION,
    take_expired,
    timeouts_of,
)
from triggers_core.runtime.redaction import is_sensitive_key, redact

__all__ = [
    "describe",
    "driver_error",
    "is_conflict",
    "is_missing_table",
    "is_old_layout",
    "public_url",
    "timeout_hint",
    "url_secrets",
]

_CONFLICT_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock
_CONFLICT_MYSQL_CODES = {1213}  # deadlock
_MISSING_MYSQL_CODES = {1146}  # table doesn't exist
# Waits that ran out (not conflicts: retrying would only wait again). Lock waits
# are short between healthy writers; one that lasts longer than the lock timeout
# means a stuck transaction holds the session's row.
_LOCK_TIMEOUT_SQLSTATES = {"55P03"}  # lock_not_available (lock_timeout)
_LOCK_TIMEOUT_MYSQL_CODES = {1205}  # lock wait timeout exceeded
_STATEMENT_TIMEOUT_SQLSTATES = {"57014"}  # query_canceled (statement_timeout)
_STATEMENT_TIMEOUT_MYSQL_CODES = {
    1969,
    3024,
}  # MariaDB max_statement_time, MySQL max_execution_time
_UNKNOWN_COLUMN_MYSQL_CODES = {1054}


def driver_error(exc: sa_exc.SQLAlchemyError) -> BaseException | None:
    """The driver's own error under ``exc`` (None if SQLAlchemy raised it itself)."""
    return exc.orig if isinstance(exc, sa_exc.DBAPIError) else None


def _mysql_code(orig: BaseException | None) -> int | None:
    if orig is not None and orig.args and isinstance(orig.args[0], int):
        return orig.args[0]
    return None


def is_missing_table(exc: sa_exc.SQLAlchemyError) -> bool:
    """A table the statement names does not exist."""
    orig = driver_error(exc)
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) == "42P01" or _mysql_code(orig) in _MISSING_MYSQL_CODES:
        return True
    return "no such table" in str(orig)


def is_old_layout(exc: sa_exc.SQLAlchemyError) -> bool:
    """A column of the current layout is missing: tables of an older Triggers version."""
    orig = driver_error(exc)
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) == "42703" or (
        _mysql_code(orig) in _UNKNOWN_COLUMN_MYSQL_CODES
    ):
        return True
    return "no such column" in str(orig)


def is_conflict(exc: sa_exc.SQLAlchemyError) -> bool:
    """Another writer won a race: retrying after a reload may succeed."""
    if isinstance(exc, sa_exc.IntegrityError):
        return True  # a racing first insert
    orig = driver_error(exc)
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) in _CONFLICT_SQLSTATES:
        return True
    if _mysql_code(orig) in _CONFLICT_MYSQL_CODES:
        return True
    # SQLite: the write lock stayed taken for longer than the busy timeout.
    text = str(orig).lower()
    return type(orig).__module__.startswith("sqlite3") and (
        "database is locked" in text or "database table is locked" in text
    )


def timeout_hint(exc: sa_exc.SQLAlchemyError, engine: Engine) -> str | None:
    """Which bound ran out, as a hint naming its URL option; None if none did."""
    timeouts = timeouts_of(engine)
    expired = take_expired()
    if timeouts is None:
        return None
    orig = driver_error(exc)
    state, code = getattr(orig, "sqlstate", None), _mysql_code(orig)
    text = str(orig).lower()
    if state in _LOCK_TIMEOUT_SQLSTATES or code in _LOCK_TIMEOUT_MYSQL_CODES:
        option, seconds = LOCK_OPTION, timeouts.lock
        what = "another transaction held the session's row lock for longer than"
    elif "connection timeout expired" in text or (code == 2003 and "timed out" in text):
        option, seconds = CONNECT_OPTION, timeouts.connect
        what = "no connection could be opened within"
    elif (
        expired is not None
        or state in _STATEMENT_TIMEOUT_SQLSTATES
        or code in _STATEMENT_TIMEOUT_MYSQL_CODES
        or (code == 2013 and "timed out" in text)
    ):
        option, seconds = STATEMENT_OPTION, timeouts.statement
        what = "the database did not answer within"
    else:
        return None
    return f"{what} {seconds:g}s ({option}={seconds:g} in the URL)"


def first_error(exc: BaseException) -> BaseException:
    """The database error that started ``exc``: an error raised while handling another one
    (a rollback on a connection the server closed after refusing a statement, e.g. MariaDB's
    ``max_allowed_packet``) hides the refusal, which is the one worth telling."""
    found: BaseException = exc
    link: BaseException = exc
    for _ in range(12):  # the driver's error, its socket error, the one before...
        following = link.__cause__ or link.__context__
        if following is None:
            break
        link = following
        if isinstance(link, sa_exc.SQLAlchemyError):
            found = link
    return found


def describe(exc: BaseException, url: URL) -> str:
    """The driver's message (not SQLAlchemy's, which quotes SQL and parameters), redacted."""
    orig = driver_error(exc) if isinstance(exc, sa_exc.SQLAlchemyError) else None
    cause = orig if orig is not None else exc
    text = redact(f"{type(cause).__name__}: {cause}".strip(), secrets=url_secrets(url))
    return " ".join(text.split())


def url_secrets(url: URL) -> list[str]:
    """The password and every secret query value: a driver's message may quote them."""
    found = [str(url.password)] if url.password else []
    for key, value in url.query.items():
        if is_sensitive_key(key):
            found.extend([value] if isinstance(value, str) else value)
    return found


def public_url(url: URL) -> str:
    """``url`` as text without its password or secret query options (see ``redact``)."""
    # URL.set(password=None) means "leave it as is", hence _replace.
    return redact(url._replace(password=None).render_as_string(hide_password=False))
