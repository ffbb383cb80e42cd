"""Leases and the due index on the key-value layout: the storage's side of them.

**Lease records.** One small document per *run* of an instance, under
``keys.lease(name, owner)`` (the run's owner token is part of the key, so a
record only ever describes its own run): the expiry and whether a sweeper
claimed it.

* The commit that starts a run (its ``changes.due`` gives the instance a LEASE
  entry) writes the record with its documents, before the compare-and-swap. An
  attempt that loses deletes it with its other documents (the owner token was
  drawn for that attempt). The commit that takes the entry away (finish, fail,
  take-over...) deletes the record of the instance's owner with the documents
  it replaces. So the record exists while the run holds the instance (unless
  memcached evicted it; see below).
* :meth:`LeaseStorage.renew_lease` is a ``gets``/``cas`` of the record and
  nothing else: no session document, no index key.
  :meth:`LeaseStorage.claim_lease` is the same against the expiry the sweeper
  saw. Both compare-and-swap one key, so of a renewal and a claim racing on a
  lease exactly one wins. If the record is missing (evicted), both fall back to
  the lease recorded in the instance document (``owner``, ``leaseExpires``) and
  re-create the record with ``add``: still exactly one winner.

**The due index** (:mod:`~triggers_backends.kv.due_index`) holds *hints*, filed by
each commit for its ``changes.due`` before its compare-and-swap. A renewal does
not move the run's hint: a sweep that meets a hint whose entry has moved on (a
renewed or claimed lease) files it again at the entry's time and drops the old
one, so a run costs about one hint per lease period, however often it renews.

**Checking hints** (:meth:`LeaseStorage.due_entries`), cheapest test first, a
batch at a time with one read per step: the sessions' active documents (a
session that is gone, or whose instance's index page holds nothing unresolved,
drops the hint) and the hinted lease records; then the index pages (cached:
the instance's status must still be ``scheduled`` or ``running``); then, only
for the hints still alive and due, the instance documents (a ``scheduled``
instance must still be due at the hinted time, a ``running`` one must be run by
the hinted owner). A lease record that outlived its run (a best-effort delete
that failed) is deleted when its hint is judged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from triggers_backends.kv.active import Active, page_of, parse_name
from triggers_backends.kv.documents import decode, encode
from triggers_backends.kv.due_index import (
    ATTEMPTS,
    DueIndex,
    Hint,
    Slot,
    bucket_of,
    from_micros,
    lines_of,
    micros,
    parse_line,
    shard_of,
)
from triggers_backends.kv.keys import digest
from triggers_backends.kv.session_documents import SessionDocuments, Want, fetch_across
from triggers_backends.kv_client import INDEX_TOMBSTONE, KeyValueError
from triggers_core.engine.leases import DueKind, due_of, lease_owner
from triggers_core.engine.scopes import Scope
from triggers_core.engine.state import Status, TaskInstance
from triggers_core.errors import SerializationError
from triggers_core.runtime.storage import DueRef

__all__ = ["SCAN_HINTS", "LeaseRecord", "LeaseStorage"]

#: Hints one ``due_entries`` call reads at most (more when ``limit`` is large):
#: the bound on one sweep's cost; the next sweep goes on where it stopped.
SCAN_HINTS = 10_000
#: Hints checked per batch (one read per step of the check, per batch).
JUDGE_BATCH = 500

_STATUS = {
    DueKind.DISPATCH: Status.SCHEDULED.value,
    DueKind.LEASE: Status.RUNNING.value,
    DueKind.TIMER: Status.UNSTARTED.value,
}


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The lease of one run of an instance, as its record holds it."""

    instance: str
    owner: str
    at: datetime
    claimed: bool = False

    def encode(self, uid: str) -> bytes:
        """The record document."""
        body = {
            "instance": self.instance,
            "owner": self.owner,
            "at": micros(self.at),
            "claimed": self.claimed,
        }
        return encode("lease", uid, body)


def decode_record(raw: bytes, uid: str, name: str, owner: str, what: str) -> LeaseRecord:
    """The record in ``raw``; SerializationError if it is not the record of that run."""
    body = decode(raw, "lease", uid, what)
    if not isinstance(body, dict) or body.get("instance") != name or body.get("owner") != owner:
        raise SerializationError(f"{what}: not the lease record of run {owner!r} of {name!r}")
    at, claimed = body.get("at"), body.get("claimed")
    if not isinstance(at, int) or isinstance(at, bool) or not isinstance(claimed, bool):
        raise SerializationError(f"{what}: invalid lease record {body!r}")
    try:
        return LeaseRecord(name, owner, from_micros(at), claimed)
    except OverflowError:
        raise SerializationError(f"{what}: lease expiry {at!r} out of range") from None


