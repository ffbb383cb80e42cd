"""The due index of the key-value layout: sharded time buckets of small hint lists.

A sweeper must find the instances that may need it (``running`` under a lease
that may have expired, ``scheduled`` for longer than the dispatch lease: see
:mod:`triggers_core.engine.leases`) in every session of a store, at a cost that
grows with what is due, not with the number of sessions. A key-value store has
no ordered index, so the layout keeps one of its own, of *hints*.

Layout (keys ``{prefix}x:...``, with no session hash, so they spread over the
servers of a memcached cluster):

* a **hint** is one line ``[session, instance, at(, owner)]`` (JSON, ASCII; ``at``
  in microseconds since 1970): "this instance may be due at ``at``". It is never
  trusted: the sweeper checks it against the session before it reports it
  (:mod:`~triggers_backends.kv.leases`), so a stale hint costs a read, never a
  wrong action;
* hints live in **slots**: small append-only values (up to :data:`SLOT_BYTES`,
  a few dozen hints) under ``x:{kind}:{shard}:{bucket}:{slot}``, for the kind
  (``d`` dispatch, ``l`` lease, ``t`` timer), one of :data:`SHARDS` shards (by the session, so
  one commit files its hints in one slot), the time bucket of ``at``
  (:data:`BUCKET_SECONDS` wide) and the slot number (writers move on to the next
  slot when one is full);
* per kind and shard a **directory** ``x:{kind}:{shard}`` lists the slots that
  exist (``,bucket.slot,bucket.slot,``). A sweep reads the 2 x 16 directories,
  then only the slots of buckets that hold hints, oldest first: never an empty
  bucket, never anything per session.

Writing (:meth:`DueIndex.file`; before the commit's compare-and-swap, so a crash
right after it still leaves the hint, and a losing attempt's hint is only a
stale one): ``gets`` the slot, ``cas`` it with the lines appended, or, if it
does not exist, register it in the directory (``gets``/``cas``), ``add`` it and
check the directory again. A client that commits in one atomic step (Redis)
does the same inside the commit's script instead
(:class:`~triggers_backends.kv_client.IndexAppend`).

Sweeping (:meth:`DueIndex.buckets`, :meth:`DueIndex.rewrite`,
:meth:`DueIndex.prune`): read the directories, then the slots of the buckets
up to the one asked about; the caller checks each hint due by the time it asks
about and rewrites the slot without those it drops (``cas``). A slot of a
bucket wholly in the past that ends up empty is closed with
:data:`~triggers_backends.kv_client.INDEX_TOMBSTONE` (``cas``), removed from
its directory, then deleted. Why no hint is lost on the way:

* a writer never appends to a closed slot (it moves on to the next one), and a
  ``cas`` on a slot closed meanwhile fails: deleting a closed slot deletes only
  the tombstone;
* an entry leaves the directory only once its slot is closed or does not
  exist. A writer that creates a slot registers it before its ``add`` and
  checks again after it; the sweeper removes an entry before it deletes the
  slot. Whichever of the two comes last sees the other's write, so an entry
  removed under a writer's feet is put back;
* the sweeper judges only hints due by the time it asks about: the hint of a
  commit still in flight is due a lease (``running``) or a dispatch lease
  (``scheduled``) after its writer's clock, so it is judged early only if its
  writer stalled, or the clocks disagree, by that much.

Costs: filing a commit's hints is two round trips (``gets``, ``cas``), five when
it creates a slot (once per few dozen hints per shard and bucket); a sweep reads
32 directories plus the slots of the buckets it covers, and each hint is judged
until it is dropped or moved ahead. A directory lists the future slots too (its
size grows with the hints pending), so each process keeps the last parse of each
directory and parses one again only when its value changed; the slots of the
buckets covered are then found by bisection. Lost index keys (memcached evicts them, or
restarts empty) lose only hints: see ``docs/storage.md`` for what the sweep still
guarantees, and :meth:`~triggers_backends.kv.storage.KeyValueStorage.rebuild_due_index`.
"""

from __future__ import annotations

import bisect
import json
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from triggers_backends.kv.keys import check_prefix
from triggers_backends.kv_client import INDEX_TOMBSTONE, IndexAppend, KeyValueClient, KeyValueError
from triggers_core.engine.leases import DueKind

