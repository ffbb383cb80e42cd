"""Key-value adapter for Django's ``PyMemcacheCache``: memcached's own ``gets``/``cas``.

The cache's servers and its ``connect_timeout`` / ``timeout`` options are handed to
:class:`~triggers_backends.pymemcache_client.PymemcacheClient` (bytes only, never
pickle, bounded waits, the servers' item size limit). Clients are shared by every
adapter on the same servers and settings in a process, so opening many sessions
does not open many connection pools.

memcached's ``cas`` compares the item's ``cas unique``, which changes on every
write, so it is atomic across processes and detects a rewrite with identical bytes.
Keys go through the cache's ``make_key`` and must stay within memcached's 250
bytes. Values carry the same envelope as on Redis, so a value Triggers did not
write is recognised; Django's own ``cache.get`` on one of our keys returns the
stored bytes (their flags say "bytes") and unpickles nothing.

memcached evicts items when it runs out of memory (and restarts empty): size it
for the sessions it holds and watch ``evictions`` (see docs/storage.md).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from triggers_backends.django_cache._common import (
    ENVELOPE,
    AdapterOptions,
    UnsupportedCacheError,
    check_sizes,
    class_path,
    open_envelope,
)
from triggers_backends.kv_client import MAX_KEY_LENGTH, CasToken, KeyValueError
from triggers_backends.pymemcache_client import PymemcacheClient, parse_servers

__all__ = ["PyMemcacheKeyValueClient", "for_pymemcache_cache"]

_SHARED: weakref.WeakValueDictionary[tuple[Any, ...], PymemcacheClient] = (
    weakref.WeakValueDictionary()
)
_SHARED_LOCK = threading.Lock()


class PyMemcacheKeyValueClient:
    """A :class:`~triggers_backends.kv_client.KeyValueClient` on one ``PyMemcacheCache``."""

    backend_name = "django-cache/pymemcache"
    #: Every process that opens the same servers sees the same keys.
    shared_across_processes = True

    def __init__(self, cache: Any, client: PymemcacheClient, options: AdapterOptions) -> None:
        self._cache = cache
        self._client = client
        self._options = options

    def __repr__(self) -> str:
        return f"<PyMemcacheKeyValueClient alias={self._options.alias!r} {self._client!r}>"

    @property
    def max_value_size(self) -> int:
        """The smaller of the caller's limit and what the servers accept (asked once)."""
        return min(self._options.max_value_size, self._client.max_value_size - len(ENVELOPE))

    def _key(self, key: str) -> str:
        mapped: str = self._cache.make_key(key)
        if len(mapped.encode("utf-8", "surrogatepass")) > MAX_KEY_LENGTH:
            raise KeyValueError(
                f"{self.backend_name}: cache key {mapped!r} is longer than memcached's "
                f"{MAX_KEY_LENGTH} bytes (shorten the cache's KEY_PREFIX)"
            )
        return mapped

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        mapped = {self._key(k): k for k in keys}
        found = self._client.get_many(list(mapped))
        return {mapped[k]: open_envelope(v, mapped[k], self.backend_name) for k, v in found.items()}

    def gets(self, key: str) -> tuple[bytes, CasToken] | None:
        found = self._client.gets(self._key(key))
        if found is None:
            return None
        return open_envelope(found[0], key, self.backend_name), found[1]

    def gets_with(
        self, key: str, others: Sequence[str]
    ) -> tuple[tuple[bytes, CasToken] | None, dict[str, bytes]]:
        """:meth:`gets` and :meth:`get_many` in one request (``PymemcacheClient.gets_with``)."""
        mapped = {self._key(k): k for k in others}
        found, values = self._client.gets_with(self._key(key), list(mapped))
        got = {mapped[k]: open_envelope(v, mapped[k], self.backend_name) for k, v in values.items()}
        if found is None:
            return None, got
        return (open_envelope(found[0], key, self.backend_name), found[1]), got

    def add(self, key: str, value: bytes) -> bool:
        check_sizes([value], self.max_value_size, self.backend_name)
        return self._client.add(self._key(key), ENVELOPE + bytes(value))

    def cas(self, key: str, value: bytes, token: CasToken) -> bool:
        check_sizes([value], self.max_value_size, self.backend_name)
        return self._client.cas(self._key(key), ENVELOPE + bytes(value), token)

    def set_many(self, items: Mapping[str, bytes]) -> None:
        check_sizes(items.values(), self.max_value_size, self.backend_name)
        self._client.set_many({self._key(k): ENVELOPE + bytes(v) for k, v in items.items()})

    def delete_many(self, keys: Sequence[str]) -> None:
        self._client.delete_many([self._key(k) for k in keys])

    def close(self) -> None:
        """Nothing to release: the pooled connections are shared (see the module docstring)."""


def _seconds(value: Any, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return default


def for_pymemcache_cache(cache: Any, options: AdapterOptions) -> PyMemcacheKeyValueClient:
    """Adapter for ``django.core.cache.backends.memcached.PyMemcacheCache``."""
    try:
        servers = tuple(parse_servers(",".join(cache._servers)))
    except ValueError as exc:
        raise UnsupportedCacheError(
            class_path(type(cache)),
            f"its LOCATION is not a list of host:port servers ({exc})",
            alias=options.alias,
        ) from exc
    settings = cache._options
    connect_timeout = _seconds(settings.get("connect_timeout"), options.io_timeout)
    timeout = _seconds(settings.get("timeout"), options.io_timeout)
    ttl = 0 if options.timeout is None else max(1, math.ceil(options.timeout))
    shared_key = (servers, connect_timeout, timeout, ttl)
    with _SHARED_LOCK:
        client = _SHARED.get(shared_key)
        if client is None:
            client = PymemcacheClient(
                servers, connect_timeout=connect_timeout, timeout=timeout, ttl=ttl
            )
            _SHARED[shared_key] = client
    return PyMemcacheKeyValueClient(cache, client, options)
