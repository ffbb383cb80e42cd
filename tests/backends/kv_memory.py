"""An in-process :class:`~triggers_backends.kv_client.KeyValueClient` for fast layout tests.

Clients built on one :class:`DictStore` share it, like two processes sharing a
server. Tokens are per-key write counters, so it detects ABA like memcached.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from triggers_backends.kv_client import (
    INDEX_TOMBSTONE,
    CasToken,
    IndexAppend,
    IndexAppendNotPlaced,
    KeyValueTooLarge,
)


class DictStore:
    """The shared "server": key -> (value, write counter)."""

    def __init__(self, max_value_size: int = 1024 * 1024) -> None:
        self.lock = threading.Lock()
        self.items: dict[str, tuple[bytes, int]] = {}
        self.writes = 0
        self.max_value_size = max_value_size


class DictKeyValueClient:
    """A client of a :class:`DictStore`."""

    backend_name = "dict"

    def __init__(self, store: DictStore) -> None:
        self.store = store
        self.max_value_size = store.max_value_size

    def _check(self, value: bytes) -> None:
        if len(value) > self.max_value_size:
            raise KeyValueTooLarge(f"{len(value)} bytes > {self.max_value_size}")

    def _put(self, key: str, value: bytes) -> None:
        self.store.writes += 1
        self.store.items[key] = (value, self.store.writes)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        with self.store.lock:
            return {k: self.store.items[k][0] for k in keys if k in self.store.items}

    def gets(self, key: str) -> tuple[bytes, CasToken] | None:
        with self.store.lock:
            found = self.store.items.get(key)
            return None if found is None else (found[0], found[1])

    def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, CasToken]]:
        # Through gets(), so that a subclass's tokens (and hooks) apply to both.
        found = {}
        for key in keys:
            got = self.gets(key)
            if got is not None:
                found[key] = got
        return found

    def add(self, key: str, value: bytes) -> bool:
        self._check(value)
        with self.store.lock:
            if key in self.store.items:
                return False
            self._put(key, value)
            return True

    def cas(self, key: str, value: bytes, token: CasToken) -> bool:
        self._check(value)
        with self.store.lock:
            found = self.store.items.get(key)
            if found is None or found[1] != token:
                return False
            self._put(key, value)
            return True

    def set_many(self, items: Mapping[str, bytes]) -> None:
        for value in items.values():
            self._check(value)
        with self.store.lock:
            for key, value in items.items():
                self._put(key, value)

    def delete_many(self, keys: Sequence[str]) -> None:
        with self.store.lock:
            for key in keys:
                self.store.items.pop(key, None)

    def close(self) -> None:
        pass


class AtomicDictClient(DictKeyValueClient):
    """A :class:`DictKeyValueClient` that also commits in one atomic step (due-index
    hints included)."""

    backend_name = "dict-atomic"
    commits_index_appends = True

    def _slot_for(self, append: IndexAppend, planned: dict[str, int]) -> int:
        """The candidate that takes ``append`` (negative: create it), counting what the
        appends before it in the commit take (``planned``: slot -> bytes); lock held."""
        size = len(append.lines)
        for index, slot in enumerate(append.slots):
            held = planned.get(slot)
            if held is None:
                found = self.store.items.get(slot)
                if found is None:
                    planned[slot] = size
                    return -index - 1
                held = -1 if found[0] == INDEX_TOMBSTONE else len(found[0])
            if held == 0 or (held > 0 and held + size <= append.max_bytes):
                planned[slot] = held + size
                return index
        raise IndexAppendNotPlaced("every candidate slot is full")

    def _place(self, append: IndexAppend, chosen: int) -> None:
        index = -chosen - 1 if chosen < 0 else chosen
        slot = append.slots[index]
        if chosen >= 0:
            self._put(slot, self.store.items[slot][0] + append.lines)
        else:
            self._put(slot, append.lines)
            entry = f",{append.entries[index]},".encode("ascii")
            listed = self.store.items.get(append.directory)
            if listed is None:
                self._put(append.directory, entry)
            elif entry not in listed[0]:
                base = listed[0] if listed[0].endswith(b",") else listed[0] + b","
                self._put(append.directory, base + entry[1:])
        append.placed = index

    def commit(
        self,
        key: str,
        value: bytes,
        token: CasToken | None,
        *,
        documents: Mapping[str, bytes],
        obsolete: Sequence[str],
        marker: tuple[str, bytes] | None,
        appends: Sequence[IndexAppend] = (),
    ) -> bool:
        for each in (value, *documents.values(), *([marker[1]] if marker else [])):
            self._check(each)
        with self.store.lock:
            found = self.store.items.get(key)
            if found is not None and found[0] == value:
                return True  # a retry of a commit that landed
            if (found is not None) if token is None else (found is None or found[1] != token):
                return False
            planned: dict[str, int] = {}
            chosen = [self._slot_for(append, planned) for append in appends]
            for append, slot in zip(appends, chosen, strict=True):
                self._place(append, slot)
            for name, document in documents.items():
                self._put(name, document)
            self._put(key, value)
            if marker is not None and marker[0] not in self.store.items:
                self._put(*marker)
            for name in obsolete:
                self.store.items.pop(name, None)
            return True
