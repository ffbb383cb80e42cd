"""Documents of the key-value layout: an envelope naming what it holds, and chunks.

Every stored document is JSON ``{"layout": 1, "kind": ..., "uid": ..., "body": ...}``;
a reader checks all three against what it expected, so a document of another
session, of another kind, or written by a newer layout is refused with a clear
:class:`~triggers_core.errors.SerializationError` instead of being misread.

A document larger than the client's ``max_value_size`` is split into chunks
(``{key}:0``, ``{key}:1``...). Nothing is stored under the key itself then;
the *reference* to the document (:class:`DocRef`) records how many chunks
there are and a digest of the whole, so a reader fetches all chunks in one
round trip and detects a missing or mismatched one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from triggers_backends.kv.keys import chunk_key
from triggers_core.engine.serialization import dumps, loads
from triggers_core.errors import SerializationError

__all__ = [
    "LAYOUT_VERSION",
    "MAX_CHUNKS",
    "DocRef",
    "DocumentMissing",
    "decode",
    "encode",
    "is_token",
    "join",
    "split",
    "stored_keys",
]

#: Bumped when the key-value layout changes; readers refuse newer layouts.
LAYOUT_VERSION = 1

_ENVELOPE = {"layout", "kind", "uid", "body"}


#: The most chunks a document may have: a reference claiming more is damaged (a reader
#: would otherwise build that many keys). 2**20 items of memcached's 1 MiB default.
MAX_CHUNKS = 1 << 20


def is_token(text: str) -> bool:
    """A short ASCII token that can be part of a key (a revision, an epoch, a digest)."""
    return 0 < len(text) <= 32 and text.isascii() and text.isalnum()


@dataclass(frozen=True, slots=True)
class DocRef:
    """Where an immutable document is: its writer's revision, and its chunks if split."""

    rev: str
    #: 0: stored whole under its key; else the number of chunks.
    chunks: int = 0
    #: Of the whole encoded document, when chunked (BLAKE2b-128, hex).
    digest: str = ""

    def to_json(self) -> list[Any]:
        return [self.rev] if not self.chunks else [self.rev, self.chunks, self.digest]

    @classmethod
    def from_json(cls, value: Any, what: str) -> DocRef:
        """The reference stored as ``value``; SerializationError (naming ``what``: the
        session and the document) if it is not one, or claims more than
        :data:`MAX_CHUNKS` chunks."""
        ok = isinstance(value, list) and len(value) in (1, 3) and isinstance(value[0], str)
        if ok and len(value) == 3:
            count, hexdigest = value[1], value[2]
            ok = (
                isinstance(count, int)
                and not isinstance(count, bool)
                and count > 0
                and isinstance(hexdigest, str)
            )
            if ok and count > MAX_CHUNKS:
                raise SerializationError(
                    f"{what}: document reference claims {_count(count)} chunks, more than "
                    f"the {MAX_CHUNKS} a document may have (damaged data)"
                )
        if not ok or not is_token(value[0]):
            raise SerializationError(f"{what}: invalid document reference {_short(value)}")
        return cls(*value)


def _count(number: int) -> str:
    """A count for a message, never formatted whole if huge (bounded work)."""
    return str(number) if number < 10**18 else f"about 2**{number.bit_length() - 1}"


def _short(value: Any) -> str:
    try:
        text = repr(value) if not isinstance(value, list) or len(value) < 8 else "a long list"
    except ValueError:  # an integer too long to format
        return "holding a huge number"
    return text if len(text) <= 200 else text[:200] + "..."


def encode(kind: str, uid: str, body: Any) -> bytes:
    """The envelope around ``body`` as compact UTF-8 JSON."""
    text = dumps({"layout": LAYOUT_VERSION, "kind": kind, "uid": uid, "body": body})
    return text.encode("utf-8", "surrogatepass")


def decode(raw: bytes, kind: str, uid: str, what: str) -> Any:
    """The body of a document, after checking its layout, kind and session."""
    doc = loads(raw, what)
    layout = doc.get("layout")
    if not isinstance(layout, int) or isinstance(layout, bool) or layout < 1:
        raise SerializationError(f"{what}: missing or invalid layout {layout!r}")
    if layout > LAYOUT_VERSION:
        raise SerializationError(
            f"{what}: layout {layout} is newer than this library understands "
            f"({LAYOUT_VERSION}); upgrade triggers to read it"
        )
    unknown = sorted(set(doc) - _ENVELOPE)
    if unknown:
        raise SerializationError(f"{what}: unknown fields {unknown}")
    if doc.get("kind") != kind:
        raise SerializationError(f"{what}: holds a {doc.get('kind')!r} document, not {kind!r}")
    if doc.get("uid") != uid:
        raise SerializationError(f"{what}: belongs to session {doc.get('uid')!r}")
    if "body" not in doc:
        raise SerializationError(f"{what}: missing field 'body'")
    return doc["body"]


class DocumentMissing(Exception):
    """A referenced document is not in the store (deleted by a later commit, or evicted)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def split(key: str, rev: str, data: bytes, limit: int) -> tuple[DocRef, dict[str, bytes]]:
    """The reference and the items to store for ``data`` under ``key`` (chunked if large)."""
    if len(data) <= limit:
        return DocRef(rev), {key: data}
    count = -(-len(data) // limit)
    if count > MAX_CHUNKS:
        raise SerializationError(
            f"{key}: a document of {len(data)} bytes would need {count} chunks of {limit} "
            f"bytes, more than the {MAX_CHUNKS} a document may have; nothing was written"
        )
    items = {chunk_key(key, n): data[n * limit : (n + 1) * limit] for n in range(count)}
    return DocRef(rev, count, _digest(data)), items


def stored_keys(key: str, ref: DocRef) -> list[str]:
    """The keys that hold the document ``ref`` points to."""
    if not ref.chunks:
        return [key]
    return [chunk_key(key, n) for n in range(ref.chunks)]


def join(key: str, ref: DocRef, found: Mapping[str, bytes], what: str) -> bytes | None:
    """The document from fetched items; None if a part is missing.

    Raises :class:`SerializationError` if the chunks do not add up to the
    document the reference describes.
    """
    keys = stored_keys(key, ref)
    parts = [found.get(k) for k in keys]
    if any(part is None for part in parts):
        return None
    data = b"".join(p for p in parts if p is not None)
    if ref.chunks and _digest(data) != ref.digest:
        raise SerializationError(
            f"{what}: its {ref.chunks} chunks ({len(data)} bytes) do not match their digest"
        )
    return data
