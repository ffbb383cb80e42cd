"""How a load of the key-value layout assembles a session's state from its documents.

:class:`SessionAssembly` is the part of
:class:`~triggers_backends.kv.storage.KeyValueStorage` that, given the active
document a load read, reads what the scope needs through its references, in
as few requests as it can (see :meth:`SessionAssembly._assemble`), and finds
fire records through the active document and their pointers (the storage
module's docstring says why a record is never taken as committed when it was
not, and why a committed one is always found).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import attrs

from triggers_backends.kv.active import Active, Page, page_of, parse_name
from triggers_backends.kv.documents import DocRef, DocumentMissing, decode
from triggers_backends.kv.keys import digest
from triggers_backends.kv.session_documents import SessionDocuments, Want
from triggers_core.engine.idempotency import FireKey
from triggers_core.engine.latest import LatestKwargs, Loader
from triggers_core.engine.scopes import Fixed, Scope, Selector, known_part, resolve
from triggers_core.engine.serialization import check_joined, header_from_json
from triggers_core.engine.state import SessionState, TaskInstance, copy_instance
from triggers_core.engine.values import copy_json
from triggers_core.errors import ConflictError, SerializationError

__all__ = ["Gathered", "Reads", "SessionAssembly"]

#: One read of a load: documents wanted (decoded, cached) and raw keys (fire record pointers).
Reads: TypeAlias = tuple[list[Want], list[str]]
#: What the read returns: the documents in order, and the raw keys' values that exist.
Gathered: TypeAlias = tuple[list[Any], Mapping[str, bytes]]


class SessionAssembly(SessionDocuments):
    """Reading a session's state through the references of its active document."""

    def _pointers(
        self, active: Active, keys: Iterable[FireKey]
    ) -> tuple[dict[FireKey, DocRef], dict[str, tuple[FireKey, str]]]:
        """Where the committed fire records of ``keys`` are as of ``active`` (see the module
        docstring), as far as known without a read, and the pointers still to read.

        Records the active document created are referenced from it; older ones are
        found through their pointers, cached once read (a pointer never changes).
        Returns the references known and ``{pointer key: (key, record digest)}`` of
        the pointers to read (with the documents of the same load: see
        :meth:`_resolve_pointers`).
        """
        refs: dict[FireKey, DocRef] = {}
        pointers: dict[str, tuple[FireKey, str]] = {}
        epoch = active.epoch
        for key in keys:
            record = digest(key.digest)
            ref = active.fires.get(record)
            if ref is not None:
                refs[key] = ref
            elif epoch:  # without an epoch, nothing was ever recorded
                pointers[self.keys.fire_pointer(epoch, record)] = (key, record)
        if not pointers:
            return refs, {}
        cache = self._cache
        unread: dict[str, tuple[FireKey, str]] = {}
        for pointer, (key, record) in pointers.items():
            ref = cache.get(pointer)
            if ref is cache.missing:
                unread[pointer] = (key, record)
            else:
                refs[key] = ref
        if not unread:
            self._note_absent(active, frozenset())  # every one found: none absent
        return refs, unread

    def _resolve_pointers(
        self,
        active: Active,
        unread: Mapping[str, tuple[FireKey, str]],
        found: Mapping[str, bytes],
        refs: dict[FireKey, DocRef],
    ) -> None:
        """Add to ``refs`` the records whose pointers (``unread``) are in ``found`` (read
        after ``active``); remember the others as absent at ``active``'s version."""
        if not unread:
            return
        absent: set[str] = set()
        cache = self._cache
        for pointer, (key, record) in unread.items():
            raw = found.get(pointer)
            if raw is None:
                absent.add(record)
                continue
            ref = self._pointer(raw, pointer, record)
            cache.put(pointer, len(raw), ref)
            refs[key] = ref
        self._note_absent(active, frozenset(absent))

    def _note_absent(self, active: Active, absent: frozenset[str]) -> None:
        """Remember the fire records a load found absent at ``active``'s version."""
        with self._seen_lock:
            self._absent[(active.epoch, active.version)] = absent
            while len(self._absent) > 16:
                self._absent.popitem(last=False)

    def _pointer(self, raw: bytes, key: str, record: str) -> DocRef:
        what = self._what("fire record pointer", key)
        body = decode(raw, "firekey", self.uid, what)
        if not isinstance(body, dict) or body.get("record") != record:
            raise SerializationError(f"{what}: does not point to record {record!r}")
        return DocRef.from_json(body.get("ref"), what)

    def _header_state(self, active: Active, tasks: Any) -> SessionState:
        """The header of ``active`` with its configuration ``tasks`` (read with the
        documents of the load's first read: see :meth:`_assemble`)."""
        doc = {**active.header, "latestKwargs": {}}
        what = self._what("header", self.keys.active)
        header = header_from_json(doc, {}, what, tasks=tasks)
        # The latest kwargs are read one by one, when asked for (triggers_core.engine.latest).
        latest = LatestKwargs(
            sorted(active.latest), self._latest_loader(active), source=self.latest_source
        )
        return attrs.evolve(header, latest_kwargs=latest)

    def _latest_loader(self, active: Active) -> Loader:
        """Reads the latest kwargs of one trigger as of ``active`` (a private copy)."""

        def load(trigger: str) -> Mapping[str, Any]:
            ref = active.latest[trigger]
            try:
                (value,) = self._fetch([self._latest_want(trigger, ref)])
            except DocumentMissing as missing:
                self._check_moved_on(active.version, missing.key)
                raise ConflictError(
                    f"version moved on from {active.version!r} while its latest kwargs of "
                    f"{trigger!r} were read",
                    backend=self._label,
                    session=self.uid,
                ) from None
            copied: Mapping[str, Any] = copy_json(value)  # the cached document is never shared
            return copied

        return load

    def _prefetch(self, scope: Scope | Selector | None) -> list[str]:
        """Keys to read with the active document: the pointers of the fire records that
        ``scope`` names whatever the header says (a guarded finish), under the epoch of
        the active document this storage read last (a session keeps its epoch; if it
        was created again meanwhile, they are the wrong keys, read for nothing).
        Only on a client that reads them in the same request."""
        known = None if scope is None else known_part(scope)
        parsed = self._parsed
        if (
            known is None
            or not known.fire_keys
            or parsed is None
            or not parsed[1].epoch
            or not callable(getattr(type(self.client), "gets_with", None))
        ):
            return []
        epoch, cache = parsed[1].epoch, self._cache
        pointers = [self.keys.fire_pointer(epoch, digest(k.digest)) for k in known.fire_keys]
        return [p for p in sorted(pointers) if cache.get(p) is cache.missing]

    def _assemble(
        self,
        active: Active,
        scope: Scope | Selector | None,
        asked: Sequence[str] = (),
        early: Mapping[str, bytes] | None = None,
    ) -> SessionState:
        """The state ``active`` refers to, as far as ``scope`` asks (None: all of it): the
        steps of :meth:`_assembly`, each read done with :meth:`_gather`."""
        steps = self._assembly(active, scope, asked, early)
        request = next(steps)
        while True:
            try:
                request = steps.send(self._gather(*request))
            except StopIteration as stop:
                state: SessionState = stop.value
                return state

    def _assembly(
        self,
        active: Active,
        scope: Scope | Selector | None,
        asked: Sequence[str] = (),
        early: Mapping[str, bytes] | None = None,
    ) -> Generator[Reads, Gathered, SessionState]:
        """:meth:`_assemble` as steps: yields each read it needs, ``(wants, raw keys)``, and
        is sent what :meth:`_gather` returns for it (a batch load runs the steps of many
        sessions side by side: ``KeyValueStorage.load_sessions``); returns the state.

        Every document is read through the references of ``active`` (read
        before them), so they are all of its version, or missing (a concurrent
        commit deleted what it replaced: DocumentMissing, the caller reloads).
        Fire record pointers are read after ``active`` too (``asked``: keys read
        with it, found in ``early``); one that is missing means the record is
        absent at ``active``'s version. Reads, each one round trip for what the
        cache lacks:

        1. the configuration (the header needs it), with the index pages and the
           pointers of the part of ``scope`` known without the header
           (:func:`~triggers_core.engine.scopes.known_part`; all of it for a
           plain :class:`Scope`, a :class:`~triggers_core.engine.scopes.Fixed`
           selector or a full load);
        2. for a selector that needs the header, the rest of its pages and pointers;
        3. the instances those pages list, with the fire records.
        """
        known = None if scope is None else known_part(scope)
        complete = scope is None or isinstance(scope, Scope | Fixed)
        prefetched = frozenset(asked)
        early = early or {}
        wants: list[Want] = []
        if active.config is not None:
            wants.append(self._config_want(active.config))
        config_wants = len(wants)
        pages = {} if scope is not None and known is None else self._pages_of(active, known)
        refs, unread = self._pointers(active, known.fire_keys if known is not None else ())
        pointed = {k: early[k] for k in unread if k in prefetched and k in early}
        to_read = [k for k in unread if k not in prefetched]
        order = sorted(pages)
        wants += [self._page_want(t, n, pages[(t, n)]) for t, n in order]
        values, found = yield (wants, to_read)
        pointed.update((k, found[k]) for k in to_read if k in found)
        tasks = values[0] if config_wants else {}
        loaded: dict[tuple[str, int], Page] = dict(zip(order, values[config_wants:], strict=True))
        header = self._header_state(active, tasks)
        chosen = None if scope is None else resolve(scope, header)
        if not complete:
            assert chosen is not None
            more = {k: v for k, v in self._pages_of(active, chosen).items() if k not in loaded}
            extra = chosen.fire_keys - known.fire_keys if known is not None else chosen.fire_keys
            more_refs, more_unread = self._pointers(active, extra)
            refs.update(more_refs)
            unread.update(more_unread)
            pointed.update((k, early[k]) for k in more_unread if k in prefetched and k in early)
            to_read = [k for k in more_unread if k not in prefetched]
            order = sorted(more)
            wants = [self._page_want(t, n, more[(t, n)]) for t, n in order]
            values, found = yield (wants, to_read)
            pointed.update((k, found[k]) for k in to_read if k in found)
            loaded.update(zip(order, values, strict=True))
        self._resolve_pointers(active, unread, pointed, refs)
        wants = []
        for _, page in sorted(loaded.items()):
            for number, entry in page.entries.items():
                name = f"{page.task}#{number}"
                if chosen is None or (
                    name in chosen.names
                    or (entry.unstarted and page.task in chosen.unstarted_of)
                    or (chosen.unresolved and entry.unresolved)
                ):
                    wants.append(self._instance_want(name, entry.ref))
        named = len(wants)
        epoch = active.epoch
        wants += [self._record_want(epoch, key, ref) for key, ref in refs.items()]
        values, _ = yield (wants, [])
        instances: list[TaskInstance] = values[:named]
        # The header and the instances must agree (a lowered counter would reuse numbers).
        check_joined(
            header.tasks, header.counters, instances, f"{self._label} storage, session {self.uid!r}"
        )
        copies = {i.name: copy_instance(i) for i in instances}
        if chosen is not None and chosen.fire_keys:
            records = {w.about: v for w, v in zip(wants[named:], values[named:], strict=True)}
            return attrs.evolve(header, instances=copies, fire_records=records)
        return attrs.evolve(header, instances=copies)

    def _pages_of(self, active: Active, chosen: Scope | None) -> dict[tuple[str, int], DocRef]:
        """The index pages of ``active`` that list what ``chosen`` asks for (None: all)."""
        pages: dict[tuple[str, int], DocRef] = {}
        table = active.index
        if chosen is None or chosen.unresolved:
            tasks: Iterable[str] = table
        else:  # decode only the index of the tasks the scope names
            tasks = [t for t in chosen.unstarted_of if t in table]
        for task in tasks:
            index = table[task]
            if chosen is None:
                wanted: Iterable[int] = index.pages
            else:
                wanted = set()
                if task in chosen.unstarted_of:
                    wanted |= index.unstarted
                if chosen.unresolved:
                    wanted |= index.unresolved
            for number in wanted:
                pages[(task, number)] = index.pages[number]
        if chosen is not None:
            for name in chosen.names:
                parsed = parse_name(name)
                if parsed is None or parsed[0] not in table:
                    continue
                number = page_of(parsed[1])
                ref = table[parsed[0]].pages.get(number)
                if ref is not None:
                    pages[(parsed[0], number)] = ref
        return pages
