"""Stored task configurations, decoded once per process and shared by every session.

A storage opened for one message or one fire decodes its session's stored
configuration before the engine can run: JSON, then every task's directives
checked (:func:`~triggers_core.engine.serialization.config_from_json`), then,
on first use, the table's trigger index. Its cost grows with the number of
tasks, and Celery workers and web processes meet each session with a fresh
storage. Sessions of one application nearly always store the same
configuration, so :data:`CONFIGS` keeps the decoded tables of the last few
distinct configurations, keyed by their stored JSON text: a storage that
reads a text decoded before gets the same immutable
:class:`~triggers_core.engine.task_table.TaskTable` (its trigger index
included) at the cost of hashing the text.

Only the text decides the result, so sharing is safe across sessions and
stores: a text is checked in full the first time it is met, and a text that
fails is never kept (each reader gets its own error, naming its session).
Bounded: :data:`MAX_CONFIGS` entries, each at most :data:`MAX_TEXT_CHARS`
characters (a larger configuration is decoded every time, as before).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from triggers_core.engine.serialization import config_from_json, loads
from triggers_core.engine.task_table import TaskTable

__all__ = ["CONFIGS", "MAX_CONFIGS", "MAX_TEXT_CHARS", "ConfigMemo"]

#: Distinct configurations kept per process.
MAX_CONFIGS = 64
#: Longest stored configuration text kept (characters); longer ones are decoded each time.
MAX_TEXT_CHARS = 256 * 1024


class ConfigMemo:
    """Decoded task configurations by their JSON text, least recently used dropped first.

    Thread-safe; a forked process keeps a valid copy. Cost of a hit: one hash
    of the text (and, for :meth:`from_body`, one compact encoding of the body).
    """

    def __init__(self, entries: int = MAX_CONFIGS, max_chars: int = MAX_TEXT_CHARS) -> None:
        self.entries = entries
        self.max_chars = max_chars
        self._tables: OrderedDict[str, TaskTable] = OrderedDict()
        self._lock = threading.Lock()

    def from_text(self, text: str, what: str = "configuration") -> TaskTable:
        """The table stored as JSON ``text``; :class:`SerializationError` if it is not one."""
        found = self._get(text)
        if found is not None:
            return found
        return self._put(text, config_from_json(loads(text, what), what))

    def from_body(self, body: Any, what: str = "configuration") -> TaskTable:
        """The table of the decoded JSON object ``body`` (a document's body, already parsed)."""
        if not isinstance(body, Mapping):
            return config_from_json(body, what)  # raises the usual error
        try:
            # In the stored order (a table iterates its tasks in it), compact.
            text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            return config_from_json(body, what)  # not JSON: let the decoder say why
        found = self._get(text)
        if found is not None:
            return found
        return self._put(text, config_from_json(body, what))

    def clear(self) -> None:
        """Forget every kept table."""
        with self._lock:
            self._tables.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._tables)

    def _get(self, text: str) -> TaskTable | None:
        if len(text) > self.max_chars:
            return None
        with self._lock:
            found = self._tables.get(text)
            if found is not None:
                self._tables.move_to_end(text)
            return found

    def _put(self, text: str, table: TaskTable) -> TaskTable:
        if len(text) > self.max_chars or self.entries <= 0:
            return table
        with self._lock:
            kept = self._tables.setdefault(text, table)  # a concurrent decode of it may have won
            self._tables.move_to_end(text)
            while len(self._tables) > self.entries:
                self._tables.popitem(last=False)
            return kept


#: The process's memo, used by the SQL and key-value storages.
CONFIGS = ConfigMemo()
