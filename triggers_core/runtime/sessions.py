"""What a listing of sessions asks and returns: the values beside the storage port.

:class:`SessionFilter` (which sessions a listing wants) and
:class:`SessionPage` (one page of UIDs and the cursor to the next) are what
:meth:`~triggers_core.runtime.storage.Storage.list_sessions` takes and returns;
:func:`is_stale` is the one rule of a stuck instance that the filter, the
storages and the tools share. The functions that list a store by URL are in
:mod:`triggers_core.tools.listing`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime, timedelta

import attrs

from triggers_core.engine.state import RESOLVED_STATUSES, Status, TaskInstance

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "STALE_STATUSES",
    "SessionFilter",
    "SessionPage",
    "check_page_size",
    "is_stale",
    "prefix_upper_bound",
    "status_since",
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


def _check_prefix(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"uid_prefix must be a string, got {value!r}")
    if "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ValueError(f"uid_prefix {value!r} has a NUL or a lone surrogate: no UID has one")
    return value


def prefix_upper_bound(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix``, in code-point order.

    ``uid >= prefix and uid < bound`` is a range an index on the UID answers
    (code-point order is the byte order of UTF-8, so SQLite's and a binary
    collation's too). None: no bound (``prefix`` is empty or only U+10FFFF).
    Lone surrogates are skipped: no UID holds one.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            following = last + 1
            if 0xD800 <= following <= 0xDFFF:
                following = 0xE000
            return "".join(chars) + chr(following)
    return None


@attrs.frozen
class SessionFilter:
    """Which sessions to list; every filter given must hold (no filter: every session).

    ``stale_after`` needs ``now`` (timezone-aware): the library has no clock.
    ``uid_prefix`` keeps the sessions whose UID starts with it (exactly: case,
    spaces and every character count); backends answer it from an index on the
    UID (a range query; the key-value backends check the lines of their session
    index), never by reading every session.
    """

    #: The session has an instance that is not finished, skipped, replayed or abandoned.
    unresolved: bool = False
    #: The session has a ``failed`` instance.
    failed: bool = False
    #: The session has an instance ``scheduled``/``running`` for longer than this.
    stale_after: timedelta | None = attrs.field(default=None, converter=_check_duration)
    #: The time ``stale_after`` is measured at.
    now: datetime | None = None
    #: The session's UID starts with this ("": any UID).
    uid_prefix: str = attrs.field(default="", converter=_check_prefix)
    #: The session has a *lost* run: ``running`` under a lease expired at ``now``
    #: (its worker died and no sweeper took it over yet). Answered from the
    #: store's due index by :func:`triggers_core.tools.listing.list_sessions`.
    lost: bool = False
    #: The session has an ``expired`` instance (a ``within`` window closed before
    #: its ``after`` condition completed).
    expired: bool = False

    def __attrs_post_init__(self) -> None:
        if self.now is not None and (self.now.tzinfo is None or self.now.utcoffset() is None):
            raise ValueError(f"now must be a timezone-aware datetime, got naive {self.now!r}")
        if self.stale_after is not None and self.now is None:
            raise ValueError("stale_after needs now (the time staleness is measured at)")
        if self.lost and self.now is None:
            raise ValueError("lost needs now (the time leases are checked at)")

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
        if self.lost:
            wanted.append(frozenset({Status.RUNNING}))
        if self.expired:
            wanted.append(frozenset({Status.EXPIRED}))
        return tuple(wanted)

    def wants_uid(self, uid: str) -> bool:
        """True if ``uid`` passes ``uid_prefix`` (the check after a backend's range query)."""
        return uid.startswith(self.uid_prefix)

    def matches(self, unresolved: Iterable[TaskInstance]) -> bool:
        """True if a session whose unresolved instances are ``unresolved`` is wanted.

        Every filter is about unresolved instances, so nothing else is needed,
        but for ``lost``: here only a ``running`` instance is asked for (whether
        its lease expired needs the lease records, which the listing checks);
        and for ``expired``, a resolved status: with that filter the backend
        passes the session's ``expired`` instances too.
        """
        instances = list(unresolved)
        if self.unresolved and not any(not i.is_resolved for i in instances):
            return False
        if self.failed and not any(i.status is Status.FAILED for i in instances):
            return False
        if self.lost and not any(i.status is Status.RUNNING for i in instances):
            return False
        if self.expired and not any(i.status is Status.EXPIRED for i in instances):
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
    #: True if the store may have lost part of its index of sessions (a cache that
    #: evicts keys, such as memcached): sessions may be missing from the listing.
    may_be_incomplete: bool = attrs.field(default=False, kw_only=True)


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
