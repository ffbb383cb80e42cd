"""PostgreSQL on psycopg 3: the hot statements run on the pooled driver connection directly.

A fire and each Celery message run two statements on PostgreSQL (the scoped
load and the one-statement compare-and-swap, both in autocommit mode). Through
SQLAlchemy's ``Connection`` each costs about 2.5 times its driver's own CPU:
the checkout's isolation-level set and reset, the autobegin and pool-reset
bookkeeping, the cache lookup of the compiled form, the expansion of ``IN``
lists and the result proxy (profiled in BENCHMARKS.md, issue 22). For those
two operations :class:`RawEngine` takes the pool's connection
(``engine.raw_connection()``, so the pool, its ``checkout`` events, the
storage's watchdog and pings all still apply), switches the driver connection
to autocommit, and runs the statement's PostgreSQL text, compiled once per
statement, on a psycopg cursor. ``IN`` lists are passed as one array
(``= ANY(...)``, ``NOT IN``: ``<> ALL(...)``), so a statement has one text
whatever the lengths (a tuple ``IN`` goes through SQLAlchemy).

Exactly what SQLAlchemy would do is kept where it matters:

* errors are SQLAlchemy's (:meth:`sqlalchemy.exc.DBAPIError.instance`, the
  engine's ``hide_parameters`` honoured), so the storage's handling of
  conflicts, timeouts, missing tables and lost connections is unchanged; a
  connection the driver reports lost is invalidated in the pool, as SQLAlchemy
  does;
* rows have the attribute names SQLAlchemy's rows have (the statement's
  selected column keys);
* a statement whose types process values on the way in or out, or whose keys
  are ambiguous, runs through SQLAlchemy as before.

An engine with ``before_cursor_execute`` or ``after_cursor_execute``
listeners (statement logging, OpenTelemetry's SQLAlchemy instrumentation...)
never takes this path, so those listeners still see every statement.
"""

from __future__ import annotations

import collections
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, cast

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import ClauseElement, sqltypes
from sqlalchemy.sql.expression import Executable
from sqlalchemy.sql.selectable import SelectBase

__all__ = ["RawConnection", "RawEngine", "SQLConnection", "raw_engine"]

#: How SQLAlchemy renders an expanding ``IN`` parameter before the execution expands it
#: (``NOT IN`` first: it ends the same way).
_NOT_EXPANDING = re.compile(r"NOT IN \(__\[POSTCOMPILE_(\w+)\]\)")
_EXPANDING = re.compile(r"IN \(__\[POSTCOMPILE_(\w+)\]\)")
#: ``%`` signs of the PostgreSQL text that are not placeholders would need escaping: none
#: of the statements have any, and a text with one is left to SQLAlchemy.
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


class _Compiled(NamedTuple):
    """One statement's PostgreSQL text, its bind defaults and its row type (None: SQLAlchemy)."""

    statement: ClauseElement  # kept alive: the cache is keyed by its id
    text: str | None
    defaults: Mapping[str, Any]
    row: Any


_COMPILED: dict[int, _Compiled] = {}
_COMPILED_LOCK = threading.Lock()
#: Statements kept compiled (the storages' statements: a few per table prefix and shape).
_MAX_COMPILED = 4096


def _compile(statement: ClauseElement, engine: Engine) -> _Compiled:
    key = id(statement)
    found = _COMPILED.get(key)
    if found is not None and found.statement is statement:
        return found
    compiled = _compiled(statement, engine)
    with _COMPILED_LOCK:
        if len(_COMPILED) >= _MAX_COMPILED:
            _COMPILED.clear()
        _COMPILED[key] = compiled
    return compiled


def _compiled(statement: ClauseElement, engine: Engine) -> _Compiled:
    """The text SQLAlchemy would send, with ``IN`` lists as arrays; ``text=None`` if the
    statement needs SQLAlchemy (value processing, literal rendering, ambiguous keys)."""
    none = _Compiled(statement, None, {}, None)
    compiled: Any
    try:
        compiled = statement.compile(dialect=engine.dialect)
    except sa_exc.SQLAlchemyError:
        return none
    if compiled._bind_processors or compiled.literal_execute_params:
        return none
    for column in getattr(compiled, "_result_columns", ()):
        type_ = column[3]
        if type_._cached_result_processor(engine.dialect, None) is not None:
            return none
    for name in _EXPANDING.findall(compiled.string):
        bind = compiled.binds.get(name)
        if bind is None or isinstance(bind.type, sqltypes.TupleType):
            return none  # a tuple IN has no one-array form
    text = _NOT_EXPANDING.sub(r"<> ALL(%(\1)s)", compiled.string)
    text = _EXPANDING.sub(r"= ANY(%(\1)s)", text)
    if "POSTCOMPILE" in text or "%" in _PLACEHOLDER.sub("", text):
        return none
    defaults = {
        name: value
        for name, value in compiled.construct_params(_check=False).items()
        if value is not None
    }
    row: Any = None
    if isinstance(statement, SelectBase):
        keys = list(statement.selected_columns.keys())
        if len(set(keys)) != len(keys) or not all(k.isidentifier() for k in keys):
            return none
        row = collections.namedtuple("Row", keys)  # type: ignore[misc, no-redef]
    return _Compiled(statement, text, defaults, row)


