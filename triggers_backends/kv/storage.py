"""``KeyValueStorage``: one session in any key-value store, compared-and-swapped safely.

The store is reached through a :class:`~triggers_backends.kv_client.KeyValueClient`
(memcached, a Django cache...); this module knows nothing else about it.

Layout (keys in :mod:`~triggers_backends.kv.keys`, documents in
:mod:`~triggers_backends.kv.documents` and :mod:`~triggers_backends.kv.active`,
reading and writing them in :mod:`~triggers_backends.kv.session_documents`):

* the **active document** (``a``) is the only key ever compared-and-swapped.
  It holds the version, the header, and references to everything else; its
  size follows what is active (one reference per trigger, per task one per
  256 instance numbers), not the history;
* **immutable documents**, each under a key ending with the random revision
  token of the attempt that wrote it, and never overwritten: the configuration
  (``c``), the latest kwargs of each trigger (``k``), index pages (``p``) and
  instances (``i``), chunked when larger than the store's item size;
* a **marker** (``m``), added when the session is created.

Commit order, and why it is safe:

1. write every new immutable document (``set_many``);
2. ``cas`` the active document against the token read with it (``add`` it for
   a new session, then add the marker);
3. after success, delete the documents the new active document no longer
   references (best effort).

A reader that finds an active document therefore finds every document it
refers to (they were written before it became visible). A writer that loses
the race in step 2 wrote only documents under its own random revision, which
nobody references: it deletes them and raises
:class:`~triggers_core.errors.ConflictError` (the manager retries). A crash
between any two steps leaves at most such unreferenced documents, never a
broken session. A reader that still holds the previous active document may
miss a document deleted in step 3: it sees that the active document moved on
and reloads; if the active document did *not* move on, the document was lost
(evicted) and the load fails with a :class:`~triggers_core.errors.StorageError`
naming the key. A missing active document with the marker present is a lost
session (an error), never a new empty one. The version in the active document
only grows, so even a compare-value CAS (a client whose token is the previous
value) cannot be fooled by ABA.

A timeout during step 2 leaves it unknown whether the commit happened: the
error says so, and the documents written in step 1 are kept (they may be
referenced).

A client that can commit atomically (:class:`~triggers_backends.kv_client.AtomicCommitClient`,
e.g. Redis with a script) gets the three steps, and the marker, as one call
for a commit of modest size: readers see all of it or none of it, and a loser
writes nothing at all.

Fire records (idempotency keys, :mod:`triggers_core.engine.idempotency`) must not
grow the active document with their number, and a record written by an
attempt whose swap lost must never be taken as committed. So:

* the commit that creates a record writes it as an immutable document under
  its own revision (``f``, like an instance) and lists its reference in the
  new active document's ``fires``, which holds *only* the records of that
  commit;
* every commit writes, before its swap, a *pointer* (``g``, under a key fixed
  for the record: the session's epoch and the record's digest) to each record
  in the ``fires`` of the active document it replaces, and leaves those out of
  its own ``fires``;
* a reader looks for a record in the active document's ``fires``, then for its
  pointer.

Why a record is never taken as committed when it was not: a reader trusts only
what a committed active document references and pointers. A pointer is only
ever written for a record listed in the ``fires`` of an active document that
was read from the store or that its writer committed, so for a record that
*is* committed, whether or not the pointer's writer then wins its own swap
(the pointers are true either way, so a loser does not delete them, and every
writer of one pointer writes the same bytes). The documents of a losing attempt
are referenced by nothing and deleted, as above.

Why a committed record is always found: at the version that created it, the
record is in ``fires``; the commit that replaces that version wrote its
pointer before its swap, so at every later version the pointer exists (unless
evicted; see below). A duplicate found this way returns without writing
anything, which is safe because a found record is committed for good.
Creating a record that a reader found absent at version ``V`` can only clash
with a record committed after ``V``, and then the swap from ``V`` fails: the
version check makes concurrent duplicates conflict, and the loser reloads and
finds the record. A commit that creates a record already stored (in its base's
``fires`` or behind a pointer) raises :class:`~triggers_core.errors.ConflictError`
and writes nothing; the pointer check costs no read when a load of the base
version found the record absent.

The epoch is a random token fixed when the session is created (and given, by
its first commit, to a session created before fire records existed). Keys of
records include it, so a session deleted (or lost) and created again under the
same UID never finds its predecessor's records. No commit deletes a record;
``delete`` finds every one through the numbered *entries* (``h``) written with
the pointers: the commit that confirms the records of the version it replaces
writes, beside each pointer, an entry under the next number
(``Active.confirmed`` counts them), with the same bytes whoever writes it, so
keys cost no round trip per fire and the active document one integer.
A key whose record or pointer was evicted is forgotten: a later fire with it
applies again. On a client that commits atomically, the records and pointers
are part of the one step.

Leases and the due index (:mod:`~triggers_backends.kv.leases`,
:mod:`~triggers_backends.kv.due_index`) ride on the same steps: the lease record
of a run that a commit starts is one of the documents of step 1 (deleted with
them by an attempt that loses), the record of a run it ends is one of the keys
of step 3, and the due-index hints of ``changes.due`` are filed before step 2
(inside the one step on a client that files them in its commit).

The marker is added right *after* the active document is created (before would
be worse: a creator dying in between would leave a marker without an active
document, which every reader would take for a lost session until someone
deletes it). A creator that dies between the two, or whose marker ``add``
fails, leaves version 1 without a marker. So the commit that replaces version 1
adds the marker (a no-op if it exists) before anything else, and fails without
writing anything if it cannot: no version after the first exists without its
marker. What remains is a session nobody has committed to since a creation
whose marker was not written: if its active document is evicted, it loads as
a new, empty session. (A creator that died never returned, so no task its
commit scheduled was sent.)
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Generator, Iterable, Sequence
from typing import ClassVar, cast

from triggers_backends.kv.active import Active
from triggers_backends.kv.assembly import Gathered, Reads, SessionAssembly
from triggers_backends.kv.cache import DocumentCache
from triggers_backends.kv.commit import Commit
from triggers_backends.kv.documents import (
    DocRef,
    DocumentMissing,
    decode,
    encode,
    is_token,
    stored_keys,
)
from triggers_backends.kv.due_index import DueIndex, Hint, positions_for, shard_of
from triggers_backends.kv.keys import DEFAULT_PREFIX, SessionKeys
from triggers_backends.kv.listing import ListingStorage
from triggers_backends.kv.session_documents import READ_BATCH, Want, fetch_across
from triggers_backends.kv.session_index import SessionIndex
from triggers_backends.kv_client import (
    AtomicCommitClient,
    BatchGetsClient,
    CasToken,
    KeyValueClient,
    KeyValueError,
    ValueTokenClient,
)
from triggers_core.engine.leases import due_of, lease_owner
from triggers_core.engine.scopes import Changes, Scope, Selector
from triggers_core.engine.state import SessionState, Status
from triggers_core.errors import ConflictError, SerializationError, StorageError
from triggers_core.runtime.storage import Snapshot, Storage, Version, check_uid

__all__ = ["KeyValueStorage"]


class KeyValueStorage(ListingStorage, SessionAssembly):
    """One session on a :class:`~triggers_backends.kv_client.KeyValueClient`.

    ``prefix`` namespaces the keys (default ``triggers:``). Storages of one
    session may share a client (and should: it holds the connection pool).
    """

    backend_name: ClassVar[str] = "kv"
    #: A tick commits this many due sessions at once (each commit waits on the server).
    tick_workers: ClassVar[int] = 4
    #: A tick reads this many due sessions at once (:meth:`load_sessions`), then commits them.
    tick_load_batch: ClassVar[int] = 20
    #: Loads that found a referenced document deleted by a concurrent commit retry this often.
    read_attempts: ClassVar[int] = 20

    def __init__(
        self,
        uid: str,
        client: KeyValueClient,
        *,
        prefix: str = DEFAULT_PREFIX,
        cache_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        super().__init__(uid)
        self.client = client
        #: The client again if it commits in one atomic step (see ``Commit.apply``).
        #: Looked up on the class: ``isinstance`` with the protocol would read every
        #: attribute, and ``max_value_size`` may ask the server.
        self.atomic = (
            cast(AtomicCommitClient, client)
            if callable(getattr(type(client), "commit", None))
            else None
        )
        #: The client again if it reads several keys with their tokens at once.
        self._batch_gets = (
            cast(BatchGetsClient, client)
            if callable(getattr(type(client), "gets_many", None))
            else None
        )
        #: The token a key holding given bytes has, if the client derives tokens from
        #: the value (:class:`~triggers_backends.kv_client.ValueTokenClient`): after a
        #: commit, the next compare-and-swap of the same version reads nothing first.
        self._token_of = (
            cast(ValueTokenClient, client).token_of
            if callable(getattr(type(client), "token_of", None))
            else None
        )
        self.prefix = prefix
        self._label = client.backend_name
        self._cache = DocumentCache(cache_bytes)
        self._due_index: DueIndex | None = None
        self._session_index: SessionIndex | None = None
        self._open(self.uid)

    def _open(self, uid: str) -> None:
        """Set up what belongs to one session (the rest is shared by :meth:`session`)."""
        self.uid = check_uid(uid)
        self.keys = SessionKeys(self.prefix, self.uid)
        # version -> (cas token or None, active document) of recent loads and commits.
        self._seen: OrderedDict[int, tuple[CasToken | None, Active]] = OrderedDict()
        self._seen_lock = threading.Lock()
        # (epoch, version) -> fire record digests a recent load found absent at it.
        self._absent = OrderedDict()
        self._parsed = None

    # -- the store ------------------------------------------------------------------

    def session(self, uid: str) -> KeyValueStorage:
        """A storage for session ``uid`` of the same store, sharing this one's client, its
        cache of immutable documents (their keys are unique to their session) and its
        due index."""
        other = copy.copy(self)
        other.__dict__.pop("_commit_lock", None)  # one per session object
        other._open(uid)
        return other

    def _peer(self, uid: str) -> KeyValueStorage:
        return self.session(uid)

    def _store_location(self) -> object:
        """What names the store behind the client (subclasses: servers, a cache alias)."""
        return id(self.client)

    def store_identity(self) -> object | None:
        """``(backend, where, prefix)``: equal for every session of the store here."""
        return (self.backend_name, self._store_location(), self.prefix)

    @property
    def _index(self) -> DueIndex:
        index = self._due_index
        if index is None:
            positions = positions_for(self.store_identity())
            index = self._due_index = DueIndex(self.client, self.prefix, positions)
        return index

    def rebuild_due_index(self, uids: Iterable[str]) -> int:
        """File again the due-index hints of every unresolved instance of sessions ``uids``.

        For after the index was lost (memcached evicted its keys or restarted
        empty, while the sessions survived): each session's unresolved
        instances are read (as ``get_unresolved_instances`` does) and a hint is
        filed for each one a sweep may need; hints that exist already are only
        duplicated (the sweep drops the extra ones). This layout keeps no list of
        its sessions, so the caller names them. Returns the number of hints
        filed. Cost: one read of each session's unresolved instances, and one
        filing per session and time bucket.
        """
        filed = 0
        for uid in uids:
            peer = self._peer(uid)
            hints = []
            for instance in peer.get_unresolved_instances():
                due = due_of(instance)
                if due is not None:
                    hints.append(Hint(peer.uid, instance.name, due.kind, due.at, due.owner))
            for filing in self._index.plan(shard_of(peer.keys.session), hints, self._limit()):
                self._call("filing due-index hints", self._index.file, filing)
            filed += len(hints)
        return filed

    def _remember(self, active: Active, token: CasToken | None) -> None:
        with self._seen_lock:
            self._seen[active.version] = (token, active)
            self._seen.move_to_end(active.version)
            while len(self._seen) > 16:
                self._seen.popitem(last=False)

    def _lost(self) -> StorageError:
        return self._error(
            f"the active document {self.keys.active} of session {self.uid!r} is gone "
            f"(evicted?) although the session exists (marker {self.keys.marker}): its "
            "state is lost. Give the server more memory (-m) and watch 'evictions' in its "
            "stats; to start the session over, call delete() on its storage"
        )

    def _vanished(self) -> bool:
        """After seeing the marker: is the active document still missing? Then it is lost.

        The marker is added only after the active document, so an active document
        missing *after* the marker was seen existed once and is gone; one that is
        there now was created concurrently between our two reads.
        """
        return self._read_active() is None

    def _marker_exists(self) -> bool:
        marker = self.keys.marker
        return bool(self._call("reading the session marker", self.client.get_many, [marker]))

    # -- fire records ---------------------------------------------------------------

    def check_fire_keys(self) -> None:
        """Fire records are kept (documents outside the active document)."""

    # -- loading ------------------------------------------------------------------

    def load(self, scope: Scope | Selector = Scope()) -> Snapshot:  # noqa: B008 - frozen value
        return self._load(scope)

    def load_full(self) -> Snapshot:
        return self._load(None)

    def _load(self, scope: Scope | Selector | None) -> Snapshot:
        for attempt in range(self.read_attempts):
            if attempt:  # let the concurrent writers finish (jittered, at most ~50 ms)
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
            asked = self._prefetch(scope)
            found, early = self._read_active_with(asked)
            if found is None:
                if not self._marker_exists():
                    return Snapshot(SessionState(), None)
                if self._vanished():
                    raise self._lost()
                continue  # created by another writer between the two reads
            active, token = found
            try:
                state = self._assemble(active, scope, asked, early)
            except DocumentMissing as missing:
                self._check_moved_on(active.version, missing.key)
                continue  # a concurrent commit replaced what we were reading: reload
            self._remember(active, token)
            return Snapshot(state, active.version)
        raise self._error(
            f"the session changed during each of {self.read_attempts} attempts to load it"
        )

    def load_sessions(self, wanted: Sequence[tuple[Storage, Scope | Selector]]) -> list[Snapshot]:
        """Several sessions of this store, in a few round trips for all of them.

        One read of their active documents (with their tokens), then, step by
        step of their assemblies (configurations with the pages known already,
        more index pages, instances), one read for the documents of all of them
        that are not cached, however many sessions (a step that also reads fire
        record pointers is read for its session alone). Each snapshot is
        remembered by its storage as its own load's would be (its
        compare-and-swap reads nothing first). A session this cannot read so
        (not stored, its documents replaced by a commit meanwhile, anything
        unreadable) is loaded on its own, with what such a load does and raises.
        """
        peers: list[KeyValueStorage] = []
        for peer, _ in wanted:
            if not isinstance(peer, KeyValueStorage) or peer.client is not self.client:
                raise ValueError(f"{peer!r} is not a session of the store of {self!r}")
            peers.append(peer)
        keys = [peer.keys.active for peer in peers]
        found = self._gets_many(list(dict.fromkeys(keys)))
        results: list[Snapshot | None] = [None] * len(peers)
        running: dict[int, tuple[Generator[Reads, Gathered, SessionState], Active]] = {}
        asked: dict[int, Reads] = {}
        for i, (peer, key) in enumerate(zip(peers, keys, strict=True)):
            got = found.get(key)
            if got is None:
                continue  # not stored (or lost): its own load says which
            try:
                active = peer._parse_active(got[0])
                steps = peer._assembly(active, wanted[i][1])
                asked[i] = next(steps)
            except (DocumentMissing, SerializationError):
                continue
            peer._remember(active, got[1])
            running[i] = (steps, active)
        while asked:
            shared = {i: reads for i, reads in asked.items() if not reads[1]}
            documents = fetch_across(
                [(peers[i], want) for i, (wants, _) in shared.items() for want in wants]
            )
            at = 0
            following: dict[int, Reads] = {}
            for i, reads in asked.items():
                steps, active = running[i]
                try:
                    if i in shared:
                        count = len(reads[0])
                        values, at = documents[at : at + count], at + count
                        if any(value is None for value in values):
                            continue  # replaced by a commit meanwhile, or unreadable: on its own
                        gathered: Gathered = (values, {})
                    else:  # fire record pointers too: this session's own read
                        gathered = peers[i]._gather(*reads)
                    following[i] = steps.send(gathered)
                except StopIteration as stop:
                    results[i] = Snapshot(stop.value, active.version)
                except (DocumentMissing, SerializationError):
                    continue
            asked = following
        return [
            snapshot if snapshot is not None else peers[i].load(wanted[i][1])
            for i, snapshot in enumerate(results)
        ]

    def _gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, CasToken]]:
        """The values and tokens of ``keys`` that exist: in one call if the client can."""
        batch = self._batch_gets
        if batch is not None:
            return self._call("reading active documents", batch.gets_many, keys)
        found: dict[str, tuple[bytes, CasToken]] = {}
        for key in keys:
            got = self._call("reading the active document", self.client.gets, key)
            if got is not None:
                found[key] = got
        return found

    # -- writing ------------------------------------------------------------------

    def _base(self, expected: Version | None) -> tuple[Active, CasToken] | None:
        """The active document at ``expected`` and its CAS token; ConflictError if it moved."""
        if expected is None:
            exists = self._read_active() is not None
            if not exists and self._marker_exists():
                if self._vanished():
                    raise self._lost()
                exists = True  # created by another writer between the two reads
            if exists:
                raise ConflictError(
                    "another writer created the session first",
                    backend=self._label,
                    session=self.uid,
                )
            return None
        if not isinstance(expected, int) or isinstance(expected, bool):
            raise ConflictError(
                f"version {expected!r} did not come from this storage",
                backend=self._label,
                session=self.uid,
            )
        with self._seen_lock:
            seen = self._seen.get(expected)
        if seen is not None and seen[0] is not None:
            return seen[1], seen[0]
        found = self._read_active()
        if found is None:
            if self._marker_exists() and self._vanished():
                raise self._lost()
            raise ConflictError(
                f"version {expected!r} is gone: the session does not exist",
                backend=self._label,
                session=self.uid,
            )
        if found[0].version != expected:
            raise ConflictError(
                f"version moved on from {expected!r} to {found[0].version!r}",
                backend=self._label,
                session=self.uid,
            )
        return found

    def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        base_found = self._base(expected)
        base, token = base_found if base_found is not None else (None, None)
        commit = Commit(self, base, uuid.uuid4().hex[:16])
        commit.build(state, changes)
        # Measured with the longest slot number filing may record (see below).
        sized = commit.active
        if sized.listed is None:
            sized = dataclasses.replace(sized, listed=10**12)
        raw = encode("active", self.uid, sized.to_body())
        limit = commit.limit
        if len(raw) > limit:
            raise self._error(
                f"the active document would be {len(raw)} bytes, more than the {limit} bytes "
                f"one {self._label} item may hold ({len(commit.active.index)} tasks, "
                f"{len(commit.active.latest)} triggers); nothing was written"
            )
        # A new session (or one stored before the session index existed) is filed in the
        # index before the swap: a crash after it leaves a line nothing lists, never a
        # session the index misses.
        filed = self._file_session(commit) if commit.active.listed is None else None
        if sized is not commit.active:  # measured with a placeholder slot: the real one
            raw = encode("active", self.uid, commit.active.to_body())
        try:
            won = commit.apply(raw, token)
        except BaseException:
            if filed is not None:
                self._unfile(commit.active.epoch, filed)
            raise
        if not won:
            if filed is not None:  # ours alone (a new epoch), or a duplicate of the winner's
                self._unfile(commit.active.epoch, filed)
            raise ConflictError(
                f"version moved on from {expected!r}", backend=self._label, session=self.uid
            )
        self._cache.discard(commit.obsolete)
        for key, size, value in commit.decoded:
            self._cache.put(key, size, value)
        token_of = self._token_of
        self._remember(commit.active, token_of(raw) if token_of is not None else None)
        self._remember_parse(raw, commit.active)
        if base is not None:
            self._carry_absent(base, commit.active)
        return commit.active.version

    def _carry_absent(self, base: Active, active: Active) -> None:
        """The fire records known absent at ``base`` are absent at ``active``, which this
        storage committed on ``base``, but for those ``active`` created: a pointer is
        written only for a record of an earlier active document, and every other commit
        comes after ``active``. (So a commit on the version this one left, a finish on the
        snapshot its start left, reads no pointer again.)"""
        with self._seen_lock:
            absent = self._absent.get((base.epoch, base.version))
        if absent is not None and active.epoch == base.epoch:
            self._note_absent(active, absent.difference(active.fires))

    # -- housekeeping -------------------------------------------------------------

    def delete(self) -> None:
        """Remove the session: its active document and marker first, then its line in the
        session index, its documents and the lease records of its running instances.

        Also the way to start a lost session over. Do not delete a session that
        is still in use. Documents that cannot be found (a damaged session) are
        left to memcached's LRU. The session's hints in the due index live in
        keys shared with other sessions: the next sweep that reads them finds
        the session gone and drops them.
        """
        found = self._read_active()
        self._call(
            "deleting the session", self.client.delete_many, [self.keys.active, self.keys.marker]
        )
        self._parsed = None
        with self._seen_lock:
            self._seen.clear()
        if found is None:
            return
        active = found[0]
        self._unlist(active)
        keys = self.keys
        doomed: list[str] = []
        running: list[Want] = []
        if active.config is not None:
            doomed += stored_keys(keys.config(active.config.rev), active.config)
        doomed += self._fire_record_keys(active)
        for trigger, ref in active.latest.items():
            doomed += stored_keys(keys.latest(trigger, ref.rev), ref)
        for task, index in active.index.items():
            for number, ref in index.pages.items():
                doomed += stored_keys(keys.page(task, number, ref.rev), ref)
                try:
                    (page,) = self._fetch([self._page_want(task, number, ref)])
                except (DocumentMissing, SerializationError):
                    continue
                for n, entry in page.entries.items():
                    doomed += stored_keys(keys.instance(f"{task}#{n}", entry.ref.rev), entry.ref)
                    if entry.status == Status.RUNNING.value:
                        running.append(self._instance_want(f"{task}#{n}", entry.ref))
        # The lease records of the running instances (a resolved one has none left).
        for instance in fetch_across([(self, want) for want in running]):
            owner = lease_owner(instance) if instance is not None else None
            if owner is not None:
                doomed.append(keys.lease(instance.name, owner))
        self._cache.discard(doomed)
        self._forget(doomed)
        # Its hints in the due index (keys shared with the sessions of its shard).
        with contextlib.suppress(KeyValueError):  # else the next sweep drops them
            self._index.drop_session(self.uid, shard_of(keys.session))

    def _fire_record_keys(self, active: Active) -> list[str]:
        """The keys of every fire record of the session, their pointers and entries.

        The records of ``active`` itself, then those earlier commits confirmed,
        through their numbered entries (read in batches). Records of a session
        stored before the entries existed cannot be found (nothing lists them);
        they are unreachable from a new session under this UID, which gets a new
        epoch.
        """
        keys, epoch = self.keys, active.epoch
        if not epoch:
            return []
        found: list[str] = []
        # A losing writer on this version may have confirmed its records already.
        first = active.confirmed
        for number, (record, ref) in enumerate(sorted(active.fires.items()), first):
            found += stored_keys(keys.fire_record(epoch, record, ref.rev), ref)
            found += [keys.fire_pointer(epoch, record), keys.fire_entry(epoch, number)]
        for start in range(0, active.confirmed, READ_BATCH):
            numbers = range(start, min(start + READ_BATCH, active.confirmed))
            entries = [keys.fire_entry(epoch, n) for n in numbers]
            stored = self._get_many(entries)
            for entry in entries:
                found.append(entry)
                raw = stored.get(entry)
                if raw is None:
                    continue  # evicted: its record and pointer are left to the LRU
                what = self._what("fire record entry", entry)
                try:
                    body = decode(raw, "firekey", self.uid, what)
                    named = body["record"] if isinstance(body, dict) else None
                    if not (isinstance(named, str) and is_token(named)):
                        raise SerializationError(f"{what}: names no record")
                    ref = DocRef.from_json(body["ref"], what)
                except (SerializationError, KeyError):
                    continue
                found += stored_keys(keys.fire_record(epoch, named, ref.rev), ref)
                found.append(keys.fire_pointer(epoch, named))
        return found

    def __repr__(self) -> str:
        return f"<{type(self).__name__} uid={self.uid!r} on {self._label}>"
