"""The key-value client port: what the key-value storage layout needs from a store.

The memcached backend and the Django-cache backend keep sessions in the same
layout (a small *active document* that is compared-and-swapped, plus immutable
documents under their own keys). What differs between them is only how to
read, create and conditionally replace one key; each adapter implements
:class:`KeyValueClient` and nothing else.

Rules every client follows (checked by ``tests/backends/kv_client_contract.py``):

* Keys are ASCII text of at most :data:`MAX_KEY_LENGTH` characters without
  spaces or control characters (the layout hashes anything else into that
  form). Values are ``bytes``; a client never pickles and never unpickles.
* Nothing expires unless the client was built with an explicit TTL.
* :meth:`~KeyValueClient.gets` returns the value with an opaque token;
  :meth:`~KeyValueClient.cas` replaces the value only if nobody wrote the key
  since that ``gets`` (and it still exists). Tokens are only ever given back to
  the client that produced them.
* :meth:`~KeyValueClient.add` creates a key only if it does not exist.
* Keys that share a *hash tag* (the text between the first ``{`` and the next
  ``}``) live on one server: a client spread over several servers routes by
  the tag (the whole key if it has none). The layout tags every key of a
  session with the session's hash, so ``cas`` on its active document and the
  documents it refers to are always on the same server.
* A server that is down, refuses, or does not answer within the client's
  timeout raises :class:`KeyValueUnavailable`; a value larger than the server
  accepts raises :class:`KeyValueTooLarge` (nothing is written then). Neither
  message may contain credentials.

A store that can run several writes as one atomic step (Redis, with a script)
may also implement :class:`AtomicCommitClient`: the layout then commits a small
change in one call instead of three (write documents, compare-and-swap, delete).
One that sets ``commits_index_appends`` also files the commit's due-index hints
(:class:`IndexAppend`) in that call, so they cost no round trip of their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "INDEX_TOMBSTONE",
    "MAX_KEY_LENGTH",
    "AtomicCommitClient",
    "BatchGetsClient",
    "CasToken",
    "IndexAppend",
    "IndexAppendNotPlaced",
    "KeyValueClient",
    "KeyValueError",
    "KeyValueTooLarge",
    "KeyValueUnavailable",
    "ValueTokenClient",
]

#: memcached's limit, the strictest of the stores we support.
MAX_KEY_LENGTH = 250

#: Opaque to the layout: memcached's ``cas unique``, or the previous value itself.
CasToken = object


class KeyValueError(Exception):
    """Base class of key-value client errors (the storage layer wraps them)."""


class KeyValueUnavailable(KeyValueError):
    """The store is down, refused, or did not answer in time: maybe transient."""


class KeyValueTooLarge(KeyValueError):
    """A value exceeds what the store accepts for one key; nothing was written."""


class IndexAppendNotPlaced(KeyValueError):
    """An atomic commit found no candidate slot for an :class:`IndexAppend`; nothing was
    written (the layout then files the hints itself and commits again)."""


#: The value of a due-index slot that is closed for good: writers move on to the next
#: slot, and the sweeper that closed it deletes it (see ``triggers_backends.kv.due_index``).
INDEX_TOMBSTONE = b"!"


@dataclass(eq=False)
class IndexAppend:
    """Lines to append to one of several candidate slots of the due index.

    A slot takes the lines if it does not exist (it is created, and its entry is
    added to ``directory``, a text ``,entry,entry,``), or if it is not the
    :data:`INDEX_TOMBSTONE` and is empty or holds at most ``max_bytes - len(lines)``
    bytes. The first candidate that takes them does; the client records its
    position in ``placed``.
    """

    directory: str
    #: Candidate slot keys, in order, and the directory entry of each.
    slots: tuple[str, ...]
    entries: tuple[str, ...]
    lines: bytes
    max_bytes: int
    #: Set by the client: the index in ``slots`` of the slot that took the lines.
    placed: int | None = None


@runtime_checkable
class KeyValueClient(Protocol):
    """One key-value store, as the key-value storage layout uses it."""

    #: Backend label for error messages and the registry (``memcached``, ``django-cache/redis``...).
    backend_name: str

    @property
    def max_value_size(self) -> int:
        """The largest value, in bytes, one key may hold; the layout chunks anything larger.

        A plain attribute satisfies it too; a client may ask its server on first use.
        """
        ...

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Values of the keys that exist (missing keys are left out)."""
        ...

    def gets(self, key: str) -> tuple[bytes, CasToken] | None:
        """The value and a token for :meth:`cas`, or None if the key does not exist."""
        ...

    def add(self, key: str, value: bytes) -> bool:
        """Create ``key``; False (and nothing written) if it already exists."""
        ...

    def cas(self, key: str, value: bytes, token: CasToken) -> bool:
        """Replace ``key`` if unchanged since the :meth:`gets` that gave ``token``.

        False (and nothing written) if it changed or no longer exists.
        """
        ...

    def set_many(self, items: Mapping[str, bytes]) -> None:
        """Write every item unconditionally; raise if any could not be written."""
        ...

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete the keys that exist (best effort; missing keys are fine)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class BatchGetsClient(KeyValueClient, Protocol):
    """A client that reads several keys with their tokens in one round trip (optional).

    The layout reads the active documents of many sessions at once with it (a
    tick's batch load); without it, it calls :meth:`~KeyValueClient.gets` per key.
    """

    def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, CasToken]]:
        """:meth:`~KeyValueClient.gets` of each key that exists (missing keys are left out);
        each token is good for :meth:`~KeyValueClient.cas` as that of ``gets`` is."""
        ...


