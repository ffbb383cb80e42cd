"""Keys of the key-value layout: any UID or name maps to a short, valid key.

Every key of a session is ``{prefix}{kind}:{{S}}...`` where ``S`` is
:func:`digest` of the UID. ``{S}`` is the key's *hash tag*, so a client spread
over several servers keeps a whole session on one server. Names inside a
session (task, instance, trigger) are digested the same way. A digest is 128
bits of SHA-256 in base32 (26 characters), so distinct values never share a key
in practice; the original value is stored inside every document and checked
on load.

Kinds: ``a`` active document, ``m`` marker, ``c`` configuration, ``k`` latest
kwargs of one trigger, ``p`` index page, ``i`` instance, ``f`` fire record,
``g`` fire record pointer, ``h`` entry of the list of confirmed fire records
(numbered, so ``delete`` finds every record), ``l`` lease record (one per run of an instance, the
only session key besides the active document that is ever compared-and-swapped);
a chunked document's chunks are its key plus ``:{n}``. Immutable documents end
with the revision token of the attempt that wrote them. Fire record keys also
hold the session's *epoch* (a random token the active document carries from
the session's creation on) and the digest of
the record's :class:`~triggers_core.engine.idempotency.FireKey`; a pointer's key is
fixed for its record (no revision), so a reader finds it from the key alone.

The due index and the session index belong to the store, not to a session:
their keys, ``{prefix}x:...`` and ``{prefix}s:...``, carry no session hash (see
:mod:`~triggers_backends.kv.due_index` and :mod:`~triggers_backends.kv.session_index`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re

from triggers_backends.kv_client import MAX_KEY_LENGTH

__all__ = ["DEFAULT_PREFIX", "MAX_PREFIX_LENGTH", "SessionKeys", "check_prefix", "digest"]

#: Key prefix unless told otherwise.
DEFAULT_PREFIX = "triggers:"
#: Longest accepted prefix: the longest key (a chunk of a page) then stays below 250 bytes.
MAX_PREFIX_LENGTH = 100


@functools.lru_cache(maxsize=1 << 16)
def digest(text: str) -> str:
    """26 lowercase base32 characters: 128 bits of SHA-256 of the UTF-8 text."""
    raw = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


#: Printable ASCII (0x21-0x7e: no space, no control characters) but the braces.
_PREFIX = re.compile(r"[\x21-\x7a\x7c\x7e]*")


def check_prefix(prefix: str) -> str:
    """A prefix is printable ASCII without spaces or braces, at most 100 characters."""
    if not isinstance(prefix, str):
        raise TypeError(f"key prefix must be a string, got {type(prefix).__name__}")
    # checked for every session a storage opens (the sibling of a producer's every fire)
    if len(prefix) > MAX_PREFIX_LENGTH or _PREFIX.fullmatch(prefix) is None:
        raise ValueError(
            f"key prefix {prefix!r} must be at most {MAX_PREFIX_LENGTH} printable ASCII "
            "characters without spaces or braces"
        )
    return prefix


class SessionKeys:
    """The keys of one session."""

    def __init__(self, prefix: str, uid: str) -> None:
        self.prefix = check_prefix(prefix)
        self.session = digest(uid)
        self._tag = "{" + self.session + "}"

    def _key(self, kind: str, *parts: str) -> str:
        key = ":".join((f"{self.prefix}{kind}", self._tag, *parts))
        assert len(key) <= MAX_KEY_LENGTH - 8, key  # room for a chunk suffix
        return key

    @property
    def active(self) -> str:
        """The active document: the only key ever compared-and-swapped."""
        return self._key("a")

    @property
    def marker(self) -> str:
        """Added once when the session is created: tells a lost session from a new one."""
        return self._key("m")

    def config(self, rev: str) -> str:
        """The task configuration written by attempt ``rev``."""
        return self._key("c", rev)

    def latest(self, trigger: str, rev: str) -> str:
        """The latest kwargs of ``trigger`` written by attempt ``rev``."""
        return self._key("k", digest(trigger), rev)

    def page(self, task: str, page: int, rev: str) -> str:
        """Index page ``page`` of ``task`` written by attempt ``rev``."""
        return self._key("p", digest(task), str(page), rev)

    def instance(self, name: str, rev: str) -> str:
        """Instance ``name`` as written by attempt ``rev``."""
        return self._key("i", digest(name), rev)

    def fire_record(self, epoch: str, record: str, rev: str) -> str:
        """Fire record ``record`` (its key's digest) as written by attempt ``rev``."""
        return self._key("f", epoch, record, rev)

    def fire_pointer(self, epoch: str, record: str) -> str:
        """Where the committed fire record ``record`` is (written once it is committed)."""
        return self._key("g", epoch, record)

    def fire_entry(self, epoch: str, number: int) -> str:
        """Entry ``number`` of the list of the session's confirmed fire records (for
        ``delete``, which finds every record through it)."""
        return self._key("h", epoch, str(number))

    def lease(self, name: str, owner: str) -> str:
        """The lease record of run ``owner`` of instance ``name``."""
        return self._key("l", digest(name), digest(owner))


def chunk_key(key: str, index: int) -> str:
    """Key of chunk ``index`` of the document stored under ``key``."""
    return f"{key}:{index}"
