"""Write a converted original session into any storage, as a new session."""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from collections.abc import Mapping
from json.decoder import scanstring  # type: ignore[attr-defined] # public, but not in typeshed
from pathlib import Path
from typing import IO, Any

from triggers_backends.original._convert import OriginalSessionError, convert_session
from triggers_core.engine.scopes import Changes
from triggers_core.engine.serialization import state_from_json, state_to_json
from triggers_core.engine.state import SessionState
from triggers_core.errors import ConflictError, SerializationError, TriggersError
from triggers_core.runtime.storage import Storage, Version

__all__ = ["ImportReport", "SessionExistsError", "import_session", "load_export"]


class SessionExistsError(TriggersError, ValueError):
    """The target session already exists; an import never overwrites one."""

    def __init__(self, uid: str, backend: str) -> None:
        self.uid = uid
        self.backend = backend
        super().__init__(
            f"{backend} storage already has a session {uid!r}; an import never overwrites "
            "a session (import under another uid, or delete that session first)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.uid, self.backend))


@dataclasses.dataclass(frozen=True)
class ImportReport:
    """What an import wrote."""

    uid: str
    backend: str
    version: Version
    tasks: int
    #: status -> number of instances.
    instances: Mapping[str, int]

    def __str__(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.instances.items()))
        return (
            f"imported session {self.uid!r} into {self.backend}: {self.tasks} tasks, "
            f"{sum(self.instances.values())} instances ({counts or 'none'})"
        )


def import_session(storage: Storage, content: object) -> ImportReport:
    """Convert the original's session ``content`` and create it in ``storage``.

    ``content`` is the original's ``{'tasks', 'instances', 'metas'}`` (its
    ``debug_repr()``). Raises :class:`OriginalSessionError` (every problem listed)
    before anything is written, and :class:`SessionExistsError` if ``storage``
    already holds the session (the write is a create: it can never overwrite,
    even if another process creates the session at the same moment).
    """
    state = convert_session(content)
    _check_storable(state)
    if storage.load().version is not None:
        raise SessionExistsError(storage.uid, storage.backend_name)
    try:
        names = frozenset(state.instances)
        version = storage.compare_and_swap(
            None, state, Changes(instances=names, created=names, config=True)
        )
    except ConflictError:
        raise SessionExistsError(storage.uid, storage.backend_name) from None
    statuses = Counter(instance.status.value for instance in state.instances.values())
    return ImportReport(
        uid=storage.uid,
        backend=storage.backend_name,
        version=version,
        tasks=len(state.tasks),
        instances=dict(statuses),
    )


def _check_storable(state: SessionState) -> None:
    """The state survives our own serialization (what every storage writes)."""
    try:
        state_from_json(json.loads(json.dumps(state_to_json(state), allow_nan=False)))
    except (SerializationError, ValueError) as exc:
        raise OriginalSessionError([f"<converted session>: {exc}"]) from exc


#: How deeply an export may nest (a stored value may nest 64 levels, inside
#: the session's instances, their kwargs and their triggers).
MAX_EXPORT_DEPTH = 100


def too_deep(text: str, limit: int) -> str | None:
    """The path of the first array or object nested deeper than ``limit`` (None if none).

    One pass over ``text`` that keeps only the path to where it is (never
    recursing, never building the values), so a hostile export cannot exhaust
    the stack. Text that is not JSON is left to the parser to report.
    """
    path: list[str | int] = []
    kinds: list[str] = []
    expect_key = False
    i, end = 0, len(text)
    while i < end:
        char = text[i]
        if char == '"':
            try:
                value, i = scanstring(text, i + 1)
            except ValueError:
                return None
            if expect_key and kinds and kinds[-1] == "{":
                path[-1] = value
                expect_key = False
            continue
        if char in "[{":
            if len(kinds) >= limit:
                return _dotted(path)
            kinds.append(char)
            path.append(0 if char == "[" else "")
            expect_key = char == "{"
        elif char in "]}":
            if kinds:
                kinds.pop()
                path.pop()
            expect_key = False
        elif char == "," and kinds:
            if kinds[-1] == "[":
                index = path[-1]
                path[-1] = index + 1 if isinstance(index, int) else 0
            else:
                expect_key = True
        i += 1
    return None


def _dotted(path: list[str | int]) -> str:
    text = ""
    shown = path if len(path) <= 12 else [*path[:8], "...", *path[-2:]]
    for part in shown:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def load_export(source: str | os.PathLike[str] | IO[str]) -> Any:
    """Parse a JSON export of the original's ``debug_repr()`` (a path or an open file).

    A key repeated inside one JSON object is an error (JSON would keep the last
    one silently).
    """
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise OriginalSessionError([f"{path}: cannot read the export ({exc})"]) from exc
        where = str(path)
    else:
        text = source.read()
        where = getattr(source, "name", "<export>")
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                duplicates.append(key)
            seen[key] = value
        return seen

    deep = too_deep(text, MAX_EXPORT_DEPTH)
    if deep is not None:
        raise OriginalSessionError(
            [f"{deep or '<session>'}: nested more than {MAX_EXPORT_DEPTH} levels deep ({where})"]
        )
    try:
        content = json.loads(text, object_pairs_hook=pairs)
    except (ValueError, RecursionError) as exc:
        raise OriginalSessionError([f"{where}: not valid JSON ({exc})"]) from None
    if duplicates:
        raise OriginalSessionError(
            [f"{where}: key {key!r} appears twice in one object" for key in duplicates]
        )
    return content
