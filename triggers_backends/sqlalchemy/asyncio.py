"""``AsyncSQLAlchemyStorage``: the SQL storage for asyncio, on SQLAlchemy's asyncio extension.

URLs: ``sqlite+aiosqlite:///path/to/file.db``, ``postgresql+asyncpg://user@host/db``,
``postgresql+psycopg://user@host/db`` (psycopg 3 in its async mode) and
``mysql+aiomysql://user@host/db`` (or ``mariadb+aiomysql://``), with
the ``triggers_*`` options of the sync storage
(:meth:`~triggers_backends.sqlalchemy.SQLAlchemyStorage.from_url`). The drivers
come with the ``async`` extra: ``pip install -e '.[async]'`` in a checkout.

Nothing is decided or written twice: each call runs the sync storage's own
code (:class:`~triggers_backends.sqlalchemy.SQLAlchemyStorage`: the same
statements, transactions, isolation levels, errors and stored format, in the
same tables) on the sync face of an async engine, in a greenlet
(``sqlalchemy.util.greenlet_spawn``, the bridge under
``AsyncConnection.run_sync``): where the sync code waits for the database the
greenlet hands the driver's coroutine to the event loop, so the loop is never
blocked. A session written by one storage is read, and compare-and-swapped,
by the other. One difference: a load reads every latest kwargs value of the
session in its snapshot (the sync storage reads one when an operation asks
for it, which here would happen outside the greenlet): one more statement
for a session that has latest kwargs.

Engines: storages opened from the same URL share one engine (one pool) *per
event loop*: connections of asyncpg and aiosqlite belong to the loop that
opened them, so a second loop (a second ``asyncio.run``) opens its own, and
the engines of a loop found closed are dropped. :meth:`AsyncSQLAlchemyStorage.aclose`
releases a storage's hold on its engine and disposes the engine when the last
storage using it in this loop lets go; :func:`dispose_async_engines` closes
every engine of the running loop (e.g. at application shutdown).

Bounds: the URL's ``triggers_connect_timeout``, ``triggers_lock_timeout`` and
``triggers_statement_timeout`` are set on the server as for the sync storage
(PostgreSQL ``statement_timeout``, ``lock_timeout``,
``idle_in_transaction_session_timeout``; SQLite ``busy_timeout``), and each
call is bounded on the client by the loop (connect plus statement timeout:
a server that stops answering is a :class:`~triggers_core.errors.StorageError`
naming the option) instead of the sync storage's watchdog thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Coroutine
from datetime import datetime
from typing import Any, ClassVar, TypeVar

import attrs
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool
from sqlalchemy.util import greenlet_spawn

from triggers_backends.sqlalchemy._engines import (
    URL_CREATE_OPTION,
    engine_options,
    normalize_url,
    prepare_engine,
    shared_engine,
    synchronous_level,
)
from triggers_backends.sqlalchemy._errors import describe, public_url, url_secrets
from triggers_backends.sqlalchemy._storage import (
    SQLAlchemyStorage,
    storage_reference,
    store_identity_of,
    url_options,
)
from triggers_backends.sqlalchemy._tables import DEFAULT_TABLE_PREFIX
from triggers_backends.sqlalchemy._timeouts import (
    CONNECT_OPTION,
    STATEMENT_OPTION,
    Timeouts,
    install,
    timeouts_of,
)
from triggers_core.engine.leases import DueKind
from triggers_core.engine.scopes import HEADER_ONLY, Changes, Scope, Selector
from triggers_core.engine.sizes import DEFAULT_MAX_VALUE_BYTES, check_value_limit
from triggers_core.engine.state import SessionState
from triggers_core.errors import RegistryError, StorageError, StorageURLError, install_extra_hint
from triggers_core.runtime.async_storage import AsyncStorage
from triggers_core.runtime.async_sweeper import AsyncStoreSweeper
from triggers_core.runtime.redaction import redact
from triggers_core.runtime.registry import sync_twin_url
from triggers_core.runtime.storage import DueRef, Snapshot, Storage, Version

__all__ = ["ASYNC_DRIVERS", "INSTALL_HINT", "AsyncSQLAlchemyStorage", "dispose_async_engines"]

T = TypeVar("T")

#: What to install for the async drivers.
INSTALL_HINT = install_extra_hint("async")

#: The async drivers this storage knows how to bound (backend -> driver -> its module).
ASYNC_DRIVERS = {
    "sqlite": {"aiosqlite": "aiosqlite"},
    "postgresql": {"asyncpg": "asyncpg", "psycopg": "psycopg"},
    "mysql": {"aiomysql": "aiomysql"},
    "mariadb": {"aiomysql": "aiomysql"},
}


def _supported() -> str:
    return ", ".join(
        f"{backend}+{driver}://" for backend, drivers in ASYNC_DRIVERS.items() for driver in drivers
    )


class _Bridged(SQLAlchemyStorage):
    """The sync storage as an async one runs it: inside a greenlet, on an async engine's
    sync face. Its retries wait on the loop, and its loads read the latest kwargs in
    their snapshot (a value asked for later would be read outside the greenlet)."""

    eager_latest: ClassVar[bool] = True

    def _pause(self, seconds: float) -> None:
        await_(asyncio.sleep(seconds))


def _await_function() -> Callable[[Any], Any]:
    # SQLAlchemy 2.1 names it await_; 2.0 await_only.
    module = importlib.import_module("sqlalchemy.util")
    found: Callable[[Any], Any] = getattr(module, "await_", None) or module.await_only
    return found


await_ = _await_function()


@attrs.define(eq=False)
class _Shared:
    """An engine of one loop, and how many storages hold it."""

    engine: AsyncEngine
    holders: int = 0


@attrs.define(eq=False)
class _LoopEngines:
    """The engines opened in one event loop, and what closes them when the loop ends."""

    engines: dict[str, _Shared] = attrs.field(factory=dict)
    #: Suspended in the loop; the loop's ``shutdown_asyncgens`` (``asyncio.run`` calls
    #: it before closing the loop) closes it, disposing the engines while the loop runs.
    closer: AsyncGenerator[None, None] | None = None


#: Per event loop: engine key (its URL with the password and options) -> the engine.
_LOOP_ENGINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopEngines] = (
    weakref.WeakKeyDictionary()
)


async def _closer(
    owner: asyncio.AbstractEventLoop, engines: dict[str, _Shared]
) -> AsyncGenerator[None, None]:
    """Waits at its ``yield`` for the end of the loop ``owner``, then disposes ``engines``."""
    try:
        yield
    finally:
        found = list(engines.values())
        engines.clear()
        try:
            running = asyncio.get_running_loop() is owner and not owner.is_closed()
        except RuntimeError:
            running = False
        for shared in found:
            if running:
                with contextlib.suppress(Exception):
                    await shared.engine.dispose()
            else:  # the loop is gone: its connections can only be forgotten
                shared.engine.sync_engine.dispose(close=False)


#: Guards :data:`_LOOP_ENGINES` (loops in several threads); each loop's own engines
#: are only touched from its thread.
_LOOP_ENGINES_LOCK = threading.Lock()


async def _engines_of(loop: asyncio.AbstractEventLoop) -> dict[str, _Shared]:
    """The engines of ``loop`` (the running one), its closer started on first use."""
    _forget_closed_loops()
    with _LOOP_ENGINES_LOCK:
        state = _LOOP_ENGINES.get(loop)
        fresh = state is None
        if state is None:
            state = _LOOP_ENGINES[loop] = _LoopEngines()
    if fresh:
        closer = _closer(loop, state.engines)
        await closer.__anext__()  # first iterated in this loop: the loop finalizes it
        state.closer = closer
    return state.engines


def _forget_closed_loops() -> None:
    """Engines of loops closed without ``shutdown_asyncgens``: forget their connections."""
    with _LOOP_ENGINES_LOCK:
        closed = [_LOOP_ENGINES.pop(loop) for loop in list(_LOOP_ENGINES) if loop.is_closed()]
    for state in closed:
        if state.closer is not None:
            step = state.closer.aclose()
            with contextlib.suppress(StopIteration, RuntimeError):
                step.send(None)  # runs its finally: nothing there awaits for a closed loop
            step.close()


#: The connections an engine of a URL keeps (SQLAlchemy's default maximum, 5 + 10
#: overflow, all of them kept): under asyncio, connections handed back in one turn of
#: the loop pile up in the pool's queue before the coroutines waiting for them run, so
#: with overflow the pool closes connections that waiters then open again (issue 27's
#: benchmark saw 56 connections opened for 15 slots, each an SSL probe and a login).
POOL_SIZE = 15


def _create(url: URL, timeouts: Timeouts) -> AsyncEngine:
    """An async engine bounded by ``timeouts`` (as ``shared_engine`` makes a sync one)."""
    url, kwargs = engine_options(url, timeouts)
    pool_class = getattr(url.get_dialect(_is_async=True), "get_pool_class", None)
    if pool_class is not None and issubclass(pool_class(url), QueuePool):  # not :memory:
        kwargs.update(pool_size=POOL_SIZE, max_overflow=0)
    problem = None
    try:
        engine = create_async_engine(url, **kwargs)
    except sa_exc.ArgumentError as exc:
        problem = f"{type(exc).__name__}: {redact(str(exc), secrets=url_secrets(url))}"
    if problem is not None:
        raise StorageURLError(
            f"SQLAlchemy cannot use the storage URL {public_url(url)!r}: {problem}"
        )
    install(engine.sync_engine, timeouts, watchdog=False)  # the loop bounds each call
    prepare_engine(engine.sync_engine)
    return engine


#: After the bound ran out: how long a cancelled call may clean up before it is
#: cancelled again (psycopg asks the server to cancel the query, for up to 5 s, and
#: closes the connection at once when interrupted again), and how many times.
CANCEL_GRACE = 0.25
CANCEL_ROUNDS = 8


class _Expired(Exception):
    """Internal: a storage call ran out of its bound (and was cancelled)."""


async def _bounded(call: Coroutine[Any, Any, T], timeouts: Timeouts) -> T:
    """``call`` within connect plus statement timeout; cancelled (again if need be) past it."""
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeouts.connect + timeouts.statement)
    except asyncio.CancelledError:
        task.cancel()  # the caller was cancelled: so is its call
        raise
    if done:
        return task.result()
    for _ in range(CANCEL_ROUNDS):
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=CANCEL_GRACE)
        if done:
            break
    if task.done() and not task.cancelled():
        task.exception()  # seen: whatever it raised is reported as the bound running out
    raise _Expired()


#: The top-level modules whose errors are a driver's (see _from_driver).
_DRIVER_MODULES = frozenset({"asyncpg", "psycopg", "aiosqlite", "sqlite3", "aiomysql", "pymysql"})


def _from_driver(exc: BaseException) -> bool:
    """Raised by a database driver (or the network under it), not by a bug of ours."""
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    module = type(exc).__module__
    return module.split(".", 1)[0] in _DRIVER_MODULES


def _check_driver(url: URL) -> None:
    """Refuse a URL whose driver is not async (or not installed), naming what to use."""
    backend, driver = url.get_backend_name(), url.get_driver_name()
    module = ASYNC_DRIVERS.get(backend, {}).get(driver)
    if module is None:
        raise StorageURLError(
            f"the async SQL storage cannot use {public_url(url)!r}: it needs one of the "
            f"async drivers {_supported()} (a sync URL is opened by the sync "
            "SQLAlchemyStorage and TriggerManager)"
        )
    for name in ("greenlet", module):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            hint = install_extra_hint("async,postgres") if name == "psycopg" else INSTALL_HINT
            raise RegistryError(
                f"storage URL {public_url(url)!r} needs the module {name!r}, which is not "
                f"installed: {hint}"
            ) from exc


async def dispose_async_engines() -> None:
    """Close every engine the async storages opened from URLs in the running loop.

    The loop's background sweepers (:class:`~triggers_core.runtime.async_sweeper.AsyncStoreSweeper`)
    are stopped first, and waited for, so none is cut off in the middle of a query;
    a manager built afterwards starts one again. Storages opened from those URLs
    keep working (a disposed engine opens new connections when used again), but
    no longer share an engine with storages opened afterwards.
    """
    await AsyncStoreSweeper.stop_all()
    with _LOOP_ENGINES_LOCK:
        state = _LOOP_ENGINES.pop(asyncio.get_running_loop(), None)
    if state is not None and state.closer is not None:
        await state.closer.aclose()


class AsyncSQLAlchemyStorage(AsyncStorage):
    """One session in the SQL tables of :class:`~triggers_backends.sqlalchemy.SQLAlchemyStorage`,
    reached with coroutines (see :mod:`triggers_backends.sqlalchemy.asyncio`).

    ``engine_or_url`` is an :class:`~sqlalchemy.ext.asyncio.AsyncEngine` (yours:
    use it in one event loop, dispose it yourself) or a URL (one engine per URL
    and event loop, shared). The other arguments are the sync storage's.
    """

    backend_name: ClassVar[str] = "sqlalchemy"
    schema_url_option: ClassVar[str | None] = URL_CREATE_OPTION

    def __init__(
        self,
        uid: str,
        engine_or_url: AsyncEngine | str | URL,
        *,
        table_prefix: str = DEFAULT_TABLE_PREFIX,
        create_schema: bool = False,
        sqlite_synchronous: str = "full",
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        super().__init__(uid)
        self.max_value_bytes = check_value_limit(max_value_bytes)
        self.sqlite_synchronous = synchronous_level(sqlite_synchronous)
        self.table_prefix = table_prefix
        self._create_schema = create_schema
        self._engine: AsyncEngine | None = None
        self._key = ""
        #: The URL as opened (its timeouts included), for session().
        self._source: URL | None = None
        if isinstance(engine_or_url, AsyncEngine):
            self._engine = engine_or_url
            self._url = engine_or_url.url
            self._timeouts = timeouts_of(engine_or_url.sync_engine)
        else:
            url = normalize_url(url_options(engine_or_url).url)
            _check_driver(url)
            self._source = url
            query = dict(url.query)
            self._timeouts = Timeouts.pop_from(query)
            self._key = url.render_as_string(hide_password=False)  # a key, never shown
            self._url = url.set(query=query)
        self._label = f"sqlalchemy/{self._url.get_backend_name()}"
        self._twin: SQLAlchemyStorage | None = None
        self._delegates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Bridged] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def from_url(cls, url: str, uid: str) -> AsyncSQLAlchemyStorage:
        """Open ``uid`` from a URL; the options are those of ``SQLAlchemyStorage.from_url``."""
        options = url_options(url)
        return cls(
            uid,
            options.url,
            table_prefix=options.table_prefix,
            create_schema=options.create_schema,
            sqlite_synchronous=options.sqlite_synchronous,
            max_value_bytes=options.max_value_bytes,
        )

    # -- the bridge ---------------------------------------------------------------------

    async def _engine_here(self, loop: asyncio.AbstractEventLoop) -> _Shared | None:
        """The URL's engine in ``loop`` (None: the engine passed in)."""
        if self._engine is not None:
            return None
        engines = await _engines_of(loop)
        shared = engines.get(self._key)
        if shared is None:
            timeouts = self._timeouts if self._timeouts is not None else Timeouts()
            shared = engines[self._key] = _Shared(_create(self._url, timeouts))
        return shared

    async def _delegate(self) -> _Bridged:
        """The sync storage this one runs in the running loop (made on first use)."""
        loop = asyncio.get_running_loop()
        found = self._delegates.get(loop)
        if found is None:
            shared = await self._engine_here(loop)
            engine = self._engine if shared is None else shared.engine
            assert engine is not None
            # Held from now on, before the next await: another storage of the URL that
            # lets go meanwhile must not dispose the engine this one is about to use.
            if shared is not None:
                shared.holders += 1
            try:
                made = await self._call(
                    "opening the storage",
                    _Bridged,
                    self.uid,
                    engine.sync_engine,
                    table_prefix=self.table_prefix,
                    create_schema=self._create_schema,
                    sqlite_synchronous=self.sqlite_synchronous,
                    max_value_bytes=self.max_value_bytes,
                )
            except BaseException:
                if shared is not None:
                    await self._let_go(loop, shared)
                raise
            found = self._delegates.setdefault(loop, made)
            if found is not made and shared is not None:  # a concurrent first use won
                await self._let_go(loop, shared)
        return found

    async def _call(self, doing: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run the sync storage's ``fn`` in a greenlet, within the URL's bounds.

        The sync code turns SQLAlchemy's errors into storage errors; what an async
        driver raises past SQLAlchemy (asyncpg's refused connection, its own
        timeouts) becomes one here, as does the loop's bound running out.
        """
        timeouts = self._timeouts
        problem = None
        try:
            if timeouts is None:  # the engine is not Triggers': its owner bounds it
                return await greenlet_spawn(fn, *args, **kwargs)
            return await _bounded(greenlet_spawn(fn, *args, **kwargs), timeouts)
        except _Expired:
            problem = "the database did not answer in time"
        except Exception as exc:
            if not _from_driver(exc):
                raise
            if isinstance(exc, TimeoutError):  # the driver's own bound (asyncpg's)
                problem = "the database did not answer in time"
            else:
                problem = describe(exc, self._url)
        if timeouts is not None:
            problem = (
                f"{problem} (the bounds: {CONNECT_OPTION}={timeouts.connect:g} plus "
                f"{STATEMENT_OPTION}={timeouts.statement:g} in the URL)"
            )
        # Raised outside the except block: no driver internals chained to it (its
        # message, redacted, is in this one).
        raise StorageError(
            f"{doing} failed on {public_url(self._url)}: {problem}",
            backend=self._label,
            session=self.uid,
        )

    # -- the port -----------------------------------------------------------------------

    async def load(self, scope: Scope | Selector = HEADER_ONLY) -> Snapshot:
        storage = await self._delegate()
        return await self._call("load", storage.load, scope)

    async def load_full(self) -> Snapshot:
        storage = await self._delegate()
        return await self._call("load", storage.load_full)

    async def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        storage = await self._delegate()
        return await self._call(
            "compare_and_swap", storage.compare_and_swap, expected, state, changes
        )

    async def check_fire_keys(self) -> None:
        storage = await self._delegate()
        await self._call("checking the fire keys table", storage.check_fire_keys)

    async def bind_transaction(self, session: object) -> Any:
        """``session`` (an ``AsyncSession``, or what ``async with transaction(conn)``
        yields) bound to this storage: the transactional fire of the async manager
        (docs/transactions.md). ValueError when it is on another database."""
        from triggers_backends.sqlalchemy._async_transactional import (  # noqa: PLC0415
            async_bind,
        )

        return await async_bind(await self._delegate(), session)

    async def check_leases(self) -> None:
        storage = await self._delegate()
        await self._call("checking the due table", storage.check_leases)

    async def renew_lease(self, name: str, owner: str, expires: datetime) -> bool:
        storage = await self._delegate()
        return await self._call("renew_lease", storage.renew_lease, name, owner, expires)

    async def claim_lease(self, name: str, owner: str, seen: datetime, until: datetime) -> bool:
        storage = await self._delegate()
        return await self._call("claim_lease", storage.claim_lease, name, owner, seen, until)

    async def forget_due(self, name: str, kind: DueKind, seen: datetime) -> bool:
        storage = await self._delegate()
        return await self._call("forget_due", storage.forget_due, name, kind, seen)

    async def get_lease(self, name: str) -> DueRef | None:
        storage = await self._delegate()
        return await self._call("get_lease", storage.get_lease, name)

    async def due_entries(self, kind: DueKind, before: datetime, *, limit: int) -> list[DueRef]:
        storage = await self._delegate()
        return await self._call("due_entries", storage.due_entries, kind, before, limit=limit)

    async def run_with_sync(self, doing: str, fn: Callable[[Storage], T]) -> T:
        """``fn`` with the synchronous storage of this session, in a greenlet over the async
        engine (each query awaited on the loop, within the URL's bounds)."""
        storage = await self._delegate()
        return await self._call(doing, fn, storage)

    async def delete(self) -> None:
        """Remove this session (as ``SQLAlchemyStorage.delete``)."""
        storage = await self._delegate()
        await self._call("delete", storage.delete)

    async def aclose(self) -> None:
        """Let go of this loop's engine; the last storage opened from its URL disposes it.

        An engine passed in is the caller's, and is left alone. The storage may
        be used again afterwards (it takes an engine again).
        """
        loop = asyncio.get_running_loop()
        if self._delegates.pop(loop, None) is None or self._engine is not None:
            return
        with _LOOP_ENGINES_LOCK:
            state = _LOOP_ENGINES.get(loop)
        shared = None if state is None else state.engines.get(self._key)
        if shared is not None:
            await self._let_go(loop, shared)

    async def _let_go(self, loop: asyncio.AbstractEventLoop, shared: _Shared) -> None:
        """Give back one hold of ``shared``; the last one disposes the engine."""
        shared.holders -= 1
        if shared.holders > 0:
            return
        with _LOOP_ENGINES_LOCK:
            state = _LOOP_ENGINES.get(loop)
        if state is not None and state.engines.get(self._key) is shared:
            del state.engines[self._key]
        await shared.engine.dispose()

    # -- naming -------------------------------------------------------------------------

    def session(self, uid: str) -> AsyncSQLAlchemyStorage:
        """Session ``uid`` in the same tables, sharing this storage's engine (in each loop)."""
        source = self._engine if self._engine is not None else self._source
        assert source is not None  # one of the two, set by __init__
        return AsyncSQLAlchemyStorage(
            uid,
            source,
            table_prefix=self.table_prefix,
            sqlite_synchronous=self.sqlite_synchronous,
            max_value_bytes=self.max_value_bytes,
        )

    def sync_twin(self) -> Storage:
        """The sync :class:`~triggers_backends.sqlalchemy.SQLAlchemyStorage` of this session.

        Opened (once, on the shared engine of the synchronous URL:
        :func:`~triggers_core.runtime.registry.sync_twin_url`, credentials and
        ``triggers_*`` options kept) on the same tables: a synchronous runner
        (threading) reads and writes through it, and a Celery message names it
        by its reference, which is that of the sync URL a worker is configured
        with. Never creates tables. A storage on an engine passed in (no URL to
        open again) only names its store (the default).
        """
        if self._source is None:
            return super().sync_twin()
        if self._twin is None:
            twin_url = sync_twin_url(self._source.render_as_string(hide_password=False))
            self._twin = SQLAlchemyStorage(
                self.uid,
                shared_engine(twin_url),
                table_prefix=self.table_prefix,
                sqlite_synchronous=self.sqlite_synchronous,
                max_value_bytes=self.max_value_bytes,
            )
        return self._twin

    def reference(self) -> str:
        """The URL without the password, plus non-default ``triggers_*`` options
        (as ``SQLAlchemyStorage.reference``: the same string for the same store)."""
        return storage_reference(
            self._url,
            self._timeouts,
            table_prefix=self.table_prefix,
            sqlite_synchronous=self.sqlite_synchronous,
            max_value_bytes=self.max_value_bytes,
        )

    def store_identity(self) -> object | None:
        """The database (its URL, password left out) and the table prefix: a key, never shown."""
        return store_identity_of(self._url, self.table_prefix)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} uid={self.uid!r} at {self.reference()}>"