#: What a check found about one hint: None (unknown: keep the hint), _DEAD (drop it),
#: or the entry's (time, owner, claimed) as it is now.
_DEAD = "dead"
Verdict = tuple[datetime, str | None, bool] | str | None


class LeaseStorage(SessionDocuments):
    """Lease records and the due index (the part of
    :class:`~triggers_backends.kv.storage.KeyValueStorage` this module describes)."""

    @property
    def _index(self) -> DueIndex:
        """The due index of the store (shared by the storages of its sessions)."""
        raise NotImplementedError

    def _peer(self, uid: str) -> LeaseStorage:
        """A storage of session ``uid`` of this store, sharing this one's client and caches."""
        raise NotImplementedError

    # -- lease records ----------------------------------------------------------------

    def _limit(self) -> int:
        """The client's ``max_value_size`` (memcached asks its servers once)."""
        return self._call("reading the item size limit", lambda: self.client.max_value_size)

    def check_leases(self) -> None:
        """Leases and the due index are kept (see :mod:`triggers_backends.kv.leases`)."""

    def _record(self, raw: bytes, key: str, name: str, owner: str) -> LeaseRecord:
        return decode_record(raw, self.uid, name, owner, self._what("lease record", key))

    def _without_record(
        self, name: str, owner: str, seen: datetime | None, record: LeaseRecord
    ) -> bool | None:
        """The record of run ``owner`` is missing: re-create it as ``record`` from the lease
        in the instance document (if that run holds it, expiring at ``seen`` when given).
        True or False as settled; None if someone else re-created it first (read again)."""
        instance = self.load(Scope(names=frozenset((name,)))).state.instances.get(name)
        due = due_of(instance) if instance is not None else None
        if due is None or due.kind is not DueKind.LEASE or due.owner != owner:
            return False  # resolved (its record deleted), or another run's now
        if seen is not None and due.at != seen:
            return False
        key = self.keys.lease(name, owner)
        if self._call("re-creating a lease record", self.client.add, key, record.encode(self.uid)):
            return True
        return None

    def _swap_record(self, name: str, owner: str, seen: datetime | None, new: LeaseRecord) -> bool:
        """Replace the record of run ``owner`` by ``new`` if it is unclaimed (``seen``
        None: a renewal) or expires at ``seen`` (a claim)."""
        key = self.keys.lease(name, owner)
        for _ in range(ATTEMPTS):
            found = self._call("reading a lease record", self.client.gets, key)
            if found is None:
                settled = self._without_record(name, owner, seen, new)
                if settled is not None:
                    return settled
                continue
            raw, token = found
            record = self._record(raw, key, name, owner)
            if record.claimed if seen is None else record.at != seen:
                return False
            value = new.encode(self.uid)
            if self._call("writing a lease record", self.client.cas, key, value, token):
                return True
        return False

    def renew_lease(self, name: str, owner: str, expires: datetime) -> bool:
        """Move the lease of run ``owner`` to ``expires`` (a ``gets`` and a ``cas`` of its
        record, nothing else); False if resolved, another run's, or claimed."""
        return self._swap_record(name, owner, None, LeaseRecord(name, owner, expires))

    def claim_lease(self, name: str, owner: str, seen: datetime, until: datetime) -> bool:
        """Claim the lease of run ``owner`` if its record still expires at ``seen``."""
        return self._swap_record(name, owner, seen, LeaseRecord(name, owner, until, True))

    def get_lease(self, name: str) -> DueRef | None:
        """The lease of ``name``'s current run, as its record holds it (renewals included).

        Reads the instance (for its owner) and the record; a run whose record
        is missing (evicted) reports the lease of the instance document.
        """
        instance = self.load(Scope(names=frozenset((name,)))).state.instances.get(name)
        owner = lease_owner(instance) if instance is not None else None
        if instance is None or owner is None:
            return None
        key = self.keys.lease(name, owner)
        raw = self._get_many([key]).get(key)
        if raw is not None:
            record = self._record(raw, key, name, owner)
            return DueRef(self.uid, name, DueKind.LEASE, record.at, owner, record.claimed)
        due = due_of(instance)
        if due is None or due.kind is not DueKind.LEASE:
            return None
        return DueRef(self.uid, name, DueKind.LEASE, due.at, owner)

    # -- the due index ------------------------------------------------------------------

    def due_entries(self, kind: DueKind, before: datetime, *, limit: int) -> list[DueRef]:
        """Up to ``limit`` entries of ``kind`` due at or before ``before``, in every session
        of the store, oldest first.

        Reads the index's 16 directories of ``kind``, then the slots of the
        buckets that hold hints, oldest bucket first, and checks each hint due by
        ``before`` against its session (see the module). Stops after the bucket
        in which ``limit`` entries were found, or once
        ``max(SCAN_HINTS, 20 * limit)`` hints were read (then it returns what it
        found so far; the next call goes on, as the hints it dropped are gone).
        The cost is therefore bounded and grows with the hints of the buckets
        read (due entries, and stale hints, each checked until dropped), never
        with the number of sessions. Along the way it drops stale hints and
        files again those of leases that moved on.
        """
        if before.tzinfo is None or before.utcoffset() is None:
            raise ValueError(f"before must be a timezone-aware datetime, got naive {before!r}")
        if limit < 1:
            return []
        last = bucket_of(before)
        found: dict[tuple[str, str], DueRef] = {}
        budget = max(SCAN_HINTS, 20 * limit)
        read = 0
        for bucket, slots in self._buckets(kind, last):
            read += self._sweep_bucket(kind, before, bucket < last, slots, found)
            if len(found) >= limit or read >= budget:
                break
        return sorted(found.values(), key=lambda r: (r.at, r.session, r.instance))[:limit]

    def _buckets(self, kind: DueKind, last: int) -> Iterator[tuple[int, list[Slot]]]:
        """:meth:`DueIndex.buckets`, read lazily, its client errors as StorageError."""
        buckets = self._index.buckets(kind, last)
        while True:
            try:
                found = next(buckets)
            except StopIteration:
                return
            except KeyValueError as exc:
                raise self._error(f"reading the due index failed: {exc}") from exc
            yield found

    def _sweep_bucket(
        self,
        kind: DueKind,
        before: datetime,
        complete: bool,
        slots: Sequence[Slot],
        found: dict[tuple[str, str], DueRef],
    ) -> int:
        """Check the hints of one bucket due by ``before``; drop, move, report them."""
        lines: list[tuple[Slot, bytes, Hint | None]] = []
        closed = [s for s in slots if s.raw == INDEX_TOMBSTONE]
        for slot in slots:
            if slot.raw is not None and slot.raw != INDEX_TOMBSTONE:
                lines += [(slot, line, parse_line(line, kind)) for line in lines_of(slot.raw)]
        judged = [h for _, _, h in lines if h is not None and h.at <= before]
        verdicts = self._judge(kind, before, judged)
        refile: dict[tuple[str, str], Hint] = {}
        dropped: dict[str, set[bytes]] = {}
        for slot, line, hint in lines:
            if hint is not None and hint.at > before:
                continue  # not judged: due later (or a commit still in flight)
            verdict = verdicts.get(hint) if hint is not None else _DEAD
            if verdict is None:
                continue
            if verdict != _DEAD:
                assert isinstance(verdict, tuple)
                assert hint is not None
                at, owner, claimed = verdict
                if at <= before:
                    ref = DueRef(hint.session, hint.instance, kind, at, owner, claimed)
                    found[(hint.session, hint.instance)] = ref
                if bucket_of(at) == slot.bucket:
                    continue
                refile[(hint.session, hint.instance)] = Hint(
                    hint.session, hint.instance, kind, at, owner
                )
            dropped.setdefault(slot.key, set()).add(line)
        self._refile(refile.values())  # before the old hints go
        for slot in slots:
            if slot.raw is None or slot.raw == INDEX_TOMBSTONE:
                continue
            if slot.key in dropped or (complete and not lines_of(slot.raw)):
                gone = dropped.get(slot.key, set())
                if self._call(
                    "rewriting the due index",
                    lambda slot=slot, gone=gone: self._index.rewrite(slot, gone, close=complete),
                ):
                    closed.append(slot)
        missing = [s for s in slots if s.raw is None]
        if closed or missing:
            self._call("pruning the due index", self._index.prune, closed, missing)
        return len(lines)

    def _refile(self, hints: Iterable[Hint]) -> None:
        """File ``hints`` again, grouped by shard: a sweep that moves many leases makes one
        filing per slot it fills, not one per session."""
        by_shard: dict[int, list[Hint]] = {}
        for hint in hints:
            by_shard.setdefault(shard_of(digest(hint.session)), []).append(hint)
        for shard, group in sorted(by_shard.items()):
            for filing in self._index.plan(shard, group, self._limit()):
                self._call("filing due-index hints", self._index.file, filing)

    def _judge(self, kind: DueKind, before: datetime, hints: list[Hint]) -> dict[Hint, Verdict]:
        unique = list(dict.fromkeys(hints))
        verdicts: dict[Hint, Verdict] = {}
        for start in range(0, len(unique), JUDGE_BATCH):
            verdicts.update(self._judge_batch(kind, before, unique[start : start + JUDGE_BATCH]))
        return verdicts

    def _judge_batch(
        self, kind: DueKind, before: datetime, hints: list[Hint]
    ) -> dict[Hint, Verdict]:
        peers = {uid: self._peer(uid) for uid in dict.fromkeys(h.session for h in hints)}
        record_keys: dict[Hint, str] = {}
        if kind is DueKind.LEASE:
            for hint in hints:
                assert hint.owner is not None
                record_keys[hint] = peers[hint.session].keys.lease(hint.instance, hint.owner)
        keys = [peer.keys.active for peer in peers.values()] + list(record_keys.values())
        raw = self._get_many(list(dict.fromkeys(keys)))
        records = {
            hint: _record_or_none(peers[hint.session], hint, raw.get(key))
            for hint, key in record_keys.items()
        }
        verdicts: dict[Hint, Verdict] = {}
        # 1. The active documents: is the session there, may the instance be unresolved?
        actives: dict[str, Active | None] = {}
        for uid, peer in peers.items():
            # Unreadable: its hints stay, and are judged again next time.
            with contextlib.suppress(SerializationError):
                actives[uid] = _active(peer, raw.get(peer.keys.active))
        pages: list[tuple[Hint, int, tuple[LeaseStorage, Want]]] = []
        for hint in hints:
            peer = peers[hint.session]
            if hint.session not in actives:
                verdicts[hint] = None
                continue
            active = actives[hint.session]
            try:
                want = None if active is None else _page_want(peer, active, hint.instance)
            except SerializationError:
                verdicts[hint] = None
                continue
            if want is None:
                verdicts[hint] = _DEAD
            else:
                pages.append((hint, want[0], (peer, want[1])))
        # 2. The index pages (cached): is the instance still scheduled / running?
        needed: list[tuple[Hint, tuple[LeaseStorage, Want]]] = []
        loaded = fetch_across([pair for _, _, pair in pages])
        for (hint, number, (peer, _)), page in zip(pages, loaded, strict=True):
            entry = page.entries.get(number) if page is not None else None
            if page is None:
                verdicts[hint] = None  # replaced by a commit meanwhile: judged next time
            elif entry is None or entry.status != _STATUS[kind]:
                verdicts[hint] = _DEAD
            elif (record := records.get(hint)) is not None and record.at > before:
                verdicts[hint] = (record.at, hint.owner, record.claimed)  # renewed: not due
            else:
                needed.append((hint, (peer, peer._instance_want(hint.instance, entry.ref))))
        # 3. The instances of the hints that may be due: the entry as it is now.
        garbage: list[str] = []
        loaded = fetch_across([pair for _, pair in needed])
        for (hint, _), instance in zip(needed, loaded, strict=True):
            if instance is None:
                verdicts[hint] = None
                continue
            record = records.get(hint)
            verdicts[hint] = verdict = _verdict(kind, hint, instance, record)
            if verdict == _DEAD and record is not None:
                garbage.append(record_keys[hint])  # a record that outlived its run
        if garbage:
            self._forget(garbage)
        return verdicts