@runtime_checkable
class GetsWithClient(KeyValueClient, Protocol):
    """A :class:`KeyValueClient` that reads a key for :meth:`cas` and others in one request
    (optional: the layout looks ``gets_with`` up on the client's class, and makes two
    calls on a client without it)."""

    def gets_with(
        self, key: str, others: Sequence[str]
    ) -> tuple[tuple[bytes, CasToken] | None, dict[str, bytes]]:
        """:meth:`gets` of ``key``, and :meth:`get_many` of ``others``, each of the others
        read no earlier than ``key`` (in the same atomic read, or after it)."""
        ...


@runtime_checkable
class ValueTokenClient(KeyValueClient, Protocol):
    """A :class:`KeyValueClient` whose tokens are derived from the stored value (optional).

    After a write of ``value`` (``cas``, ``add``, ``set_many`` or ``commit``),
    the layout takes :meth:`token_of` as the key's token instead of reading
    the key again, so the next compare-and-swap of the same session needs no
    read first. A key written meanwhile by another writer holds other bytes
    (every active document the layout writes is unique), so that token no
    longer matches and the compare-and-swap fails as it must.
    """

    def token_of(self, value: bytes) -> CasToken:
        """The token :meth:`gets` would return for a key holding exactly ``value``."""
        ...


@runtime_checkable
class AtomicCommitClient(KeyValueClient, Protocol):
    """A :class:`KeyValueClient` that can also commit several writes as one atomic step."""

    def commit(
        self,
        key: str,
        value: bytes,
        token: CasToken | None,
        *,
        documents: Mapping[str, bytes],
        obsolete: Sequence[str],
        marker: tuple[str, bytes] | None,
    ) -> bool:
        """In one atomic step: if ``key`` is unchanged since the :meth:`gets` that gave
        ``token`` (``token`` None: if ``key`` does not exist), write ``documents``,
        set ``key`` to ``value``, create ``marker`` (key, value) unless it exists,
        and delete the ``obsolete`` keys; return True. Otherwise write nothing and
        return False.

        If ``key`` already holds exactly ``value``, return True without writing: a
        retry of a commit whose reply was lost must not report it as lost (the
        layout never writes identical bytes twice). Errors as for :meth:`cas`:
        after :class:`KeyValueUnavailable` it is unknown whether the step ran.

        A client whose class sets ``commits_index_appends = True`` also takes
        ``appends`` (a sequence of :class:`IndexAppend`, default empty) and, in
        the same step and only if it commits, places each as its docstring says
        (setting ``placed``); if one cannot be placed it raises
        :class:`IndexAppendNotPlaced` and writes nothing. Other clients are never
        given ``appends``.
        """
        ...
