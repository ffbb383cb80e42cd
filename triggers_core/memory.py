"""In-process storage: thread-safe, with the same compare-and-swap semantics as a database.

Sessions are kept as JSON text, exactly like the durable backends, so
serialization and concurrency bugs show up in tests that use it.
"""

from __future__ import annotations

import threading
from collections.abc import Collection

import attrs

from triggers_core.errors import ConflictError
from triggers_core.redaction import redact
from triggers_core.serialization import (
    dumps,
    header_from_json,
    header_to_json,
    instance_from_json,
    instance_to_json,
    loads,
)
from triggers_core.state import SessionState, TaskInstance
from triggers_core.storage import Snapshot, Storage, Version

__all__ = ["MemoryStorage", "MemoryStore"]


@attrs.define
class _Session:
    version: int
    header: str
    instances: dict[str, str] = attrs.field(factory=dict)
    unresolved: set[str] = attrs.field(factory=set)


class MemoryStore:
    """A process-local "database" of sessions; storages on one store share sessions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}

    def clear(self) -> None:
        """Forget every session."""
        with self._lock:
            self._sessions.clear()


_NAMED_STORES: dict[str, MemoryStore] = {}
_NAMED_LOCK = threading.Lock()


def named_store(name: str) -> MemoryStore:
    """The process-wide store behind ``memory://name`` (``memory://`` is ``""``)."""
    with _NAMED_LOCK:
        return _NAMED_STORES.setdefault(name, MemoryStore())


class MemoryStorage(Storage):
    """One session in a :class:`MemoryStore` (the process-wide default store if none)."""

    backend_name = "memory"

    def __init__(self, uid: str, store: MemoryStore | None = None, *, store_name: str = "") -> None:
        super().__init__(uid)
        self.store_name = store_name
        self._private = store is not None
        self.store = store if store is not None else named_store(store_name)

    @classmethod
    def from_url(cls, url: str, uid: str) -> MemoryStorage:
        """``memory://`` (the default store) or ``memory://name`` (a named store).

        The name is everything after ``memory://``, compared exactly:
        ``memory://a/b``, ``memory://ab`` and ``memory://ab/`` are three stores.
        """
        _scheme, _sep, name = url.partition("://")
        return cls(uid, store_name=name)

    def reference(self) -> str | None:
        """``memory://name`` for a named store; None for a private :class:`MemoryStore`."""
        return None if self._private else redact(f"memory://{self.store_name}")

    def _read(self, include: Collection[str] | None) -> Snapshot:
        store = self.store
        with store._lock:
            session = store._sessions.get(self.uid)
            if session is None:
                return Snapshot(SessionState(), None)
            header = session.header
            if include is None:
                docs = list(session.instances.values())
            else:
                names = set(session.unresolved)
                names.update(n for n in include if n in session.instances)
                docs = [session.instances[n] for n in names]
            version = session.version
        instances: dict[str, TaskInstance] = {}
        for doc in docs:
            instance = instance_from_json(loads(doc, "instance"))
            instances[instance.name] = instance
        where = f"memory storage, session {self.uid!r}"
        return Snapshot(header_from_json(loads(header, where), instances, where), version)

    def load(self, include: Collection[str] = ()) -> Snapshot:
        return self._read(include)

    def load_full(self) -> Snapshot:
        return self._read(None)

    def compare_and_swap(
        self, expected: Version | None, state: SessionState, changed: Collection[str]
    ) -> Version:
        header = dumps(header_to_json(state))
        docs = {name: state.instances[name] for name in changed}
        encoded = {name: dumps(instance_to_json(inst)) for name, inst in docs.items()}
        store = self.store
        with store._lock:
            session = store._sessions.get(self.uid)
            current = None if session is None else session.version
            if current != expected:
                raise ConflictError(
                    f"version is {current!r}, expected {expected!r}",
                    backend=self.backend_name,
                    session=self.uid,
                )
            if session is None:
                session = store._sessions[self.uid] = _Session(version=0, header=header)
            session.version += 1
            session.header = header
            for name, text in encoded.items():
                session.instances[name] = text
                if docs[name].is_resolved:
                    session.unresolved.discard(name)
                else:
                    session.unresolved.add(name)
            return session.version