def _record_or_none(peer: LeaseStorage, hint: Hint, raw: bytes | None) -> LeaseRecord | None:
    """The hinted lease record, if it exists and is readable (garbage counts as missing)."""
    if raw is None:
        return None
    assert hint.owner is not None
    key = peer.keys.lease(hint.instance, hint.owner)
    try:
        return peer._record(raw, key, hint.instance, hint.owner)
    except SerializationError:
        return None


def _active(peer: LeaseStorage, raw: bytes | None) -> Active | None:
    """The session's active document, None if the session is gone (SerializationError if
    unreadable)."""
    if raw is None:
        return None
    return peer._parse_active(raw)


def _page_want(peer: LeaseStorage, active: Active, name: str) -> tuple[int, Want] | None:
    """(number, the page to read) for instance ``name``; None if it cannot be unresolved
    (no such instance, or its page holds nothing unresolved)."""
    parsed = parse_name(name)
    if parsed is None or parsed[0] not in active.index:
        return None
    task, number = parsed
    index = active.index[task]
    page = page_of(number)
    ref = index.pages.get(page)
    if ref is None or page not in index.unresolved:
        return None
    return number, peer._page_want(task, page, ref)


def _verdict(
    kind: DueKind, hint: Hint, instance: TaskInstance, record: LeaseRecord | None
) -> Verdict:
    """What the instance document (and the lease record, if any) say of ``hint``."""
    due = due_of(instance)
    if due is None or due.kind is not kind:
        return _DEAD
    if kind is not DueKind.LEASE:
        # Dispatched again (or a timer moved) since: the commit that did it filed its own hint.
        return (due.at, None, False) if due.at == hint.at else _DEAD
    if due.owner != hint.owner:
        return _DEAD  # another run holds it now
    if record is not None:
        return (record.at, hint.owner, record.claimed)
    return (due.at, hint.owner, False)  # the record was evicted: the document's lease
