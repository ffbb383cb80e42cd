"""Key-value adapter for Django's ``LocMemCache``: correct within one process only.

A ``LocMemCache`` keeps its entries in a module-level dict per ``LOCATION``, shared
by every thread of the process and guarded by one lock; the adapter reads and
writes that dict under the same lock, so ``cas`` and ``add`` are atomic among
threads. Other processes have their own dict: a storage on this adapter is for
tests, demos and single-process programs.

Entries are stored as :class:`_Entry` objects, not pickled bytes: Django's own
``cache.get`` on one of our keys fails with a ``TypeError`` instead of unpickling
anything, and the entry object itself is the ``cas`` token, so a key rewritten
with identical bytes still counts as changed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, final

from triggers_backends.django_cache._common import AdapterOptions, check_sizes
from triggers_backends.kv_client import CasToken, KeyValueError

__all__ = ["LocMemKeyValueClient", "for_locmem_cache"]


@final
class _Entry:
    """One value we wrote; a new object per write."""

    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value


class LocMemKeyValueClient:
    """A :class:`~triggers_backends.kv_client.KeyValueClient` on one ``LocMemCache``."""

    backend_name = "django-cache/locmem"
    #: Each process has its own memory: no cross-process guarantee.
    shared_across_processes = False

    def __init__(self, cache: Any, options: AdapterOptions) -> None:
        self._cache = cache
        self._data = cache._cache
        self._expiry = cache._expire_info
        self._lock = cache._lock
        self._options = options
        self.max_value_size = options.max_value_size

    def __repr__(self) -> str:
        return f"<LocMemKeyValueClient alias={self._options.alias!r}>"

    def _live(self, key: str) -> _Entry | None:
        """The entry under ``key`` (a mapped key) unless missing or expired; hold the lock."""
        if key not in self._data:
            return None
        expires = self._expiry.get(key, -1)
        if expires is not None and expires <= time.time():
            self._data.pop(key, None)
            self._expiry.pop(key, None)
            return None
        entry = self._data[key]
        if not isinstance(entry, _Entry):
            raise KeyValueError(
                f"{self.backend_name}: key {key!r} holds a value Triggers did not write "
                "(another program uses the same cache keys?)"
            )
        return entry

    def _put(self, key: str, value: bytes) -> None:
        # Never culls: only Django's own set() evicts entries (see docs/storage.md).
        self._data[key] = _Entry(bytes(value))
        self._data.move_to_end(key, last=False)
        timeout = self._options.timeout
        self._expiry[key] = None if timeout is None else time.time() + timeout

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        with self._lock:
            for key in keys:
                entry = self._live(self._cache.make_key(key))
                if entry is not None:
                    found[key] = entry.value
        return found

    def gets(self, key: str) -> tuple[bytes, CasToken] | None:
        with self._lock:
            entry = self._live(self._cache.make_key(key))
        return None if entry is None else (entry.value, entry)

    def add(self, key: str, value: bytes) -> bool:
        check_sizes([value], self.max_value_size, self.backend_name)
        mapped = self._cache.make_key(key)
        with self._lock:
            if self._live(mapped) is not None:
                return False
            self._put(mapped, value)
            return True

    def cas(self, key: str, value: bytes, token: CasToken) -> bool:
        check_sizes([value], self.max_value_size, self.backend_name)
        mapped = self._cache.make_key(key)
        with self._lock:
            if self._live(mapped) is not token:
                return False
            self._put(mapped, value)
            return True

    def set_many(self, items: Mapping[str, bytes]) -> None:
        check_sizes(items.values(), self.max_value_size, self.backend_name)
        mapped = [(self._cache.make_key(k), v) for k, v in items.items()]
        with self._lock:
            for key, value in mapped:
                self._put(key, value)

    def delete_many(self, keys: Sequence[str]) -> None:
        mapped = [self._cache.make_key(k) for k in keys]
        with self._lock:
            for key in mapped:
                self._data.pop(key, None)
                self._expiry.pop(key, None)

    def close(self) -> None:
        """Nothing to release."""


def for_locmem_cache(cache: Any, options: AdapterOptions) -> LocMemKeyValueClient:
    """Adapter for ``django.core.cache.backends.locmem.LocMemCache``."""
    return LocMemKeyValueClient(cache, options)