def _dbapi_error(
    engine: Engine, exc: Any, text: str | None, values: dict[str, Any] | None, lost: bool
) -> Exception:
    """The driver's error ``exc`` as SQLAlchemy raises it (the engine's ``hide_parameters``)."""
    dialect = engine.dialect
    error: Exception = sa_exc.DBAPIError.instance(
        text,
        values,
        exc,
        dialect.loaded_dbapi.Error,
        hide_parameters=engine.hide_parameters,
        connection_invalidated=lost,
        dialect=dialect,
    )
    return error


class RawResult:
    """The rows of one statement, as much of SQLAlchemy's ``Result`` as the storage uses."""

    __slots__ = ("_rows",)

    def __init__(self, rows: Sequence[Any]) -> None:
        self._rows = rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return list(self._rows)

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise sa_exc.MultipleResultsFound(
                "Multiple rows were found when one or none was required"
            )
        return self._rows[0] if self._rows else None

    def scalar_one(self) -> Any:
        if len(self._rows) != 1:
            raise (sa_exc.NoResultFound if not self._rows else sa_exc.MultipleResultsFound)(
                "exactly one row was required"
            )
        return self._rows[0][0]

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None


class RawConnection:
    """A pooled psycopg connection in autocommit mode, running SQLAlchemy statements.

    ``execute(statement, params)`` as on a SQLAlchemy ``Connection``; a statement
    this path cannot run exactly runs on a SQLAlchemy connection of the same
    engine instead (opened on first need, closed with this one).
    """

    def __init__(self, engine: Engine, fallback: Engine) -> None:
        self.engine = engine
        self._fallback_engine = fallback
        self._fallback: Connection | None = None
        dialect = engine.dialect
        try:
            self._fairy: Any = engine.raw_connection()
        except dialect.loaded_dbapi.Error as exc:  # as Engine.connect() reports it
            lost = bool(dialect.is_disconnect(exc, None, None))
            raise _dbapi_error(engine, exc, None, None, lost) from exc
        try:
            self._dbapi: Any = cast(Any, self._fairy).dbapi_connection
            self._dbapi.autocommit = True
        except BaseException:
            self._fairy.close()
            raise

    def execute(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Any:
        compiled = _compile(cast(ClauseElement, statement), self.engine)
        if compiled.text is None:
            return self._sqlalchemy().execute(statement, params or {})
        values = {**compiled.defaults, **(params or {})}
        try:
            cursor = self._dbapi.cursor()
            try:
                cursor.execute(compiled.text, values)
                rows = cursor.fetchall() if cursor.description is not None else []
            finally:
                cursor.close()
        except self.engine.dialect.loaded_dbapi.Error as exc:
            raise self._wrapped(exc, compiled.text, values) from exc
        except Exception as exc:  # the driver could not send the values (as SQLAlchemy says)
            raise sa_exc.StatementError(str(exc), compiled.text, dict(values), exc) from exc
        row = compiled.row
        return RawResult([row._make(r) for r in rows] if row is not None else rows)

    def _wrapped(self, exc: Any, text: str, values: Mapping[str, Any]) -> Exception:
        dialect = self.engine.dialect
        lost = bool(dialect.is_disconnect(exc, self._dbapi, None))
        if lost:
            self._fairy.invalidate(exc)
        return _dbapi_error(self.engine, exc, text, dict(values), lost)

    def _sqlalchemy(self) -> Connection:
        if self._fallback is None:
            self._fallback = self._fallback_engine.connect()
        return self._fallback

    def close(self) -> None:
        try:
            if self._fallback is not None:
                self._fallback.close()
        finally:
            try:
                if self._fairy.is_valid:
                    self._dbapi.autocommit = False  # as the pool hands connections out
            except Exception:
                self._fairy.invalidate()
            finally:
                self._fairy.close()


class RawEngine:
    """Opens :class:`RawConnection` objects on ``engine`` (``fallback``: the SQLAlchemy
    engine, with the same isolation, for what they cannot run)."""

    def __init__(self, engine: Engine, fallback: Engine) -> None:
        self.engine = engine
        self.fallback = fallback

    @property
    def usable(self) -> bool:
        """False while the engine has cursor-execute listeners (they must see every statement)."""
        dispatch = self.engine.dispatch
        return not (dispatch.before_cursor_execute or dispatch.after_cursor_execute)

    @contextmanager
    def connect(self) -> Iterator[RawConnection]:
        raw = RawConnection(self.engine, self.fallback)
        try:
            yield raw
        finally:
            raw.close()


#: What the storage's statements run on: SQLAlchemy's connection or the raw one.
SQLConnection = Connection | RawConnection


def raw_engine(engine: Engine, autocommit: Engine) -> RawEngine | None:
    """The raw path for ``engine`` if it is PostgreSQL on (sync) psycopg 3, else None."""
    dialect = engine.dialect
    if dialect.name != "postgresql" or dialect.driver != "psycopg" or dialect.is_async:
        return None
    return RawEngine(engine, autocommit)
