"""The session index of the key-value layout: which sessions a store holds, for listing.

A key-value store cannot list its keys, so the layout keeps a list of its
sessions, sharded like the due index (:mod:`~triggers_backends.kv.due_index`) so
that concurrent creations spread over :data:`SHARDS` places instead of meeting
on one key.

Layout (keys ``{prefix}s:...``, with no session hash, so they spread over the
servers of a memcached cluster):

* a **line** ``[epoch, uid]`` (JSON, ASCII, newline-terminated) says "session
  ``uid`` was created with this epoch" (the random token the active document
  carries from the session's creation on). It is never trusted alone: a
  listing reads the session's active document and keeps the line only if it
  exists with that epoch, so a line of a deleted session, or of a creator that
  lost the race to another one, costs a read and is never listed;
* lines live in **slots**, append-only values of up to :data:`SLOT_BYTES` (one
  longer line gets a slot of its own), ``s:{shard}:{n}`` for the shard of the
  session (its digest, as for the due index) and slot numbers from 0 up;
* per shard a **head** ``s:{shard}`` holds how many slots the shard has (an
  ASCII integer). A writer raises it (``gets``/``cas``) *before* it creates a
  slot, so a listing that reads the heads finds every slot with a line.

Writes happen only when a session is created (one line), when a session stored
before this index existed is first committed to (filed then), and when one is
deleted (its line removed): nothing per fire or per status change. Filing is
``gets`` of the head, ``gets`` and ``cas`` (or ``add``) of the last slot: 3
round trips, 5 when it opens a new slot (once per ~50 sessions of a shard).
Removal is ``gets``/``cas`` of the slot the active document names.

Listing (:meth:`SessionIndex.scan`) reads the 16 heads, then the slots in order
(shard, slot, lines ordered by epoch within a slot, so a cursor, ``shard.slot.epoch``,
stays valid when lines are removed before it). What it costs per listed page,
and the filters, are in :meth:`~triggers_backends.kv.storage.KeyValueStorage.list_store`.

Eviction: a cache that evicts (memcached, Django's local-memory and database
caches) may drop a slot or a head, and the sessions in it are then missing from
listings until the index is rebuilt
(:meth:`~triggers_backends.kv.storage.KeyValueStorage.rebuild_session_index`).
Such a client's listings say they may be incomplete.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from triggers_backends.kv.due_index import SHARDS, shard_of
from triggers_backends.kv.keys import check_prefix
from triggers_backends.kv_client import KeyValueClient, KeyValueError

__all__ = [
    "SHARDS",
    "SLOT_BYTES",
    "IndexLine",
    "SessionIndex",
    "client_evicts",
    "parse_cursor",
    "shard_of",
]

#: A slot takes more lines only while it holds at most this many bytes.
SLOT_BYTES = 4096
#: Attempts at one append, head update or removal, each lost to a concurrent writer.
ATTEMPTS = 100
#: Slot keys per read of a listing.
READ_BATCH = 64
#: Slots probed at a time when a shard's head is missing (evicted).
PROBE = 16


def client_evicts(client: KeyValueClient) -> bool:
    """True if the store behind ``client`` may drop keys on its own (an LRU, a cull).

    A client class says so with a class attribute ``evicts``; one that does not
    is assumed to evict (the safe answer for listings).
    """
    return bool(getattr(client, "evicts", True))


@dataclass(frozen=True, slots=True)
class IndexLine:
    """One line of a slot, where a listing found it."""

    shard: int
    slot: int
    epoch: str
    uid: str

    def cursor(self) -> str:
        """The cursor of the position right after this line."""
        return f"{self.shard}.{self.slot}.{self.epoch}"


def line_of(uid: str, epoch: str) -> bytes:
    """The line stored for session ``uid`` created with ``epoch``, newline included."""
    return json.dumps([epoch, uid], ensure_ascii=True, separators=(",", ":")).encode() + b"\n"


def _parse_line(raw: bytes) -> tuple[str, str] | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, str) and v for v in value)
        and value[0].isascii()
        and value[0].isalnum()
    ):
        return value[0], value[1]
    return None


def parse_cursor(cursor: object) -> tuple[int, int, str] | None:
    """``(shard, slot, epoch)`` of a listing cursor (None: from the start); ValueError if bad."""
    if cursor is None:
        return None
    if not isinstance(cursor, str):
        raise ValueError(f"cursor must be a string from a previous page, got {cursor!r}")
    parts = cursor.split(".")
    problem = ValueError(f"cursor {cursor!r} did not come from this store's listing")
    if len(parts) != 3 or not all(p.isascii() for p in parts):
        raise problem
    shard_text, slot_text, epoch = parts
    if not (shard_text.isdigit() and slot_text.isdigit() and epoch.isalnum() and len(epoch) <= 32):
        raise problem
    if len(shard_text) > 3 or len(slot_text) > 12:
        raise problem
    shard, slot = int(shard_text), int(slot_text)
    if not 0 <= shard < SHARDS:
        raise problem
    return shard, slot, epoch


class _Positions:
    """Per shard, the slot a writer of this process tried last (thread-safe)."""

    def __init__(self) -> None:
        self._slot: dict[tuple[object, int], int] = {}
        self._lock = threading.Lock()

    def get(self, store: object, shard: int) -> int:
        with self._lock:
            return self._slot.get((store, shard), -1)

    def put(self, store: object, shard: int, slot: int) -> None:
        with self._lock:
            if len(self._slot) > 4096:
                self._slot.clear()
            if slot > self._slot.get((store, shard), -1):
                self._slot[(store, shard)] = slot


_POSITIONS = _Positions()


class SessionIndex:
    """The session index of the store behind ``client`` under ``prefix`` (see the module).

    ``store`` names the store in this process (a ``store_identity()``), so that
    writers remember the open slot of each shard across storage objects.
    """

    def __init__(self, client: KeyValueClient, prefix: str, store: object = None) -> None:
        self.client = client
        self.prefix = check_prefix(prefix)
        self.store = store if store is not None else (id(client), prefix)

    # -- keys -------------------------------------------------------------------------

    def head(self, shard: int) -> str:
        """The key holding how many slots ``shard`` has."""
        return f"{self.prefix}s:{shard}"

    def slot_key(self, shard: int, number: int) -> str:
        """Slot ``number`` of ``shard``."""
        return f"{self.prefix}s:{shard}:{number}"

    # -- writing ----------------------------------------------------------------------

    def file(self, uid: str, epoch: str, shard: int, value_limit: int) -> int:
        """Append the line of ``uid`` (created with ``epoch``) to ``shard``; its slot number.

        ``value_limit`` is the client's ``max_value_size`` (a slot never holds more).
        """
        client, line = self.client, line_of(uid, epoch)
        most = max(1, min(SLOT_BYTES, value_limit))
        if len(line) > value_limit:
            raise KeyValueError(
                f"the session index line of a {len(uid)}-character UID ({len(line)} bytes) "
                f"is larger than one value may be ({value_limit} bytes)"
            )
        remembered = _POSITIONS.get(self.store, shard)
        count = self._count(shard)
        number = max(remembered, (count or 1) - 1, 0)
        for _ in range(ATTEMPTS):
            key = self.slot_key(shard, number)
            found = client.gets(key)
            if found is None:
                self._raise_head(shard, number + 1)  # before the slot exists: see the module
                if client.add(key, line):
                    _POSITIONS.put(self.store, shard, number)
                    return number
                continue  # created meanwhile: read it again
            value, token = found
            if value and len(value) + len(line) > most:
                number += 1
                continue
            if client.cas(key, value + line, token):
                if count is None or count < number + 1:  # the head was evicted: restore it
                    self._raise_head(shard, number + 1)
                _POSITIONS.put(self.store, shard, number)
                return number
        raise KeyValueError(
            f"could not file a session in the session index in {ATTEMPTS} attempts (shard "
            f"{shard}: too many concurrent writers?)"
        )

    def _count(self, shard: int) -> int | None:
        raw = self.client.get_many([self.head(shard)]).get(self.head(shard))
        return _count_of(raw)

    def _raise_head(self, shard: int, count: int) -> None:
        client, key = self.client, self.head(shard)
        for _ in range(ATTEMPTS):
            found = client.gets(key)
            if found is None:
                if client.add(key, str(count).encode("ascii")):
                    return
                continue
            value, token = found
            current = _count_of(value)
            if current is not None and current >= count:
                return
            if client.cas(key, str(count).encode("ascii"), token):
                return
        raise KeyValueError(f"could not update {key} in {ATTEMPTS} attempts")

    def remove(self, uid: str, epoch: str, shard: int, slot: int | None) -> bool:
        """Remove the line of ``uid`` (``epoch``) from slot ``slot`` of ``shard``, or, if it
        is not there (``slot`` None or the line was filed again elsewhere), from whichever
        slot of the shard holds it. True if a line was removed."""
        line = line_of(uid, epoch)
        if slot is not None and self._remove_from(self.slot_key(shard, slot), line):
            return True
        for number, raw in self._slots(shard):
            if raw is not None and line in _lines(raw) and number != slot:
                return self._remove_from(self.slot_key(shard, number), line)
        return False

    def _remove_from(self, key: str, line: bytes) -> bool:
        client = self.client
        for _ in range(ATTEMPTS):
            found = client.gets(key)
            if found is None:
                return False
            value, token = found
            lines = _lines(value)
            if line not in lines:
                return False
            lines.remove(line)
            if client.cas(key, b"".join(lines), token):
                return True
        raise KeyValueError(f"could not remove a session from {key} in {ATTEMPTS} attempts")

    # -- reading ----------------------------------------------------------------------

    def _slots(
        self, shard: int, first: int = 0, count: int | bool | None = False
    ) -> Iterator[tuple[int, bytes | None]]:
        """``(number, value or None)`` of the slots of ``shard`` from ``first`` on."""
        if count is False:
            count = self._count(shard)
        if count is not None:
            for start in range(first, count, READ_BATCH):
                numbers = range(start, min(start + READ_BATCH, count))
                keys = [self.slot_key(shard, n) for n in numbers]
                found = self.client.get_many(keys)
                for n, key in zip(numbers, keys, strict=True):
                    yield n, found.get(key)
            first = max(first, count)
        # Past the head (or without one, evicted): probe until a batch is all missing.
        start = first
        while True:
            numbers = range(start, start + PROBE)
            keys = [self.slot_key(shard, n) for n in numbers]
            found = self.client.get_many(keys)
            if not found:
                return
            for n, key in zip(numbers, keys, strict=True):
                yield n, found.get(key)
            start += PROBE

    def scan(self, after: tuple[int, int, str] | None) -> Iterator[IndexLine]:
        """Every line after the position ``after`` (a parsed cursor), in listing order.

        Reads the heads once, then the slots ``READ_BATCH`` at a time; lines that
        are not lines (damage) are skipped.
        """
        heads = self.client.get_many([self.head(s) for s in range(SHARDS)])
        first_shard = 0 if after is None else after[0]
        for shard in range(first_shard, SHARDS):
            count = _count_of(heads.get(self.head(shard)))
            first = after[1] if after is not None and shard == after[0] else 0
            for number, raw in self._slots(shard, first, count):
                if raw is None:
                    continue
                parsed = sorted({p for line in _lines(raw) if (p := _parse_line(line))})
                for epoch, uid in parsed:
                    if after is not None and (shard, number) == after[:2] and epoch <= after[2]:
                        continue
                    yield IndexLine(shard, number, epoch, uid)

    def members(self) -> set[tuple[str, str]]:
        """Every ``(uid, epoch)`` the index lists (a rebuild's check; reads it all)."""
        return {(line.uid, line.epoch) for line in self.scan(None)}


def _lines(raw: bytes) -> list[bytes]:
    """The lines of a slot, newlines included."""
    return [line + b"\n" for line in raw.split(b"\n") if line]


def _count_of(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    if not (text.isdigit() and len(text) <= 12):
        return None
    return int(text)


def lines_in(values: Sequence[bytes]) -> int:
    """How many lines ``values`` (raw slots) hold (for tests and diagnostics)."""
    return sum(len(_lines(v)) for v in values)
