"""One session's documents on a key-value client: read, decoded, written, forgotten.

:class:`SessionDocuments` is the part of
:class:`~triggers_backends.kv.storage.KeyValueStorage` that talks to the
client document by document: reads in batches through the storage's decoded
document cache, writes in batches, best-effort deletes, and errors that name
the session. :class:`~triggers_backends.kv.commit.Commit` writes through it, so
the commit and the storage both import this module and neither imports the
other. What each document holds is in :mod:`~triggers_backends.kv.documents`
and :mod:`~triggers_backends.kv.active`; the commit order, and why it is safe,
in :mod:`~triggers_backends.kv.storage`.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar, cast

from triggers_backends.kv.active import Active, Page
from triggers_backends.kv.cache import DocumentCache
from triggers_backends.kv.documents import DocRef, DocumentMissing, decode, join, stored_keys
from triggers_backends.kv.keys import SessionKeys, digest
from triggers_backends.kv_client import (
    AtomicCommitClient,
    CasToken,
    GetsWithClient,
    KeyValueClient,
    KeyValueError,
)
from triggers_core.engine.idempotency import FireKey, decode_scheduled
from triggers_core.engine.serialization import instance_from_json
from triggers_core.engine.state import TaskInstance
from triggers_core.errors import ConflictError, SerializationError, StorageError
from triggers_core.runtime.config_memo import CONFIGS
from triggers_core.runtime.storage import Storage

__all__ = [
    "READ_BATCH",
    "WRITE_BATCH",
    "WRITE_BATCH_BYTES",
    "SessionDocuments",
    "Want",
    "fetch_across",
]

T = TypeVar("T")

#: Keys per ``get_many`` and per ``set_many`` (and bytes per ``set_many``).
READ_BATCH = 500
WRITE_BATCH = 200
WRITE_BATCH_BYTES = 4 * 1024 * 1024


class Want(NamedTuple):
    """One immutable document to read: where it is, its kind, and who it is about."""

    key: str
    ref: DocRef
    kind: str  # config | latest | page | instance | fire
    #: The trigger (latest), (task, page number) (page), the instance name (instance)
    #: or the FireKey (fire).
    about: Any = None


class SessionDocuments(Storage):
    """The documents of one session on a client (the state ``KeyValueStorage`` sets up)."""

    client: KeyValueClient
    #: The client again if it commits in one atomic step (see ``Commit.apply``).
    atomic: AtomicCommitClient | None
    keys: SessionKeys
    _label: str
    _cache: DocumentCache
    _seen_lock: threading.Lock
    # (epoch, version) -> fire record digests a recent load found absent at it.
    _absent: OrderedDict[tuple[str, int], frozenset[str]]
    # The last active document this storage read, raw and parsed (its epoch names the
    # fire record pointers a load reads with the next one: see SessionAssembly._prefetch).
    _parsed: tuple[bytes, Active] | None

    @property
    def latest_source(self) -> object:
        """What names this session's stored latest kwargs (see ``LatestKwargs.source``)."""
        return (self.store_identity(), self.uid)

    # -- errors -------------------------------------------------------------------

    def _error(self, message: str) -> StorageError:
        return StorageError(message, backend=self._label, session=self.uid)

    def _call(self, doing: str, call: Callable[..., T], *args: Any) -> T:
        try:
            return call(*args)
        except KeyValueError as exc:
            raise self._error(f"{doing} failed: {exc}") from exc

    def _what(self, kind: str, key: str) -> str:
        return f"{self._label} storage, session {self.uid!r}: {kind} ({key})"

    # -- reading documents --------------------------------------------------------

    def _get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), READ_BATCH):
            batch = keys[start : start + READ_BATCH]
            found.update(self._call("reading documents", self.client.get_many, batch))
        return found

    def _fetch(self, wants: Sequence[Want]) -> list[Any]:
        """Decoded documents (cached, else one round trip); DocumentMissing if one is gone."""
        cache = self._cache
        results = [cache.get(w.key) for w in wants]
        misses = [i for i, value in enumerate(results) if value is cache.missing]
        if not misses:
            return results
        keys = [k for i in misses for k in stored_keys(wants[i].key, wants[i].ref)]
        found = self._get_many(keys)
        for i in misses:
            results[i] = self._decoded(wants[i], found)
        return results

    def _gather(
        self, wants: Sequence[Want], raw: Sequence[str]
    ) -> tuple[list[Any], Mapping[str, bytes]]:
        """:meth:`_fetch` of ``wants``, and the values of the keys ``raw`` that exist
        (uncached, undecoded): one round trip for both, none if the cache has every
        document and ``raw`` is empty."""
        cache = self._cache
        results = [cache.get(w.key) for w in wants]
        misses = [i for i, value in enumerate(results) if value is cache.missing]
        if not misses and not raw:
            return results, {}
        keys = [k for i in misses for k in stored_keys(wants[i].key, wants[i].ref)]
        found = self._get_many([*keys, *raw])
        for i in misses:
            results[i] = self._decoded(wants[i], found)
        return results, found

    def _decoded(self, want: Want, found: Mapping[str, bytes]) -> Any:
        """One wanted document from fetched items, decoded and cached; DocumentMissing if gone."""
        what = self._what(_LABELS[want.kind](want.about), want.key)
        raw = join(want.key, want.ref, found, what)
        if raw is None:
            raise DocumentMissing(want.key)
        value = _CONVERT[want.kind](decode(raw, want.kind, self.uid, what), what, want.about)
        self._cache.put(want.key, len(raw), value)
        return value

    def _read_active(self) -> tuple[Active, CasToken] | None:
        found = self._call("reading the active document", self.client.gets, self.keys.active)
        return self._parse_found(found)

    def _read_active_with(
        self, others: Sequence[str]
    ) -> tuple[tuple[Active, CasToken] | None, Mapping[str, bytes]]:
        """:meth:`_read_active`, and the values of ``others`` read no earlier than it: in
        the same request on a client with ``gets_with``, else in a second one."""
        if not others:
            return self._read_active(), {}
        if callable(getattr(type(self.client), "gets_with", None)):
            client = cast(GetsWithClient, self.client)
            found, values = self._call(
                "reading the active document", client.gets_with, self.keys.active, others
            )
            return self._parse_found(found), values
        return self._read_active(), self._get_many(others)

    def _parse_found(self, found: tuple[bytes, CasToken] | None) -> tuple[Active, CasToken] | None:
        """A read of the active document (value and token, or None), parsed."""
        if found is None:
            return None
        raw, token = found
        return self._parse_active(raw), token

    def _parse_active(self, raw: bytes) -> Active:
        """The active document ``raw``, parsed (the parse of the last read of its key by any
        storage sharing the cache, if its bytes did not change: a sweep's check of a
        session and the load after it parse it once)."""
        key = self.keys.active
        memo = key + _PARSED  # never a stored key: those have no control characters
        cache = self._cache
        parsed = cache.get(memo)
        if parsed is not cache.missing and parsed[0] == raw:  # unchanged since then
            active: Active = parsed[1]
        else:
            what = self._what("active document", key)
            active = Active.from_body(decode(raw, "active", self.uid, what), what)
            cache.put(memo, len(raw), (raw, active))
        self._parsed = (raw, active)
        return active

    def _remember_parse(self, raw: bytes, active: Active) -> None:
        """After a won swap of ``raw`` (the encoding of ``active``): keep it as the parse of
        those bytes, which the next read of the key finds unless another writer moved on."""
        what = self._what("active document", self.keys.active)
        self._cache.put(self.keys.active + _PARSED, len(raw), (raw, active.as_read(what)))

    # -- the three document kinds behind the header -------------------------------

    def _config_want(self, ref: DocRef) -> Want:
        return Want(self.keys.config(ref.rev), ref, "config")

    def _latest_want(self, trigger: str, ref: DocRef) -> Want:
        return Want(self.keys.latest(trigger, ref.rev), ref, "latest", trigger)

    def _page_want(self, task: str, number: int, ref: DocRef) -> Want:
        return Want(self.keys.page(task, number, ref.rev), ref, "page", (task, number))

    def _instance_want(self, name: str, ref: DocRef) -> Want:
        return Want(self.keys.instance(name, ref.rev), ref, "instance", name)

    def _record_want(self, epoch: str, key: FireKey, ref: DocRef) -> Want:
        return Want(self.keys.fire_record(epoch, digest(key.digest), ref.rev), ref, "fire", key)

    def _check_moved_on(self, version: int, key: str) -> None:
        """Return if the active document moved on from ``version``; else the key was lost."""
        current = self._read_active()
        if current is not None and current[0].version == version:
            raise self._error(
                f"document {key} referenced by version {version} of the active document is "
                "missing (evicted?): the session is damaged"
            )

    def _check_records_absent(self, base: Active, records: Sequence[str]) -> None:
        """ConflictError if a record a commit on ``base`` creates is already stored.

        A record is stored if ``base`` created it or its pointer exists. A load
        of ``base``'s version that found a record absent settles it (a pointer
        can appear only for a record committed at an earlier version, which
        that load would have seen); others cost one read of their pointers.
        """
        clash = [r for r in records if r in base.fires]
        if not clash:
            with self._seen_lock:
                known = self._absent.get((base.epoch, base.version), frozenset())
            unknown = [r for r in records if r not in known]
            if unknown:
                pointers = {self.keys.fire_pointer(base.epoch, r): r for r in unknown}
                clash = [pointers[k] for k in self._get_many(list(pointers))]
        if clash:
            raise ConflictError(
                "a fire record this write creates is already stored (that fire was "
                "applied meanwhile); nothing was written",
                backend=self._label,
                session=self.uid,
            )

    # -- writing and forgetting documents --------------------------------------------

    def _write(self, items: Mapping[str, bytes]) -> None:
        batch: dict[str, bytes] = {}
        size = 0
        for key, value in items.items():
            batch[key] = value
            size += len(value)
            if len(batch) >= WRITE_BATCH or size >= WRITE_BATCH_BYTES:
                self._call("writing documents", self.client.set_many, batch)
                batch, size = {}, 0
        if batch:
            self._call("writing documents", self.client.set_many, batch)

    def _forget_errors(self, call: Callable[..., Any], *args: Any) -> None:
        # Best effort: at worst, unreferenced garbage stays behind.
        with contextlib.suppress(KeyValueError):
            call(*args)

    def _forget(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), READ_BATCH):
            self._forget_errors(self.client.delete_many, keys[start : start + READ_BATCH])


