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

It also carries the session's ``epoch`` (a random token fixed when the session
is created) and, in ``fires``, the references of the fire records created by
the commit that wrote it (and only those: see the storage module for how they
become findable afterwards), so it does not grow with the number of keys.
Both are left out of the document when empty, and optional when read; so is
``listed``, the slot of the session index that lists the session.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from triggers_backends.kv.documents import DocRef
from triggers_core.engine.state import RESOLVED_STATUSES, Status
from triggers_core.engine.values import copy_json_sorted
from triggers_core.errors import SerializationError

__all__ = [
    "PAGE_SIZE",
    "Active",
    "Entry",
    "IndexTable",
    "Page",
    "TaskIndex",
    "page_of",
    "parse_name",
]

#: Instance numbers per index page.
PAGE_SIZE = 256

_UNSTARTED = Status.UNSTARTED.value
_RESOLVED = frozenset(s.value for s in RESOLVED_STATUSES)
_STATUSES = frozenset(s.value for s in Status)


def page_of(number: int) -> int:
    """The index page holding instance number ``number``."""
    return number // PAGE_SIZE


def parse_name(name: str) -> tuple[str, int] | None:
    """``(task, number)`` of an instance name ``task#number``, or None if it is not one."""
    task, sep, number = name.rpartition("#")
    if not sep or not task or not (number.isascii() and number.isdigit()):
        return None
    if str(int(number)) != number:
        return None
    return task, int(number)


#: The largest number (version, page or instance number, count) a document may hold:
#: anything above is damage, refused before it is used (a key, a range, a loop).
MAX_NUMBER = 2**53


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > MAX_NUMBER:
        shown = repr(value) if not isinstance(value, int) or value < 10**18 else "a huge number"
        raise SerializationError(f"{what}: expected an integer from 0 to 2**53, got {shown[:100]}")
    return value


def _number(text: str, what: str) -> int:
    if (
        not (text.isascii() and text.isdigit() and len(text) <= 16 and str(int(text)) == text)
        or int(text) > MAX_NUMBER
    ):
        raise SerializationError(f"{what}: {text[:40]!r} is not a number up to 2**53")
    return int(text)


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise SerializationError(f"{what}: expected an object, got {type(value).__name__}")
    return value


def _token(text: str) -> bool:
    """A short ASCII token that can be part of a key (an epoch, a record digest)."""
    return 0 < len(text) <= 32 and text.isascii() and text.isalnum()


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
    #: The text of page references as read (page -> ``page=rev...``), for
    #: :meth:`to_text` to write again without formatting them: a commit changes one or
    #: two pages of a task, whose history holds one page per ``PAGE_SIZE`` instances.
    #: Every text here is that of the same page's reference in :attr:`pages`.
    texts: Mapping[int, str] = field(default_factory=dict, compare=False, repr=False)

    def with_page(
        self, number: int, ref: DocRef, *, unstarted: bool, unresolved: bool
    ) -> TaskIndex:
        """This index with page ``number`` at ``ref`` and its two flags set as given."""
        texts = dict(self.texts)
        texts.pop(number, None)
        return TaskIndex(
            pages={**self.pages, number: ref},
            unstarted=_flag(self.unstarted, number, unstarted),
            unresolved=_flag(self.unresolved, number, unresolved),
            texts=texts,
        )

    def to_text(self) -> str:
        """Compact text: ``page=rev[/chunks/digest],...;unstarted pages;unresolved pages``.

        One string per task keeps the active document small and quick to parse
        when a session has thousands of tasks: tasks are decoded only when used.
        """
        texts = self.texts
        pages = ",".join(
            texts.get(p) or _item_text(p, ref) for p, ref in sorted(self.pages.items())
        )
        unstarted = ",".join(map(str, sorted(self.unstarted)))
        unresolved = ",".join(map(str, sorted(self.unresolved)))
        return f"{pages};{unstarted};{unresolved}"

    @classmethod
    def from_text(cls, text: Any, what: str) -> TaskIndex:
        if not isinstance(text, str) or text.count(";") != 2:
            raise SerializationError(f"{what}: invalid task index {text!r}")
        pages_text, unstarted_text, unresolved_text = text.split(";")
        pages: dict[int, DocRef] = {}
        texts: dict[int, str] = {}
        for item in pages_text.split(",") if pages_text else ():
            try:
                number, ref = _item(item)
            except SerializationError:  # again, to name where in the message
                number, ref = _parse_item(item, what)
            pages[number] = ref
            texts[number] = item
        flags: list[frozenset[int]] = []
        for name, raw in (("unstarted", unstarted_text), ("unresolved", unresolved_text)):
            found = frozenset(_number(p, f"{what}.{name}") for p in raw.split(",") if raw)
            if not found <= pages.keys():
                raise SerializationError(f"{what}.{name}: names pages that do not exist")
            flags.append(found)
        return cls(pages, flags[0], flags[1], texts)


