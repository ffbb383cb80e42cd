"""The active document and the instance index pages (pure data, no I/O).

The active document is the only key ever compared-and-swapped. It holds the
session's version (an int that only grows, so a compare-value CAS never
suffers ABA), the reference to the configuration document, the core's header
document (counters, ``unsettled``...) without the latest kwargs, a reference
per trigger to its latest-kwargs document, and per task an index:

* instances are grouped in pages of :data:`PAGE_SIZE` numbers (``t#n`` is in
  page ``n // PAGE_SIZE``); a page is an immutable document mapping each number
  to the instance's status and the reference of its document;
* the active document keeps, per task, the page references plus which pages
  hold unstarted and which hold unresolved instances.

A fire that creates ``t#n`` rewrites only page ``n // PAGE_SIZE`` of ``t``;
loading the unstarted instances of ``t`` reads only the pages flagged for it;
resolved history stays in pages nobody rewrites. The active document grows by
one page reference per :data:`PAGE_SIZE` instances of a task, not per instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from triggers_backends.kv.documents import DocRef
from triggers_core.errors import SerializationError
from triggers_core.state import RESOLVED_STATUSES, Status

__all__ = ["PAGE_SIZE", "Active", "Entry", "Page", "TaskIndex", "page_of"]

#: Instance numbers per index page.
PAGE_SIZE = 256

_UNSTARTED = Status.UNSTARTED.value
_RESOLVED = frozenset(s.value for s in RESOLVED_STATUSES)
_STATUSES = frozenset(s.value for s in Status)


def page_of(number: int) -> int:
    """The index page holding instance number ``number``."""
    return number // PAGE_SIZE


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SerializationError(f"{what}: expected a non-negative integer, got {value!r}")
    return value


def _number(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit() and str(int(text)) == text):
        raise SerializationError(f"{what}: {text!r} is not a number")
    return int(text)


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise SerializationError(f"{what}: expected an object, got {type(value).__name__}")
    return value


def _only(doc: Mapping[str, Any], fields: frozenset[str], what: str) -> None:
    missing = sorted(fields - set(doc))
    unknown = sorted(set(doc) - fields)
    if missing:
        raise SerializationError(f"{what}: missing fields {missing}")
    if unknown:
        raise SerializationError(f"{what}: unknown fields {unknown} (written by a newer layout?)")


@dataclass(frozen=True, slots=True)
class Entry:
    """One instance in a page: its status and where its document is."""

    status: str
    ref: DocRef

    @property
    def unstarted(self) -> bool:
        return self.status == _UNSTARTED

    @property
    def unresolved(self) -> bool:
        return self.status not in _RESOLVED


@dataclass(frozen=True)
class Page:
    """Numbers ``page * PAGE_SIZE`` to ``(page + 1) * PAGE_SIZE - 1`` of one task."""

    task: str
    number: int
    entries: Mapping[int, Entry] = field(default_factory=dict)

    @property
    def has_unstarted(self) -> bool:
        return any(e.unstarted for e in self.entries.values())

    @property
    def has_unresolved(self) -> bool:
        return any(e.unresolved for e in self.entries.values())

    def to_body(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "page": self.number,
            "entries": {
                str(n): [e.status, *e.ref.to_json()] for n, e in sorted(self.entries.items())
            },
        }

    @classmethod
    def from_body(cls, body: Any, task: str, number: int, what: str) -> Page:
        doc = _mapping(body, what)
        _only(doc, frozenset({"task", "page", "entries"}), what)
        if doc["task"] != task or doc["page"] != number:
            raise SerializationError(
                f"{what}: holds page {doc['page']!r} of task {doc['task']!r}, "
                f"not page {number} of {task!r}"
            )
        entries: dict[int, Entry] = {}
        for key, value in _mapping(doc["entries"], f"{what}.entries").items():
            n = _number(key, f"{what}.entries")
            where = f"{what}.entries.{key}"
            if page_of(n) != number:
                raise SerializationError(f"{where}: number {n} does not belong to page {number}")
            if not isinstance(value, list) or not value or value[0] not in _STATUSES:
                raise SerializationError(f"{where}: expected [status, reference], got {value!r}")
            entries[n] = Entry(value[0], DocRef.from_json(value[1:], where))
        return cls(task, number, entries)


@dataclass(frozen=True)
class TaskIndex:
    """Per task: page references, and which pages hold unstarted / unresolved instances."""

    pages: Mapping[int, DocRef] = field(default_factory=dict)
    unstarted: frozenset[int] = frozenset()
    unresolved: frozenset[int] = frozenset()

    def to_json(self) -> dict[str, Any]:
        return {
            "pages": {str(p): ref.to_json() for p, ref in sorted(self.pages.items())},
            "unstarted": sorted(self.unstarted),
            "unresolved": sorted(self.unresolved),
        }

    @classmethod
    def from_json(cls, value: Any, what: str) -> TaskIndex:
        doc = _mapping(value, what)
        _only(doc, frozenset({"pages", "unstarted", "unresolved"}), what)
        pages = {
            _number(p, f"{what}.pages"): DocRef.from_json(ref, f"{what}.pages.{p}")
            for p, ref in _mapping(doc["pages"], f"{what}.pages").items()
        }
        flags: list[frozenset[int]] = []
        for name in ("unstarted", "unresolved"):
            raw = doc[name]
            if not isinstance(raw, list):
                raise SerializationError(f"{what}.{name}: expected a list of page numbers")
            found = frozenset(_int(p, f"{what}.{name}") for p in raw)
            if not found <= pages.keys():
                raise SerializationError(f"{what}.{name}: names pages that do not exist")
            flags.append(found)
        return cls(pages, flags[0], flags[1])


@dataclass(frozen=True)
class Active:
    """The active document of one session (see the module docstring)."""

    version: int
    #: The core's header document without ``latestKwargs`` (counters, unsettled...).
    header: Mapping[str, Any]
    config: DocRef | None = None
    latest: Mapping[str, DocRef] = field(default_factory=dict)
    index: Mapping[str, TaskIndex] = field(default_factory=dict)

    def to_body(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "header": dict(self.header),
            "config": None if self.config is None else self.config.to_json(),
            "latest": {t: ref.to_json() for t, ref in sorted(self.latest.items())},
            "index": {t: index.to_json() for t, index in sorted(self.index.items())},
        }

    @classmethod
    def from_body(cls, body: Any, what: str) -> Active:
        doc = _mapping(body, what)
        _only(doc, frozenset({"version", "header", "config", "latest", "index"}), what)
        version = _int(doc["version"], f"{what}.version")
        header = _mapping(doc["header"], f"{what}.header")
        config = None
        if doc["config"] is not None:
            config = DocRef.from_json(doc["config"], f"{what}.config")
        latest = {
            t: DocRef.from_json(ref, f"{what}.latest.{t}")
            for t, ref in _mapping(doc["latest"], f"{what}.latest").items()
        }
        index = {
            t: TaskIndex.from_json(value, f"{what}.index.{t}")
            for t, value in _mapping(doc["index"], f"{what}.index").items()
        }
        return cls(version, header, config, latest, index)
