"""Listing the sessions of a store: their UIDs, filtered cheaply, a page at a time.

A :class:`~triggers_core.storage.Storage` object is one session; listing
needs the *store* (a database's tables, a :class:`~triggers_core.memory.MemoryStore`).
:func:`list_sessions` takes a storage URL and asks the backend registered for
its scheme (``Storage.list_sessions``, a classmethod); :func:`iter_sessions`
follows the pages for you::

    from datetime import UTC, datetime, timedelta
    from triggers_core.listing import SessionFilter, iter_sessions

    stuck = SessionFilter(stale_after=timedelta(hours=1), now=datetime.now(UTC))
    for uid in iter_sessions("sqlite:///triggers.db", stuck):
        ...

Filters (all given ones must hold): the session has an unresolved instance;
has a ``failed`` instance; has a *stale* instance, one ``scheduled`` or
``running`` for longer than ``stale_after`` at ``now`` (the time it entered
that status, from its ``timestamps``: the same rule as
:meth:`~triggers_core.storage.Storage.get_stale_instances`).

Pages come in a stable order that is the backend's (not alphabetical); a
page's ``cursor`` is opaque and only means something to the store that made
it (``None``: there is nothing after this page). Memory and every SQL backend
list sessions; a backend that keeps no index of its sessions (memcached has no
way to list keys) raises
:class:`~triggers_core.errors.UnsupportedOperationError`.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import attrs

from triggers_core.errors import RegistryError
from triggers_core.redaction import redact
from triggers_core.registry import STORAGE_URL_ENV, storage_scheme, storages
from triggers_core.state import RESOLVED_STATUSES, Status, TaskInstance

if TYPE_CHECKING:
    from triggers_core.storage import Storage

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "STALE_STATUSES",
    "SessionFilter",
    "SessionPage",
    "check_page_size",
    "is_stale",
    "iter_sessions",
    "list_sessions",
    "status_since",
    "storage_class",
]

#: Sessions per page unless told otherwise, and the most a page may hold.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

#: The statuses in which an instance can be stuck (a lost message, a killed worker).
STALE_STATUSES = frozenset({Status.SCHEDULED, Status.RUNNING})


def status_since(instance: TaskInstance) -> datetime | None:
    """When the instance entered its current status (from ``timestamps``), if recorded."""
    stamp = instance.metadata.get("timestamps", {}).get(instance.status.value)
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp)
    except ValueError:
        return None


def is_stale(
    instance: TaskInstance,
    older_than: timedelta,
    *,
    now: datetime,
    statuses: Collection[Status] = STALE_STATUSES,
) -> bool:
    """True if ``instance`` has been in one of ``statuses`` for longer than ``older_than``."""
    if instance.status not in statuses:
        return False
    since = status_since(instance)
    return since is not None and since <= now - older_than


def _check_duration(value: object) -> timedelta | None:
    if value is None:
        return None
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise ValueError(f"stale_after must be a timedelta >= 0, got {value!r}")
    return value


@attrs.frozen
class SessionFilter:
    """Which sessions to list; every filter given must hold (no filter: every session).

    ``stale_after`` needs ``now`` (timezone-aware): the library has no clock.
    """

    #: The session has an instance that is not finished, skipped, replayed or abandoned.
    unresolved: bool = False
    #: The session has a ``failed`` instance.
    failed: bool = False
    #: The session has an instance ``scheduled``/``running`` for longer than this.
    stale_after: timedelta | None = attrs.field(default=None, converter=_check_duration)
    #: The time ``stale_after`` is measured at.
    now: datetime | None = None

    def __attrs_post_init__(self) -> None:
        if self.now is not None and (self.now.tzinfo is None or self.now.utcoffset() is None):
            raise ValueError(f"now must be a timezone-aware datetime, got naive {self.now!r}")
        if self.stale_after is not None and self.now is None:
            raise ValueError("stale_after needs now (the time staleness is measured at)")

    @property
    def statuses(self) -> tuple[frozenset[Status], ...]:
        """Per filter given, the statuses of which the session needs an instance.

        Backends turn each into one indexed condition; ``stale_after`` then
        needs the check of :meth:`matches` on the candidates.
        """
        wanted: list[frozenset[Status]] = []
        if self.unresolved:
            wanted.append(frozenset(Status) - RESOLVED_STATUSES)
        if self.failed:
            wanted.append(frozenset({Status.FAILED}))
        if self.stale_after is not None:
            wanted.append(STALE_STATUSES)
        return tuple(wanted)

    def matches(self, unresolved: Iterable[TaskInstance]) -> bool:
        """True if a session whose unresolved instances are ``unresolved`` is wanted.

        Every filter is about unresolved instances, so nothing else is needed.
        """
        instances = list(unresolved)
        if self.unresolved and not any(not i.is_resolved for i in instances):
            return False
        if self.failed and not any(i.status is Status.FAILED for i in instances):
            return False
        if self.stale_after is not None:
            assert self.now is not None
            return any(is_stale(i, self.stale_after, now=self.now) for i in instances)
        return True


@attrs.frozen
class SessionPage:
    """One page of session UIDs, and the cursor of the next page (None: this is the last)."""

    uids: tuple[str, ...]
    cursor: str | None = None


def check_page_size(page_size: object) -> int:
    """``page_size`` if it is an integer from 1 to :data:`MAX_PAGE_SIZE`, else ValueError."""
    if (
        not isinstance(page_size, int)
        or isinstance(page_size, bool)
        or not 1 <= page_size <= MAX_PAGE_SIZE
    ):
        raise ValueError(
            f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}, got {page_size!r}"
        )
    return page_size


def storage_class(url: str | None) -> tuple[type[Storage], str]:
    """The storage class registered for ``url``'s scheme, and the URL itself.

    ``url`` defaults to ``TRIGGERS_STORAGE_URL``; unlike opening one session,
    listing never falls back to a process-private ``memory://`` store.
    """
    if url is None:
        url = os.environ.get(STORAGE_URL_ENV)
        if not url:
            raise RegistryError(
                f"no storage URL given and {STORAGE_URL_ENV} is not set "
                "(e.g. sqlite:///triggers.db)"
            )
    scheme = storage_scheme(url)
    try:
        return storages.load(scheme), url
    except RegistryError as exc:
        raise RegistryError(
            f"{exc} (storage URL {redact(url)!r}; known schemes: {', '.join(storages.names())})"
        ) from exc


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
    return cls.list_sessions(
        url, filter or SessionFilter(), page_size=check_page_size(page_size), cursor=cursor
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