def _parse_item(item: str, what: str) -> tuple[int, DocRef]:
    """One page reference of a task index text: ``page=rev[/chunks/digest]``."""
    number, sep, ref = item.partition("=")
    parts: list[Any] = ref.split("/")
    if not sep or len(parts) not in (1, 3):
        raise SerializationError(f"{what}: invalid page reference {item!r}")
    if len(parts) == 3:
        parts[1] = _number(parts[1], f"{what}.pages")
    return _number(number, f"{what}.pages"), DocRef.from_json(parts, f"{what}.{item}")


@functools.lru_cache(maxsize=1 << 16)
def _item(item: str) -> tuple[int, DocRef]:
    # A commit changes one or two page references of a task and keeps the others
    # (one per PAGE_SIZE instances of its history): each is parsed once per process.
    return _parse_item(item, "index")


def _flag(pages: frozenset[int], number: int, on: bool) -> frozenset[int]:
    return pages | {number} if on else pages - {number}


@functools.lru_cache(maxsize=1 << 16)
def _item_text(page: int, ref: DocRef) -> str:
    """The text of one page reference (cached: most are written again unchanged)."""
    return f"{page}=" + "/".join(str(part) for part in ref.to_json())


@functools.lru_cache(maxsize=1 << 16)
def _decode(text: str) -> TaskIndex:
    # Each commit rewrites the active document but few of its task texts: decode a
    # text once per process, not once per load.
    return TaskIndex.from_text(text, "index")


class IndexTable(Mapping[str, TaskIndex]):
    """Task name -> :class:`TaskIndex`, kept as text and decoded on first use per task."""

    def __init__(self, texts: Mapping[str, str], what: str = "index") -> None:
        self._texts = dict(texts)
        self._decoded: dict[str, TaskIndex] = {}
        self._what = what

    @classmethod
    def of(cls, indexes: Mapping[str, TaskIndex]) -> IndexTable:
        table = cls({task: index.to_text() for task, index in indexes.items()})
        table._decoded.update(indexes)
        return table

    def __getitem__(self, task: str) -> TaskIndex:
        found = self._decoded.get(task)
        if found is None:
            text = self._texts[task]
            try:
                found = _decode(text)
            except SerializationError:  # again, to name the task in the message
                found = TaskIndex.from_text(text, f"{self._what}.{task}")
            self._decoded[task] = found
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._texts)

    def __len__(self) -> int:
        return len(self._texts)

    def __contains__(self, task: object) -> bool:
        return task in self._texts

    def updated(self, changes: Mapping[str, TaskIndex]) -> IndexTable:
        """A new table: these tasks replaced, every other task's text reused as it is."""
        table = IndexTable(self._texts, self._what)
        table._decoded.update(self._decoded)
        for task, index in changes.items():
            table._texts[task] = index.to_text()
            table._decoded[task] = index
        return table

    def to_json(self) -> dict[str, str]:
        return dict(self._texts)


