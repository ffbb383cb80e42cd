"""Listing the sessions of a store: their UIDs, filtered cheaply, a page at a time.

A :class:`~triggers_core.runtime.storage.Storage` object is one session; listing
needs the *store* (a database's tables, a :class:`~triggers_core.runtime.memory.MemoryStore`).
:func:`list_sessions` takes a storage URL and asks the backend registered for
its scheme (``Storage.list_sessions``, a classmethod); :func:`iter_sessions`
follows the pages for you::

    from datetime import UTC, datetime, timedelta
    from triggers_core.tools.listing import SessionFilter, iter_sessions

    stuck = SessionFilter(stale_after=timedelta(hours=1), now=datetime.now(UTC))
    for uid in iter_sessions("sqlite:///triggers.db", stuck):
        ...

Filters (all given ones must hold): the session has an unresolved instance;
has a ``failed`` instance; has a *stale* instance, one ``scheduled`` or
``running`` for longer than ``stale_after`` at ``now`` (the time it entered
that status, from its ``timestamps``: the same rule as
:meth:`~triggers_core.runtime.storage.Storage.get_stale_instances`); its UID
starts with ``uid_prefix`` (a range on an index of the UIDs, so a search
reads only the sessions it finds); has a *lost* run, ``running`` under a lease
expired at ``now`` (found through the store's due index: the cost grows with
the lost runs, not with the sessions; on a backend that keeps no leases,
:class:`~triggers_core.errors.UnsupportedOperationError`).

Pages come in a stable order that is the backend's (not alphabetical); a
page's ``cursor`` is opaque and only means something to the store that made
it (``None``: there is nothing after this page). Memory, every SQL backend and
the key-value backends (memcached, Django's cache: through their session index,
:mod:`triggers_backends.kv.session_index`) list sessions; a backend that keeps
no index of its sessions raises
:class:`~triggers_core.errors.UnsupportedOperationError`. A page of a store
that may evict keys (memcached) has ``may_be_incomplete`` set: sessions may be
missing from it (docs/operations.md says why and how to rebuild the index).

Cost: a page costs what the backend's ``list_sessions`` costs (an indexed
query on SQL); :func:`iter_sessions` asks for one page at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from triggers_core.engine.leases import DueKind
from triggers_core.runtime.registry import open_async_storage, storage_class_for, store_url
from triggers_core.runtime.sessions import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    STALE_STATUSES,
    SessionFilter,
    SessionPage,
    check_page_size,
    is_stale,
    status_since,
)
from triggers_core.runtime.storage import Storage
from triggers_core.tools.recovery import SWEEP_UID

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "LOST_SCAN_LIMIT",
    "MAX_PAGE_SIZE",
    "STALE_STATUSES",
    "SessionFilter",
    "SessionPage",
    "aiter_sessions",
    "alist_sessions",
    "check_page_size",
    "is_stale",
    "iter_sessions",
    "list_sessions",
    "status_since",
    "storage_class",
]


def storage_class(url: str | None) -> tuple[type[Storage], str]:
    """The storage class registered for ``url``'s scheme, and the URL itself.

    ``url`` defaults to ``TRIGGERS_STORAGE_URL``; unlike opening one session,
    listing never falls back to a process-private ``memory://`` store.
    """
    return storage_class_for(url)


def list_sessions(
    url: str | None,
    filter: SessionFilter | None = None,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> SessionPage:
    """One page of the UIDs of the sessions stored at ``url`` that ``filter`` wants.

    Pass the page's ``cursor`` back to get the next page. Raises
    :class:`~triggers_core.errors.UnsupportedOperationError` if the backend
    cannot list its sessions, ``ValueError`` for a bad page size or a cursor
    that did not come from this store.
    """
    cls, url = storage_class(url)
    wanted = filter or SessionFilter()
    if wanted.lost:
        return _lost_page(cls, url, wanted, check_page_size(page_size), cursor)
    return cls.list_sessions(url, wanted, page_size=check_page_size(page_size), cursor=cursor)


#: Due lease entries (expired leases of the whole store) a listing of lost sessions reads.
LOST_SCAN_LIMIT = 10_000
_LOST_CURSOR = "lost:"


def _lost_page(
    cls: type[Storage], url: str, wanted: SessionFilter, page_size: int, cursor: str | None
) -> SessionPage:
    store = cls.from_url(url, SWEEP_UID)
    try:
        return _lost_page_in(store, wanted, page_size, cursor)
    finally:
        store.close()


def _lost_page_in(
    store: Storage, wanted: SessionFilter, page_size: int, cursor: str | None
) -> SessionPage:
    """A page of the sessions with a lost run, found through the store's due index.

    Reads the expired lease entries of the store (at most :data:`LOST_SCAN_LIMIT`;
    past that the page says ``may_be_incomplete``), then, per candidate session
    in UID order, its unresolved instances and the leases of its running ones:
    the cost grows with the lost runs, never with the sessions stored.
    """
    after = None
    if cursor is not None:
        if not cursor.startswith(_LOST_CURSOR):
            raise ValueError(f"not a cursor of a listing of lost sessions: {cursor!r}")
        after = cursor[len(_LOST_CURSOR) :]
    now = wanted.now
    assert now is not None  # SessionFilter checks it
    entries = store.due_entries(DueKind.LEASE, now, limit=LOST_SCAN_LIMIT)
    candidates = sorted(
        {
            entry.session
            for entry in entries
            if wanted.wants_uid(entry.session) and (after is None or entry.session > after)
        }
    )
    found: list[str] = []
    for uid in candidates:
        session = store.session(uid)
        if session.get_lost_instances(now=now) and wanted.matches(
            session.get_unresolved_instances()
        ):
            found.append(uid)
            if len(found) > page_size:
                break
    uids = tuple(found[:page_size])
    more = len(found) > page_size
    return SessionPage(
        uids,
        _LOST_CURSOR + uids[-1] if more else None,
        may_be_incomplete=len(entries) >= LOST_SCAN_LIMIT,
    )


def iter_sessions(
    url: str | None,
    filter: SessionFilter | None = None,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> Iterator[str]:
    """Every wanted session UID at ``url``, fetched a page at a time."""
    cursor: str | None = None
    while True:
        page = list_sessions(url, filter, page_size=page_size, cursor=cursor)
        yield from page.uids
        if page.cursor is None:
            return
        cursor = page.cursor


def _page_in(
    store: Storage, wanted: SessionFilter, page_size: int, cursor: str | None
) -> SessionPage:
    """A page of the sessions of ``store``'s store (for the async face)."""
    if wanted.lost:
        return _lost_page_in(store, wanted, page_size, cursor)
    return store.list_store_sessions(wanted, page_size=page_size, cursor=cursor)