#: Appended to an active document's key: where the cache keeps its last parse.
_PARSED = "\x00parsed"


def fetch_across(wanted: Sequence[tuple[SessionDocuments, Want]]) -> list[Any]:
    """Documents of several sessions of one store: from the caches, else in one read.

    Each pair is a session's storage and a document of it; the storages must share
    one client. A document that is missing (replaced by a later commit, or
    evicted) or unreadable comes back as None, for the caller to treat as unknown.
    """
    results: list[Any] = [storage._cache.get(want.key) for storage, want in wanted]
    misses = [i for i, value in enumerate(results) if value is DocumentCache.missing]
    if not misses:
        return results
    keys = [k for i in misses for k in stored_keys(wanted[i][1].key, wanted[i][1].ref)]
    found = wanted[misses[0]][0]._get_many(list(dict.fromkeys(keys)))
    for i in misses:
        storage, want = wanted[i]
        try:
            results[i] = storage._decoded(want, found)
        except (DocumentMissing, SerializationError):
            results[i] = None
    return results


def _latest_kwargs(body: Any, what: str, trigger: str) -> Any:
    if not isinstance(body, dict) or body.get("trigger") != trigger:
        raise SerializationError(f"{what}: does not hold the kwargs of {trigger!r}")
    kwargs = body.get("kwargs")
    if not isinstance(kwargs, dict):
        raise SerializationError(f"{what}: kwargs must be an object")
    return kwargs


def _fire_record(body: Any, what: str, key: FireKey) -> tuple[str, ...]:
    if not isinstance(body, dict) or body.get("trigger") != key.trigger:
        raise SerializationError(f"{what}: does not hold a record of {key.trigger!r}")
    return decode_scheduled(body.get("scheduled"), what)


def _instance(body: Any, what: str, name: str) -> TaskInstance:
    instance = instance_from_json(body, what)
    if instance.name != name:
        raise SerializationError(f"{what}: holds instance {instance.name!r}")
    return instance


_LABELS: dict[str, Callable[[Any], str]] = {
    "config": lambda _: "configuration",
    "latest": lambda trigger: f"latest kwargs of {trigger!r}",
    "page": lambda about: f"index page {about[1]} of task {about[0]!r}",
    "instance": lambda name: f"instance {name!r}",
    "fire": lambda key: f"fire record of {key!r}",
}
_CONVERT: dict[str, Callable[[Any, str, Any], Any]] = {
    "config": lambda body, what, _: CONFIGS.from_body(body, what),
    "latest": _latest_kwargs,
    "page": lambda body, what, about: Page.from_body(body, about[0], about[1], what),
    "instance": _instance,
    "fire": _fire_record,
}
