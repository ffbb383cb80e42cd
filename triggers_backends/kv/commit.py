"""One compare-and-swap of the key-value layout: the documents it writes and replaces.

:class:`Commit` turns a new state and its :class:`~triggers_core.engine.scopes.Changes`
into the immutable documents to write first (the configuration if it changed,
changed latest kwargs, changed instances and the index pages that list them,
new fire records, the lease record of a run it starts), the pointers that
confirm the fire records of the version it replaces (see the storage module),
the due-index hints of ``changes.due`` (filed before the swap; see
:mod:`~triggers_backends.kv.leases`), the new active document, and the
documents it makes obsolete (deleted after the swap, with the lease record of
a run it ends). Only :meth:`Commit.apply` writes, in the commit order that
:class:`~triggers_backends.kv.storage.KeyValueStorage`'s module docstring
explains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from triggers_backends.kv.active import Active, Entry, IndexTable, Page, TaskIndex, page_of
from triggers_backends.kv.documents import DocRef, DocumentMissing, encode, split, stored_keys
from triggers_backends.kv.due_index import Filing, Hint, shard_of
from triggers_backends.kv.keys import digest
from triggers_backends.kv.leases import LeaseRecord, LeaseStorage
from triggers_backends.kv_client import (
    AtomicCommitClient,
    CasToken,
    IndexAppendNotPlaced,
    KeyValueError,
)
from triggers_core.engine.latest import LatestKwargs
from triggers_core.engine.leases import DueKind, lease_owner
from triggers_core.engine.scopes import Changes
from triggers_core.engine.serialization import config_to_json, header_to_json, instance_to_json
from triggers_core.engine.state import SessionState, TaskInstance, copy_instance
from triggers_core.engine.values import copy_json_sorted
from triggers_core.errors import ConflictError, SerializationError, StorageError

__all__ = ["ONE_STEP_MAX_BYTES", "ONE_STEP_MAX_KEYS", "Commit"]

#: The largest commit an atomic client gets as one step (keys written or deleted, and
#: bytes written); a larger one (an import, a huge payload) is written in steps.
ONE_STEP_MAX_KEYS = 1000
ONE_STEP_MAX_BYTES = 4 * 1024 * 1024


class Commit:
    """The documents one compare-and-swap writes, and those it makes obsolete."""

    def __init__(self, storage: LeaseStorage, base: Active | None, rev: str) -> None:
        self.storage = storage
        self.keys = storage.keys
        self.base = base
        self.rev = rev
        self.limit = storage._call(
            "reading the item size limit", lambda: storage.client.max_value_size
        )
        self.items: dict[str, bytes] = {}
        #: Pointers to the fire records of ``base``: true whether this commit wins or
        #: not, so written like ``items`` but never deleted when the swap is lost.
        self.confirmations: dict[str, bytes] = {}
        self.obsolete: list[str] = []
        self.decoded: list[tuple[str, int, Any]] = []
        #: Due-index hints to file before the swap.
        self.filings: list[Filing] = []
        self.active = Active(0, {})

    # -- writing (the commit order of the storage module) ---------------------------

    def apply(self, raw: bytes, token: CasToken | None) -> bool:
        """Write the documents, swap in the active document ``raw`` (``token`` None: add
        it), then remove what it replaced; False, with nothing left behind, if the swap
        lost. A :class:`KeyValueError` before the swap is the storage's error; during
        the swap, it is unknown whether it happened."""
        atomic = self.storage.atomic
        written = len(self.items) + len(self.confirmations)
        size = len(raw) + sum(len(v) for v in self.items.values())
        size += sum(len(v) for v in self.confirmations.values())
        if (
            atomic is not None
            and written + len(self.obsolete) <= ONE_STEP_MAX_KEYS
            and size <= ONE_STEP_MAX_BYTES
        ):
            if getattr(type(atomic), "commits_index_appends", False):
                return self._in_one_step(atomic, raw, token, self.filings)
            self._file(self.filings)
            return self._in_one_step(atomic, raw, token, [])
        return self._in_steps(raw, token)

    def _file(self, filings: list[Filing]) -> None:
        """File due-index hints with plain client operations (before the swap)."""
        index = self.storage._index
        for filing in filings:
            self.storage._call("filing due-index hints", index.file, filing)

    def _marker(self) -> tuple[str, bytes]:
        return self.keys.marker, self.storage.uid.encode("utf-8", "surrogatepass")

    def _unknown(self, exc: KeyValueError) -> StorageError:
        return self.storage._error(
            f"compare-and-swap of the active document failed, so it is unknown whether "
            f"version {self.active.version} was committed: {exc}"
        )

    def _in_one_step(
        self, atomic: AtomicCommitClient, raw: bytes, token: CasToken | None, filings: list[Filing]
    ) -> bool:
        base = self.base
        # The marker goes with the creation, and with the commit after it (see below).
        marker = self._marker() if base is None or base.version == 1 else None
        documents = {**self.items, **self.confirmations}
        try:
            if not filings:
                return atomic.commit(
                    self.keys.active,
                    raw,
                    token,
                    documents=documents,
                    obsolete=self.obsolete,
                    marker=marker,
                )
            try:
                won = atomic.commit(  # type: ignore[call-arg] # commits_index_appends
                    self.keys.active,
                    raw,
                    token,
                    documents=documents,
                    obsolete=self.obsolete,
                    marker=marker,
                    appends=[filing.append for filing in filings],
                )
            except IndexAppendNotPlaced:  # every candidate slot is full: file them ourselves
                self._file(filings)
                return self._in_one_step(atomic, raw, token, [])
        except KeyValueError as exc:
            raise self._unknown(exc) from exc
        if won:
            for filing in filings:
                if filing.append.placed is not None:
                    self.storage._index.placed(filing, filing.first + filing.append.placed)
        return won

    def _in_steps(self, raw: bytes, token: CasToken | None) -> bool:
        storage, client, base = self.storage, self.storage.client, self.base
        if base is not None and base.version == 1:
            # The creator adds the marker only after the active document: if it died in
            # between (or that add failed), the marker is missing. The second commit
            # makes sure it is there before its swap, so no later version can exist
            # without a marker (see the storage module's docstring).
            storage._call("adding the session marker", client.add, *self._marker())
        self._file(self.filings)
        storage._write({**self.items, **self.confirmations})
        try:
            if base is None:
                won = client.add(self.keys.active, raw)
            else:
                won = client.cas(self.keys.active, raw, token)
        except KeyValueError as exc:
            raise self._unknown(exc) from exc
        if not won:
            # Ours alone: nobody references them. (Not the confirmations: they are true
            # whoever won, and the winner may have written the same ones.)
            storage._forget(list(self.items))
            return False
        if base is None:
            _best_effort(client.add, *self._marker())
        storage._forget(self.obsolete)
        return True

    # -- building ---------------------------------------------------------------------

    def _put(self, kind: str, key: str, body: Any, value: Any) -> DocRef:
        raw = encode(kind, self.storage.uid, body)
        ref, items = split(key, self.rev, raw, self.limit)
        self.items.update(items)
        self.decoded.append((key, len(raw), value))
        return ref

    def _drop(self, key: str, ref: DocRef) -> None:
        self.obsolete.extend(stored_keys(key, ref))

    def build(self, state: SessionState, changes: Changes) -> None:
        base = self.base
        keys = self.keys
        # Configuration: written when it changed (always for a new session).
        config = base.config if base is not None else None
        if base is None or changes.config or config is None:
            if config is not None:
                self._drop(keys.config(config.rev), config)
            config = self._put(
                "config", keys.config(self.rev), config_to_json(state.tasks), state.tasks
            )
        latest = self._latest(state)
        index = self._instances(state, changes)
        header = header_to_json(state, latest=False)
        version = 1 if base is None else base.version + 1
        # A session created before fire records existed gets its epoch now.
        epoch = base.epoch if base is not None and base.epoch else self.rev
        fires = self._fire_records(epoch, changes)
        self._due(state, changes)
        listed = base.listed if base is not None else None
        confirmed = base.confirmed + len(base.fires) if base is not None else 0
        self.active = Active(
            version, header, config, latest, index, epoch, fires, listed, confirmed
        )

    def _due(self, state: SessionState, changes: Changes) -> None:
        """Lease records and due-index hints of ``changes.due`` (see the leases module)."""
        if not changes.due:
            return
        keys, uid = self.keys, self.storage.uid
        hints: list[Hint] = []
        for name, due in sorted(changes.due.items()):
            if due is not None and due.kind is DueKind.LEASE and due.owner is not None:
                # The run this commit starts: its record, written (and, if the swap
                # loses, deleted) with the documents.
                record = LeaseRecord(name, due.owner, due.at)
                self.items[keys.lease(name, due.owner)] = record.encode(uid)
            else:
                instance = state.instances.get(name)
                owner = lease_owner(instance) if instance is not None else None
                if owner is not None:  # the run it ends (if any): its record goes
                    self.obsolete.append(keys.lease(name, owner))
            if due is not None:
                owner = due.owner if due.kind is DueKind.LEASE else None
                hints.append(Hint(uid, name, due.kind, due.at, owner))
        if hints:
            self.filings = self.storage._index.plan(shard_of(keys.session), hints, self.limit)

    def _fire_records(self, epoch: str, changes: Changes) -> dict[str, DocRef]:
        """Confirm the base's fire records; write this commit's (refused if stored)."""
        base, keys, uid = self.base, self.keys, self.storage.uid
        if base is not None:
            # Every writer on ``base`` writes these same bytes: the pointer of each record
            # and its numbered entry (in digest order), which ``delete`` follows.
            for number, (record, ref) in enumerate(sorted(base.fires.items()), base.confirmed):
                body = {"record": record, "ref": ref.to_json()}
                document = encode("firekey", uid, body)
                self.confirmations[keys.fire_pointer(epoch, record)] = document
                self.confirmations[keys.fire_entry(epoch, number)] = document
        if not changes.fire_records:
            return {}
        fires: dict[str, DocRef] = {}
        for key, names in changes.fire_records.items():
            record = digest(key.digest)
            body = {"trigger": key.trigger, "scheduled": list(names)}
            store_key = keys.fire_record(epoch, record, self.rev)
            fires[record] = self._put("fire", store_key, body, tuple(names))
        if base is not None and base.epoch:
            self.storage._check_records_absent(base, list(fires))
        return fires

    def _latest(self, state: SessionState) -> dict[str, DocRef]:
        old = dict(self.base.latest) if self.base is not None else {}
        refs: dict[str, DocRef] = {}
        given = state.latest_kwargs
        if isinstance(given, LatestKwargs) and given.source == self.storage.latest_source:
            # As this session's load made it: write only the triggers it set (a large value
            # nobody read is neither read nor written); the swap checks the rest is as read.
            refs = old
            for trigger in sorted(given.changed):
                self._latest_one(trigger, given[trigger], refs)
            return refs
        for trigger, kwargs in given.items():
            ref = old.pop(trigger, None)
            if ref is not None:
                known = self.storage._cache.get(self.keys.latest(trigger, ref.rev))
                if known is kwargs or known == kwargs:
                    refs[trigger] = ref
                    continue
                self._drop(self.keys.latest(trigger, ref.rev), ref)
            body = {"trigger": trigger, "kwargs": dict(kwargs)}
            key = self.keys.latest(trigger, self.rev)
            refs[trigger] = self._put("latest", key, body, copy_json_sorted(kwargs))
        for trigger, ref in old.items():  # no longer in the state
            self._drop(self.keys.latest(trigger, ref.rev), ref)
        return refs

    def _latest_one(self, trigger: str, kwargs: Mapping[str, Any], refs: dict[str, DocRef]) -> None:
        """Write ``trigger``'s new latest kwargs into ``refs`` unless they are unchanged."""
        ref = refs.get(trigger)
        if ref is not None:
            known = self.storage._cache.get(self.keys.latest(trigger, ref.rev))
            if known is kwargs or known == kwargs:
                return
            self._drop(self.keys.latest(trigger, ref.rev), ref)
        body = {"trigger": trigger, "kwargs": dict(kwargs)}
        key = self.keys.latest(trigger, self.rev)
        refs[trigger] = self._put("latest", key, body, copy_json_sorted(kwargs))

    def _instances(self, state: SessionState, changes: Changes) -> IndexTable:
        base_index = self.base.index if self.base is not None else IndexTable({})
        index: dict[str, TaskIndex] = {}  # the tasks this commit changes
        touched: dict[tuple[str, int], list[TaskInstance]] = {}
        for name in sorted(changes.instances):
            instance = state.instances.get(name)
            if instance is None:
                raise ValueError(f"changes name instance {name!r}, which the state does not hold")
            key = (instance.task_name, page_of(instance.number))
            touched.setdefault(key, []).append(instance)
            if instance.task_name in base_index:
                index[instance.task_name] = base_index[instance.task_name]
        # The pages being rewritten, as the base active document knows them.
        existing = [(t, n) for t, n in sorted(touched) if t in index and n in index[t].pages]
        wants = [self.storage._page_want(t, n, index[t].pages[n]) for t, n in existing]
        try:
            loaded: list[Page] = self.storage._fetch(wants)
        except DocumentMissing as missing:
            version = self.base.version if self.base is not None else 0
            self.storage._check_moved_on(version, missing.key)
            raise ConflictError(
                f"version moved on from {version!r}",
                backend=self.storage._label,
                session=self.storage.uid,
            ) from None
        pages = {(p.task, p.number): p for p in loaded}
        uid = self.storage.uid
        for (task, number), instances in sorted(touched.items()):
            old = pages.get((task, number))
            entries = dict(old.entries) if old is not None else {}
            for instance in instances:
                previous = entries.get(instance.number)
                if previous is not None and instance.name in changes.created:
                    raise SerializationError(
                        f"{self.storage._label} storage, session {uid!r}: instance "
                        f"{instance.name!r} is created but already exists (was a counter "
                        "lowered by hand?); nothing was written"
                    )
                if previous is not None:
                    self._drop(self.keys.instance(instance.name, previous.ref.rev), previous.ref)
                ref = self._put(
                    "instance",
                    self.keys.instance(instance.name, self.rev),
                    instance_to_json(instance),
                    copy_instance(instance, sort_keys=True),  # as a reader would decode it
                )
                entries[instance.number] = Entry(instance.status.value, ref)
            page = Page(task, number, entries)
            task_index = index.get(task, TaskIndex())
            if old is not None:
                self._drop(
                    self.keys.page(task, number, task_index.pages[number].rev),
                    task_index.pages[number],
                )
            ref = self._put("page", self.keys.page(task, number, self.rev), page.to_body(), page)
            index[task] = task_index.with_page(
                number, ref, unstarted=page.has_unstarted, unresolved=page.has_unresolved
            )
        return base_index.updated(index)


def _best_effort(call: Callable[..., Any], *args: Any) -> None:
    # At worst, the next commit adds the marker (see Commit._in_steps).
    with contextlib.suppress(KeyValueError):
        call(*args)
