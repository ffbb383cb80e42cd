"""A bounded, thread-safe cache of decoded immutable documents, by key.

Immutable documents never change under their key (the key carries the
revision of the attempt that wrote it), so a decoded copy is valid for as long
as it is kept: a fire that finds the configuration, the latest kwargs and the
index pages it needs here reads nothing but the active document.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

__all__ = ["DocumentCache"]

_MISSING = object()


class DocumentCache:
    """Least-recently-used, bounded by the encoded size of what it holds."""

    def __init__(self, max_bytes: int = 8 * 1024 * 1024, max_entry: int = 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self._items: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        """The decoded document, or :data:`MISSING` (``cache.missing``)."""
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return _MISSING
            self._items.move_to_end(key)
            return found[1]

    missing = _MISSING

    def put(self, key: str, size: int, value: Any) -> None:
        """Keep ``value`` (encoded size ``size``) unless it is larger than one entry may be."""
        if size > self.max_entry:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[0]
            self._items[key] = (size, value)
            self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                _, (dropped, _) = self._items.popitem(last=False)
                self._bytes -= dropped

    def discard(self, keys: list[str]) -> None:
        """Forget ``keys`` (documents that were deleted)."""
        with self._lock:
            for key in keys:
                old = self._items.pop(key, None)
                if old is not None:
                    self._bytes -= old[0]