__all__ = [
    "BUCKET_SECONDS",
    "CANDIDATES",
    "SHARDS",
    "SLOT_BYTES",
    "DueIndex",
    "Filing",
    "Hint",
    "Slot",
    "SlotPositions",
    "bucket_of",
    "micros",
    "parse_line",
    "positions_for",
    "shard_of",
]

#: Shards per kind: writers spread over this many directories and slot chains.
SHARDS = 16
#: Width of a time bucket, in seconds.
BUCKET_SECONDS = 60
#: A slot takes more lines only while it holds at most this many bytes.
SLOT_BYTES = 4096
#: Slots an atomic commit may try for one append (a full one sends it to the next).
CANDIDATES = 4
#: Attempts at one append, registration or rewrite, each lost to a concurrent writer.
ATTEMPTS = 100
#: Slot keys per ``get_many`` of a sweep.
READ_BATCH = 500

_LETTER = {DueKind.DISPATCH: "d", DueKind.LEASE: "l", DueKind.TIMER: "t"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BUCKET_MICROS = BUCKET_SECONDS * 1_000_000


def micros(at: datetime) -> int:
    """``at`` (timezone-aware) as whole microseconds since 1970 (exact)."""
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    """The inverse of :func:`micros`, in UTC (OverflowError outside datetime's range)."""
    return _EPOCH + timedelta(microseconds=value)


def bucket_of(at: datetime) -> int:
    """The time bucket of ``at``."""
    return micros(at) // _BUCKET_MICROS


def shard_of(session_hash: str) -> int:
    """The shard of a session (by the digest its keys carry)."""
    return zlib.crc32(session_hash.encode("ascii")) % SHARDS


@dataclass(frozen=True, slots=True)
class Hint:
    """One line of a slot: an instance that may be due at ``at``."""

    session: str
    instance: str
    kind: DueKind
    at: datetime
    #: LEASE: the owner token of the run whose lease it is.
    owner: str | None = None

    def line(self) -> bytes:
        """The hint as stored, newline included."""
        fields: list[object] = [self.session, self.instance, micros(self.at)]
        if self.owner is not None:
            fields.append(self.owner)
        text = json.dumps(fields, ensure_ascii=True, separators=(",", ":"))
        return text.encode("ascii") + b"\n"


def parse_line(line: bytes, kind: DueKind) -> Hint | None:
    """The hint in one stored line (without its newline), or None if it is not one."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list) or len(value) != (4 if kind is DueKind.LEASE else 3):
        return None
    session, instance, at = value[0], value[1], value[2]
    owner = value[3] if kind is DueKind.LEASE else None
    if (
        not isinstance(session, str)
        or not session
        or not isinstance(instance, str)
        or not isinstance(at, int)
        or isinstance(at, bool)
        or (kind is DueKind.LEASE and not (isinstance(owner, str) and owner))
    ):
        return None
    try:
        when = from_micros(at)
    except OverflowError:
        return None
    return Hint(session, instance, kind, when, owner)


def lines_of(raw: bytes) -> list[bytes]:
    """The lines of a slot, without their newlines."""
    return [line for line in raw.split(b"\n") if line]


def _entries(raw: bytes) -> list[str]:
    return [e for e in raw.decode("ascii", "replace").split(",") if e]


def _directory_value(entries: Iterable[str]) -> bytes:
    return ("," + "".join(f"{e}," for e in entries)).encode("ascii")


def _parse_entry(entry: str) -> tuple[int, int] | None:
    bucket, sep, number = entry.partition(".")
    try:
        parsed = int(bucket), int(number)
    except ValueError:
        return None
    return parsed if sep and parsed[1] >= 0 else None


@dataclass(frozen=True, slots=True)
class ParsedDirectory:
    """A directory's entries: the well-formed ones as ``(bucket, number)``, sorted, and the
    malformed ones (to unregister)."""

    entries: tuple[tuple[int, int], ...]
    bad: frozenset[str]

    def up_to(self, last: int) -> tuple[tuple[int, int], ...]:
        """The entries of buckets up to ``last`` (a bisection: never the later ones)."""
        return self.entries[: bisect.bisect_right(self.entries, (last, _NO_SLOT))]


#: Above every slot number (a bisection bound).
_NO_SLOT = 1 << 62


def _parse_directory(raw: bytes) -> ParsedDirectory:
    good: list[tuple[int, int]] = []
    bad: set[str] = set()
    for entry in _entries(raw):
        parsed = _parse_entry(entry)
        if parsed is None:
            bad.add(entry)
        else:
            good.append(parsed)
    good.sort()
    return ParsedDirectory(tuple(good), frozenset(bad))


def _chain_order(group: tuple[tuple[DueKind, int], object]) -> tuple[str, int]:
    return group[0][0].value, group[0][1]


@dataclass(frozen=True, slots=True)
class Filing:
    """Hints of one commit for one slot chain: where the writer starts, and what it adds."""

    kind: DueKind
    shard: int
    bucket: int
    first: int
    append: IndexAppend


@dataclass(frozen=True, slots=True)
class Slot:
    """One slot as a sweep read it (``raw`` None: listed, but it does not exist)."""

    kind: DueKind
    shard: int
    bucket: int
    number: int
    key: str
    directory: str
    raw: bytes | None

    @property
    def entry(self) -> str:
        return f"{self.bucket}.{self.number}"


class SlotPositions:
    """Per slot chain (kind, shard, bucket), the first slot worth trying, and the
    directories as last parsed; thread-safe.

    Shared by every storage of one store in a process (:func:`positions_for`), so
    a storage opened for one message does not walk the full slots again, and a
    sweep does not parse again a directory that did not change.
    """

    def __init__(self) -> None:
        self._first: dict[tuple[DueKind, int, int], int] = {}
        self._lock = threading.Lock()
        #: directory key -> (its value as last read, that value parsed): see :meth:`parsed`.
        self._directories: dict[str, tuple[bytes, ParsedDirectory]] = {}

    def parsed(self, directory: str, raw: bytes) -> ParsedDirectory:
        """``raw`` (the value of ``directory``) parsed: taken from the last read of the
        same directory if its value is the same bytes, else parsed now (and kept).

        A directory lists every slot of its kind and shard, the future ones too,
        so parsing it costs in proportion to the timers pending; between two
        sweeps it rarely changes (only when a slot is created or pruned), and
        an equal value parses to an equal result.
        """
        with self._lock:
            found = self._directories.get(directory)
        if found is not None and found[0] == raw:
            return found[1]
        result = _parse_directory(raw)
        with self._lock:
            if len(self._directories) > 4 * SHARDS * len(_LETTER):
                self._directories.clear()
            self._directories[directory] = (raw, result)
        return result

    def get(self, chain: tuple[DueKind, int, int]) -> int:
        with self._lock:
            return self._first.get(chain, 0)

    def put(self, chain: tuple[DueKind, int, int], number: int) -> None:
        with self._lock:
            if len(self._first) > 4096:  # mostly old buckets: forget them all, cheaply
                self._first.clear()
            if number > self._first.get(chain, 0):
                self._first[chain] = number


_POSITIONS: dict[object, SlotPositions] = {}
_POSITIONS_LOCK = threading.Lock()


def positions_for(store: object) -> SlotPositions:
    """The slot positions of the store named ``store`` (a ``store_identity()``) here."""
    with _POSITIONS_LOCK:
        found = _POSITIONS.get(store)
        if found is None:
            if len(_POSITIONS) > 256:
                _POSITIONS.clear()
            found = _POSITIONS[store] = SlotPositions()
        return found


class DueIndex:
    """The due index of the store behind ``client`` under ``prefix`` (see the module)."""

    def __init__(
        self, client: KeyValueClient, prefix: str, positions: SlotPositions | None = None
    ) -> None:
        self.client = client
        self.prefix = check_prefix(prefix)
        self.positions = positions if positions is not None else SlotPositions()

    # -- keys -------------------------------------------------------------------------

    def directory(self, kind: DueKind, shard: int) -> str:
        """The directory of one kind and shard."""
        return f"{self.prefix}x:{_LETTER[kind]}:{shard}"

    def slot_key(self, kind: DueKind, shard: int, bucket: int, number: int) -> str:
        """Slot ``number`` of one kind, shard and bucket."""
        return f"{self.prefix}x:{_LETTER[kind]}:{shard}:{bucket}:{number}"

    # -- writing ----------------------------------------------------------------------

    def plan(self, shard: int, hints: Iterable[Hint], value_limit: int) -> list[Filing]:
        """The appends that file ``hints`` (of one session, so of one shard).

        ``value_limit`` is the client's ``max_value_size``: a slot holds at most
        that (or :data:`SLOT_BYTES`, if smaller), so a commit with many hints
        makes several appends.
        """
        most = max(1, min(SLOT_BYTES, value_limit))
        groups: dict[tuple[DueKind, int], list[list[bytes]]] = {}
        for hint in hints:
            line = hint.line()
            chunks = groups.setdefault((hint.kind, bucket_of(hint.at)), [[]])
            if chunks[-1] and sum(map(len, chunks[-1])) + len(line) > most:
                chunks.append([])
            chunks[-1].append(line)
        filings: list[Filing] = []
        for (kind, bucket), chunks in sorted(groups.items(), key=_chain_order):
            first = self.positions.get((kind, shard, bucket))
            numbers = range(first, first + CANDIDATES)
            for lines in chunks:
                append = IndexAppend(
                    directory=self.directory(kind, shard),
                    slots=tuple(self.slot_key(kind, shard, bucket, n) for n in numbers),
                    entries=tuple(f"{bucket}.{n}" for n in numbers),
                    lines=b"".join(lines),
                    max_bytes=most,
                )
                filings.append(Filing(kind, shard, bucket, first, append))
        return filings

    def placed(self, filing: Filing, number: int) -> None:
        """Remember that slot ``number`` of ``filing``'s chain took lines (start there)."""
        self.positions.put((filing.kind, filing.shard, filing.bucket), number)

    def file(self, filing: Filing) -> None:
        """Append ``filing``'s lines through the plain client operations (see the module)."""
        client, lines = self.client, filing.append.lines
        number = filing.first
        for _ in range(ATTEMPTS):
            key = self.slot_key(filing.kind, filing.shard, filing.bucket, number)
            found = client.gets(key)
            if found is None:
                entry = f"{filing.bucket}.{number}"
                self.register(filing.append.directory, entry)
                if client.add(key, lines):
                    # Again: a sweeper may have pruned the entry of a slot it found missing.
                    self.register(filing.append.directory, entry)
                    self.placed(filing, number)
                    return
                continue  # created meanwhile: read it again
            value, token = found
            if value == INDEX_TOMBSTONE or (
                value and len(value) + len(lines) > filing.append.max_bytes
            ):
                number += 1
                continue
            if client.cas(key, value + lines, token):
                self.placed(filing, number)
                return
        raise KeyValueError(
            f"could not file due-index hints in {ATTEMPTS} attempts (slot chain "
            f"{self.slot_key(filing.kind, filing.shard, filing.bucket, filing.first)}: "
            "too many concurrent writers?)"
        )

    def register(self, directory: str, entry: str) -> None:
        """Make sure ``entry`` is listed in ``directory``."""
        client, wanted = self.client, f",{entry},".encode("ascii")
        for _ in range(ATTEMPTS):
            found = client.gets(directory)
            if found is None:
                if client.add(directory, wanted):
                    return
                continue
            value, token = found
            if wanted in value:
                return
            base = value if value.endswith(b",") else value + b","
            if client.cas(directory, base + wanted[1:], token):
                return
        raise KeyValueError(f"could not register {entry} in {directory} in {ATTEMPTS} attempts")

    # -- sweeping ---------------------------------------------------------------------

    def buckets(self, kind: DueKind, last: int) -> Iterator[tuple[int, list[Slot]]]:
        """The listed slots of ``kind`` in buckets up to ``last``, bucket by bucket, oldest
        first. Reads the directories once, then the slots in batches."""
        directories = {shard: self.directory(kind, shard) for shard in range(SHARDS)}
        found = self.client.get_many(list(directories.values()))
        listed: list[tuple[int, int, int]] = []
        for shard, directory in directories.items():
            parsed = self.positions.parsed(directory, found.get(directory, b""))
            listed.extend((bucket, shard, number) for bucket, number in parsed.up_to(last))
            if parsed.bad:
                self.unregister(directory, set(parsed.bad))
        listed.sort()
        start = 0
        while start < len(listed):
            end = min(start + READ_BATCH, len(listed))
            while end < len(listed) and listed[end][0] == listed[end - 1][0]:
                end += 1  # never split a bucket between two reads
            batch = listed[start:end]
            keys = [self.slot_key(kind, s, b, n) for b, s, n in batch]
            values = self.client.get_many(keys)
            slots = [
                Slot(kind, s, b, n, key, directories[s], values.get(key))
                for (b, s, n), key in zip(batch, keys, strict=True)
            ]
            group: list[Slot] = []
            for slot in slots:
                if group and group[-1].bucket != slot.bucket:
                    yield group[0].bucket, group
                    group = []
                group.append(slot)
            if group:
                yield group[0].bucket, group
            start = end

    def rewrite(self, slot: Slot, dropped: set[bytes], *, close: bool) -> bool:
        """Remove the ``dropped`` lines from ``slot``; if nothing is left and ``close``,
        close it. True if the slot is closed now (prune it), False otherwise.

        Lines appended meanwhile are kept (they were not judged); after
        :data:`ATTEMPTS` lost races the slot is left for the next sweep.
        """
        client = self.client
        for _ in range(ATTEMPTS):
            found = client.gets(slot.key)
            if found is None:
                return False
            value, token = found
            if value == INDEX_TOMBSTONE:
                return True
            lines = lines_of(value)
            kept = [line for line in lines if line not in dropped]
            if kept:
                if len(kept) == len(lines):
                    return False
                new = b"".join(line + b"\n" for line in kept)
            elif close:
                new = INDEX_TOMBSTONE
            elif value:
                new = b""
            else:
                return False
            if client.cas(slot.key, new, token):
                return new == INDEX_TOMBSTONE
        return False

    def drop_session(self, session: str, shard: int) -> int:
        """Remove every hint of session ``session`` (its UID) from ``shard`` (its shard);
        how many slots were rewritten. For ``delete()``: the sweep would drop them too,
        one by one. Cost: the shard's two directories and the slots they list (a
        sixteenth of the index), plus a rewrite of each slot that held a hint.
        """
        rewritten = 0
        for kind in _LETTER:
            directory = self.directory(kind, shard)
            raw = self.client.get_many([directory]).get(directory, b"")
            listed = [p for e in _entries(raw) if (p := _parse_entry(e)) is not None]
            keys = [self.slot_key(kind, shard, bucket, number) for bucket, number in listed]
            for start in range(0, len(keys), READ_BATCH):
                batch = keys[start : start + READ_BATCH]
                found = self.client.get_many(batch)
                for key, (bucket, number) in zip(batch, listed[start:], strict=False):
                    value = found.get(key)
                    if not value or value == INDEX_TOMBSTONE:
                        continue
                    dropped = {
                        line
                        for line in lines_of(value)
                        if (hint := parse_line(line, kind)) is not None and hint.session == session
                    }
                    if dropped:
                        slot = Slot(kind, shard, bucket, number, key, directory, value)
                        self.rewrite(slot, dropped, close=False)
                        rewritten += 1
        return rewritten

    def prune(self, closed: Iterable[Slot], missing: Iterable[Slot]) -> None:
        """Unlist closed and missing slots from their directories; then delete the closed."""
        closed = list(closed)
        by_directory: dict[str, set[str]] = {}
        for slot in (*closed, *missing):
            by_directory.setdefault(slot.directory, set()).add(slot.entry)
        for directory, entries in by_directory.items():
            self.unregister(directory, entries)
        if closed:
            self.client.delete_many([slot.key for slot in closed])

    def unregister(self, directory: str, entries: set[str]) -> None:
        """Remove ``entries`` from ``directory`` (best effort: the next sweep tries again)."""
        client = self.client
        for _ in range(ATTEMPTS):
            found = client.gets(directory)
            if found is None:
                return
            value, token = found
            current = _entries(value)
            kept = [e for e in current if e not in entries]
            if len(kept) == len(current):
                return
            if client.cas(directory, _directory_value(kept), token):
                return