@dataclass(frozen=True)
class Active:
    """The active document of one session (see the module docstring)."""

    version: int
    #: The core's header document without ``latestKwargs`` (counters, unsettled...).
    header: Mapping[str, Any]
    config: DocRef | None = None
    latest: Mapping[str, DocRef] = field(default_factory=dict)
    index: IndexTable = field(default_factory=lambda: IndexTable({}))
    #: A random token fixed at the session's creation ("": created before fire
    #: records existed, and not committed to since).
    epoch: str = ""
    #: Record digest -> reference of the fire records this version created.
    fires: Mapping[str, DocRef] = field(default_factory=dict)
    #: The slot of the session index (:mod:`~triggers_backends.kv.session_index`) its
    #: line was filed in (None: not filed yet, a session stored before the index existed).
    listed: int | None = None
    #: How many fire records of this epoch earlier commits confirmed (each has a pointer
    #: and a numbered entry ``h``, 0 to ``confirmed - 1``, that ``delete`` follows).
    confirmed: int = 0

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "version": self.version,
            "header": dict(self.header),
            "config": None if self.config is None else self.config.to_json(),
            "latest": {t: ref.to_json() for t, ref in sorted(self.latest.items())},
            "index": self.index.to_json(),
        }
        if self.epoch:
            body["epoch"] = self.epoch
        if self.fires:
            body["fires"] = {d: ref.to_json() for d, ref in sorted(self.fires.items())}
        if self.listed is not None:
            body["listed"] = self.listed
        if self.confirmed:
            body["confirmed"] = self.confirmed
        return body

    def as_read(self, what: str) -> Active:
        """This document as :meth:`from_body` returns it when it reads its encoding: the
        same values, every mapping in sorted key order (as compact JSON stores them), the
        header copied as JSON, the index holding texts only. A writer keeps it as the
        parse of the bytes it wrote (a load that reads them back skips the parse)."""
        return Active(
            self.version,
            copy_json_sorted(self.header),
            self.config,
            dict(sorted(self.latest.items())),
            IndexTable(dict(sorted(self.index.to_json().items())), f"{what}.index"),
            self.epoch,
            dict(sorted(self.fires.items())),
            self.listed,
            self.confirmed,
        )

    @classmethod
    def from_body(cls, body: Any, what: str) -> Active:
        doc = _mapping(body, what)
        required = frozenset({"version", "header", "config", "latest", "index"})
        optional = frozenset({"epoch", "fires", "listed", "confirmed"})
        _only({k: v for k, v in doc.items() if k not in optional}, required, what)
        version = _int(doc["version"], f"{what}.version")
        header = _mapping(doc["header"], f"{what}.header")
        config = None
        if doc["config"] is not None:
            config = DocRef.from_json(doc["config"], f"{what}.config")
        latest = {
            t: DocRef.from_json(ref, f"{what}.latest.{t}")
            for t, ref in _mapping(doc["latest"], f"{what}.latest").items()
        }
        texts = _mapping(doc["index"], f"{what}.index")
        if not all(isinstance(text, str) for text in texts.values()):
            raise SerializationError(f"{what}.index: expected a text per task")
        index = IndexTable(texts, f"{what}.index")
        epoch = doc.get("epoch", "")
        if not isinstance(epoch, str) or (epoch and not _token(epoch)):
            raise SerializationError(f"{what}.epoch: invalid epoch {epoch!r}")
        fires: dict[str, DocRef] = {}
        for d, ref in _mapping(doc.get("fires", {}), f"{what}.fires").items():
            if not _token(d):
                raise SerializationError(f"{what}.fires: invalid record digest {d!r}")
            fires[d] = DocRef.from_json(ref, f"{what}.fires.{d}")
        listed = doc.get("listed")
        if listed is not None:
            listed = _int(listed, f"{what}.listed")
        confirmed = _int(doc.get("confirmed", 0), f"{what}.confirmed")
        return cls(version, header, config, latest, index, epoch, fires, listed, confirmed)
