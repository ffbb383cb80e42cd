"""Idempotency keys: which fires a session has already applied.

``fire(trigger, kwargs, idempotency_key=key)`` applies a fire once per
``(session, trigger, key)``: the storage keeps a *fire record* for it, the
tuple of instance names that first fire scheduled, and a later fire with the
same trigger and key finds the record and changes nothing. The same key on
another trigger is another fire.

A record is looked up by :class:`FireKey`: the trigger name and a SHA-256
digest of ``trigger + "\\0" + key``. Storages keep the digest, never the key
itself (a key may be a webhook delivery id or another value the application
would rather not see in tables and logs), and keep records outside the small
session header, so a fire's cost does not grow with the number of keys a
session holds.

The finish of an instance records its cascade the same way, under
:func:`cascade_key` (the task name, and a key no caller can pass: it holds a
NUL), so an instance whose outcome is committed twice (an operator forced a
finished instance back to ``scheduled`` and a redelivered message ran it
again) cascades once.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import attrs

from triggers_core.engine.names import name_problem
from triggers_core.errors import InvalidKwargsError, SerializationError

__all__ = [
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "FireKey",
    "cascade_key",
    "check_idempotency_key",
    "decode_scheduled",
    "fire_key",
]

#: The longest idempotency key, in characters.
MAX_IDEMPOTENCY_KEY_LENGTH = 256


def _digest(trigger: str, key: str) -> str:
    text = f"{trigger}\0{key}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@attrs.frozen(repr=False, cache_hash=True)
class FireKey:
    """Where a fire record is kept: the trigger and the digest of ``(trigger, key)``.

    Build one with :func:`fire_key` (or :func:`cascade_key`); the raw key is
    not kept. ``repr`` shows the trigger and the start of the digest only.
    """

    #: The trigger the keyed fire fired.
    trigger: str
    #: SHA-256 (hex) of ``trigger + "\\0" + key``: the lookup key in every storage.
    digest: str

    def __repr__(self) -> str:
        return f"FireKey({self.trigger!r}, {self.digest[:12]}…)"


def check_idempotency_key(key: object) -> str:
    """``key`` if it is a usable idempotency key, else :class:`InvalidKwargsError`.

    A key is a non-empty string of valid Unicode without NUL, at most
    :data:`MAX_IDEMPOTENCY_KEY_LENGTH` characters. The error names
    ``idempotency_key`` and the problem, without quoting a long key whole.
    """
    if not isinstance(key, str):
        raise InvalidKwargsError(
            "idempotency_key", f"expected a non-empty string, got {type(key).__name__}"
        )
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidKwargsError(
            "idempotency_key",
            f"is {len(key)} characters long, more than the {MAX_IDEMPOTENCY_KEY_LENGTH} allowed "
            "(hash a longer value into a key)",
        )
    problem = name_problem(key)
    if problem is not None:
        raise InvalidKwargsError("idempotency_key", problem)
    return key


def fire_key(trigger: str, key: str) -> FireKey:
    """The :class:`FireKey` of a fire of ``trigger`` with idempotency key ``key`` (checked)."""
    return FireKey(trigger, _digest(trigger, check_idempotency_key(key)))


@functools.lru_cache(maxsize=4096)  # the runner and the engine both ask, once per finish
def cascade_key(task_name: str, instance_name: str) -> FireKey:
    """The :class:`FireKey` under which the finish of ``instance_name`` records its cascade.

    The key holds a NUL, which :func:`check_idempotency_key` refuses, so no
    keyed fire of the task name can collide with it.
    """
    return FireKey(task_name, _digest(task_name, f"\0cascade\0{instance_name}"))


def decode_scheduled(value: Any, what: str) -> tuple[str, ...]:
    """A stored record's instance names (a JSON list of strings), checked.

    Raises :class:`~triggers_core.errors.SerializationError` naming ``what``
    for anything else.
    """
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise SerializationError(f"{what}: expected a list of instance names, got {value!r}")
    return tuple(value)
