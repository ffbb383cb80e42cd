"""Listing the sessions of a key-value store, through its session index.

:class:`ListingStorage` is the part of
:class:`~triggers_backends.kv.storage.KeyValueStorage` that files sessions in the
session index (:mod:`~triggers_backends.kv.session_index`) and lists them a page
at a time, with the filters of :class:`~triggers_core.runtime.sessions.SessionFilter`.

Cost of a page: the index is read in order, 64 slots (a few thousand UIDs) per
round trip; ``uid_prefix`` is checked on the index line, before anything else
is read. Every candidate then costs one batched read of active documents (one
round trip per page's worth of candidates): a line whose session is gone, or
was created again since, is skipped. With a status filter (``unresolved``,
``failed``, ``stale_after``) a candidate with no unresolved instance is decided
from its active document alone; any other is loaded with its unresolved
instances (the same read as ``get_unresolved_instances``: the header and the
index pages and instance documents of its unresolved instances); with
``expired`` (a resolved status) every candidate is read whole (O(its
history)); one that cannot be read (damaged, or part of it evicted) is listed, for an operator to
inspect. So a page
reads as many sessions as it must examine to fill up: few when most sessions
match, every session of the store when none does (there is no index by
status, so that no write pays for one). Pages are full unless they are the last.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable

from triggers_backends.kv.active import Active
from triggers_backends.kv.commit import Commit
from triggers_backends.kv.documents import decode
from triggers_backends.kv.keys import SessionKeys
from triggers_backends.kv.leases import LeaseStorage
from triggers_backends.kv.session_index import (
    IndexLine,
    SessionIndex,
    client_evicts,
    line_of,
    parse_cursor,
    shard_of,
)
from triggers_backends.kv_client import KeyValueError
from triggers_core.engine.serialization import loads
from triggers_core.errors import SerializationError, StorageError, UnsupportedOperationError
from triggers_core.runtime.sessions import SessionFilter, SessionPage

__all__ = ["STORE_UID", "ListingStorage"]

#: The UID of the storage object a listing by URL opens (it reads no session of its own).
STORE_UID = "-"
#: Candidates checked per batched read of active documents, at most.
CHECK_BATCH = 200


class ListingStorage(LeaseStorage):
    """The session index and listings of a key-value store (see the module docstring)."""

    _session_index: SessionIndex | None

    def session(self, uid: str) -> ListingStorage:
        """A storage of session ``uid`` of the same store (sharing client and caches)."""
        raise NotImplementedError

    @property
    def _sessions(self) -> SessionIndex:
        """The session index of the store."""
        index = self._session_index
        if index is None:
            index = SessionIndex(self.client, self.keys.prefix, self.store_identity())
            self._session_index = index
        return index

    def _file_session(self, commit: Commit) -> int:
        """File this session in the session index before ``commit``'s swap; the slot, which
        is recorded in the commit's active document."""
        slot = self._call(
            "filing the session in the session index",
            self._sessions.file,
            self.uid,
            commit.active.epoch,
            shard_of(self.keys.session),
            commit.limit,
        )
        commit.active = dataclasses.replace(commit.active, listed=slot)
        return slot

    def _unfile(self, epoch: str, slot: int) -> None:
        """Remove a line filed for a commit that did not happen (best effort: a line left
        behind is never listed, see :mod:`~triggers_backends.kv.session_index`)."""
        index = self._sessions
        key = index.slot_key(shard_of(self.keys.session), slot)
        with contextlib.suppress(KeyValueError):
            index._remove_from(key, line_of(self.uid, epoch))

    def _unlist(self, active: Active) -> None:
        """Remove the session whose active document was ``active`` from the index."""
        if active.epoch:
            self._call(
                "removing the session from the session index",
                self._sessions.remove,
                self.uid,
                active.epoch,
                shard_of(self.keys.session),
                active.listed,
            )

    # -- listing ----------------------------------------------------------------------

    def list_store(
        self, filter: SessionFilter, *, page_size: int, cursor: str | None
    ) -> SessionPage:
        """One page of the sessions of this storage's store that ``filter`` wants.

        Pass the page's cursor back for the next page. The page's
        ``may_be_incomplete`` is True on a store that may evict keys (the index
        may have lost some: see :meth:`rebuild_session_index`). Cost: see the
        module docstring.
        """
        after = parse_cursor(cursor)
        uids: list[str] = []
        batch: list[IndexLine] = []
        last: IndexLine | None = None

        def check() -> bool:
            nonlocal last
            for line in self._wanted(batch, filter):
                uids.append(line.uid)
                last = line
                if len(uids) == page_size:
                    return True
            batch.clear()
            return False

        full = False
        try:
            for line in self._sessions.scan(after):
                if not filter.wants_uid(line.uid):
                    continue
                batch.append(line)
                if len(batch) >= min(CHECK_BATCH, page_size - len(uids)):
                    full = check()
                    if full:
                        break
        except KeyValueError as exc:
            raise self._error(f"reading the session index failed: {exc}") from exc
        if not full and batch:
            full = check()
        next_cursor = last.cursor() if full and last is not None else None
        return SessionPage(tuple(uids), next_cursor, may_be_incomplete=client_evicts(self.client))

    def _wanted(self, lines: list[IndexLine], filter: SessionFilter) -> list[IndexLine]:
        """The ``lines`` whose session exists (with the line's epoch) and passes ``filter``."""
        keys = [SessionKeys(self.keys.prefix, line.uid).active for line in lines]
        found = self._get_many(keys)
        wanted: list[IndexLine] = []
        for line, key in zip(lines, keys, strict=True):
            raw = found.get(key)
            if raw is None:
                continue  # deleted, or a creation that lost its race (or is in flight)
            what = f"{self._label} storage, session {line.uid!r}: active document ({key})"
            try:
                active = Active.from_body(decode(raw, "active", line.uid, what), what)
            except SerializationError:
                continue
            if active.epoch != line.epoch:
                continue  # deleted and created again: its own line lists it
            if filter.statuses:
                if not filter.expired and not any(
                    active.index[task].unresolved for task in active.index
                ):
                    continue  # every filter but expired is about unresolved instances
                peer = self.session(line.uid)
                try:
                    if filter.expired:  # a resolved status: the whole session is read
                        looked_at = list(peer.load_full().state.instances.values())
                    else:
                        looked_at = peer.get_unresolved_instances()
                except (SerializationError, StorageError):
                    looked_at = None  # damaged or evicted: listed, for an operator to look at
                if looked_at is not None and not filter.matches(looked_at):
                    continue
            wanted.append(line)
        return wanted

    @classmethod
    def list_sessions(
        cls, url: str, filter: SessionFilter, *, page_size: int, cursor: str | None
    ) -> SessionPage:
        """One page of the sessions stored at ``url`` (see :meth:`list_store`)."""
        parse_cursor(cursor)  # a bad cursor is refused before the store is opened
        store = cls.from_url(url, STORE_UID)
        assert isinstance(store, ListingStorage)
        try:
            return store.list_store(filter, page_size=page_size, cursor=cursor)
        finally:
            store.close()

    # -- rebuilding -------------------------------------------------------------------

    def rebuild_session_index(self, uids: Iterable[str] | None = None) -> int:
        """File again the sessions the session index misses; how many were filed.

        For after the index lost keys (memcached evicted them, or restarted empty
        while sessions survived). ``uids``: the sessions to check; None asks the
        store for every session it holds, which only a client that can list its
        keys does (``keys_with_prefix``: memcached, through ``lru_crawler
        metadump``); others raise
        :class:`~triggers_core.errors.UnsupportedOperationError`. Run one rebuild
        at a time. Cost: one read of the whole index, one read of each session's
        active document, and a filing (3 round trips) per session filed.
        """
        if uids is None:
            uids = self._stored_uids()
        index = self._sessions
        members = self._call("reading the session index", index.members)
        limit = self._limit()
        filed = 0
        for uid in uids:
            peer = self.session(uid)
            found = peer._read_active()
            if found is None or not found[0].epoch:
                continue  # gone, or not committed to since before the index (filed then)
            epoch = found[0].epoch
            if (peer.uid, epoch) in members:
                continue
            shard = shard_of(peer.keys.session)
            self._call("filing a session in the index", index.file, uid, epoch, shard, limit)
            filed += 1
        return filed

    def _stored_uids(self) -> list[str]:
        """The UIDs of every session in the store, from its keys (see rebuild_session_index)."""
        lister = getattr(self.client, "keys_with_prefix", None)
        if lister is None:
            raise UnsupportedOperationError(
                "rebuilding the session index without a list of UIDs",
                self._label,
                "its client cannot list the store's keys; pass the UIDs of your sessions",
            )
        active_prefix = f"{self.keys.prefix}a:"
        keys = sorted(self._call("listing the store's keys", lister, active_prefix))
        uids: list[str] = []
        found = self._get_many(keys)
        for key in keys:
            raw = found.get(key)
            if raw is None:
                continue
            try:
                uid = loads(raw, key).get("uid")
            except SerializationError:
                continue
            if isinstance(uid, str) and uid and SessionKeys(self.keys.prefix, uid).active == key:
                uids.append(uid)
        return uids
