"""What every Django-cache key-value adapter shares: options, the value envelope, errors."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from triggers_backends.kv_client import KeyValueError, KeyValueTooLarge
from triggers_core.errors import TriggersError

__all__ = [
    "DEFAULT_IO_TIMEOUT",
    "DEFAULT_MAX_VALUE_SIZE",
    "ENVELOPE",
    "AdapterOptions",
    "UnsupportedCacheError",
    "check_sizes",
    "chunked",
    "class_path",
    "open_envelope",
]

#: The largest value one key may hold unless the caller says otherwise. Redis and the
#: databases accept far more, but a document this big is better split into chunks.
DEFAULT_MAX_VALUE_SIZE = 16 * 1024 * 1024

#: Seconds a Redis call may wait when the cache's own options set no socket timeout.
DEFAULT_IO_TIMEOUT = 10.0

#: Prefixed to every byte value we write where Django's own ``cache.get`` would unpickle
#: what it finds (Redis). ``0xB6`` is not a pickle opcode, so if anything calls
#: ``cache.get`` on one of our keys, :func:`pickle.loads` fails on the first byte instead
#: of interpreting our (partly user-controlled) bytes as a program.
ENVELOPE = b"\xb6trg1:"

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class AdapterOptions:
    """How an adapter writes: the same for every cache class.

    ``timeout``: seconds until written keys expire, or None (the default): never.
    The cache's own ``TIMEOUT`` setting is deliberately ignored: a session that
    silently expires is lost work. ``max_value_size``: bytes per key (larger values
    are refused with :class:`~triggers_backends.kv_client.KeyValueTooLarge`, and the
    storage layout splits them first). ``io_timeout``: seconds a network call may
    wait where the cache does not bound it itself. ``alias``: the cache alias, for
    messages.
    """

    timeout: float | None = None
    max_value_size: int = DEFAULT_MAX_VALUE_SIZE
    io_timeout: float = DEFAULT_IO_TIMEOUT
    alias: str | None = None

    def __post_init__(self) -> None:
        timeout = self.timeout
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ValueError(
                f"timeout must be None (never expire) or a positive number of seconds, "
                f"got {timeout!r}"
            )
        size = self.max_value_size
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"max_value_size must be a positive int, got {size!r}")
        io = self.io_timeout
        if isinstance(io, bool) or not isinstance(io, int | float) or not io > 0:
            raise ValueError(f"io_timeout must be a positive number of seconds, got {io!r}")


class UnsupportedCacheError(TriggersError, TypeError):
    """This Django cache cannot make a write conditional (across processes), so Triggers
    refuses it; the message names the cache class and says what to use instead."""

    def __init__(self, cache_class: str, reason: str, *, alias: str | None = None) -> None:
        self.cache_class = cache_class
        self.reason = reason
        self.alias = alias
        where = f"cache {alias!r} " if alias is not None else "cache "
        super().__init__(f"{where}({cache_class}) cannot store Triggers sessions: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_unsupported, (self.cache_class, self.reason, self.alias))


def _rebuild_unsupported(cache_class: str, reason: str, alias: str | None) -> UnsupportedCacheError:
    return UnsupportedCacheError(cache_class, reason, alias=alias)


def class_path(cls: type) -> str:
    """``module.QualName`` of a class, as written in Django's ``BACKEND`` setting."""
    return f"{cls.__module__}.{cls.__qualname__}"


def check_sizes(values: Iterable[bytes], limit: int, backend: str) -> None:
    """Refuse before writing anything if one value is larger than ``limit`` bytes."""
    for value in values:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"{backend}: values are bytes, got {type(value).__name__}")
        if len(value) > limit:
            raise KeyValueTooLarge(
                f"{backend}: a value of {len(value)} bytes exceeds the limit of {limit} bytes"
            )


def open_envelope(stored: bytes, key: str, backend: str) -> bytes:
    """Our value inside ``stored``; a :class:`KeyValueError` if we did not write it."""
    if not stored.startswith(ENVELOPE):
        raise KeyValueError(
            f"{backend}: key {key!r} holds a value Triggers did not write "
            "(another program uses the same cache keys?)"
        )
    return stored[len(ENVELOPE) :]


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
