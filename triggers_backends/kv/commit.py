"""One compare-and-swap of the key-value layout: the documents it writes and replaces.

:class:`Commit` turns a new state and its :class:`~triggers_core.scopes.Changes`
into the immutable documents to write first (the configuration if it changed,
changed latest kwargs, changed instances and the index pages that list them),
the new active document, and the documents it makes obsolete (deleted after
the swap). Nothing is written here; :class:`~triggers_backends.kv.storage.KeyValueStorage`
does that in the commit order its module docstring explains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from triggers_backends.kv.active import Active, Entry, IndexTable, Page, TaskIndex, page_of
from triggers_backends.kv.documents import DocRef, DocumentMissing, encode, split, stored_keys
from triggers_core._util import copy_json_sorted
from triggers_core.errors import ConflictError, SerializationError
from triggers_core.scopes import Changes
from triggers_core.serialization import config_to_json, header_to_json, instance_to_json
from triggers_core.state import SessionState, TaskInstance, copy_instance

if TYPE_CHECKING:
    from triggers_backends.kv.storage import KeyValueStorage

__all__ = ["Commit"]


class Commit:
    """The documents one compare-and-swap writes, and those it makes obsolete."""

    def __init__(self, storage: KeyValueStorage, base: Active | None, rev: str) -> None:
        self.storage = storage
        self.keys = storage.keys
        self.base = base
        self.rev = rev
        self.limit = storage._call(
            "reading the item size limit", lambda: storage.client.max_value_size
        )
        self.items: dict[str, bytes] = {}
        self.obsolete: list[str] = []
        self.decoded: list[tuple[str, int, Any]] = []
        self.active = Active(0, {})

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
        header = header_to_json(state)
        header.pop("latestKwargs", None)
        version = 1 if base is None else base.version + 1
        self.active = Active(version, header, config, latest, index)

    def _latest(self, state: SessionState) -> dict[str, DocRef]:
        old = dict(self.base.latest) if self.base is not None else {}
        refs: dict[str, DocRef] = {}
        for trigger, kwargs in state.latest_kwargs.items():
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
            index[task] = TaskIndex(
                pages={**task_index.pages, number: ref},
                unstarted=_flag(task_index.unstarted, number, page.has_unstarted),
                unresolved=_flag(task_index.unresolved, number, page.has_unresolved),
            )
        return base_index.updated(index)


def _flag(pages: frozenset[int], number: int, on: bool) -> frozenset[int]:
    return pages | {number} if on else pages - {number}