async def alist_sessions(
    url: str | None,
    filter: SessionFilter | None = None,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> SessionPage:
    """:func:`list_sessions` for asyncio code: ``url`` is an async storage URL.

    ``sqlite+aiosqlite://``, ``postgresql+asyncpg://``, ``postgresql+psycopg://``,
    ``mysql+aiomysql://`` or ``memory://name``; the same filters, pages and
    cursors as the synchronous listing (a cursor from one works in the other), the
    same queries, run on the async driver: the event loop is never blocked.
    ``url`` defaults to ``TRIGGERS_STORAGE_URL``, never to a process-private
    ``memory://`` store. The store is opened as any async storage of the URL is:
    an SQLite file gets its tables unless the URL says
    ``triggers_create_schema=false`` (then, as on a server database without them,
    :class:`~triggers_core.errors.SchemaMissingError`). Cost: one page, as
    :func:`list_sessions`.
    """
    wanted = filter or SessionFilter()
    size = check_page_size(page_size)
    store = open_async_storage(store_url(url, "sqlite+aiosqlite:///triggers.db"), SWEEP_UID)
    try:
        return await store.run_with_sync(
            "listing sessions", lambda sync: _page_in(sync, wanted, size, cursor)
        )
    finally:
        await store.aclose()


async def aiter_sessions(
    url: str | None,
    filter: SessionFilter | None = None,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> AsyncIterator[str]:
    """Every wanted session UID at the async storage ``url``, a page at a time
    (``async for uid in aiter_sessions(url): ...``)."""
    cursor: str | None = None
    while True:
        page = await alist_sessions(url, filter, page_size=page_size, cursor=cursor)
        for uid in page.uids:
            yield uid
        if page.cursor is None:
            return
        cursor = page.cursor
