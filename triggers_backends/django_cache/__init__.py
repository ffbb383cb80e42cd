"""Django cache support: key-value adapters with a real conditional write per cache class.

Django's cache API has no compare-and-swap, so :func:`key_value_client` reaches
past it to what each cache class is built on and returns a
:class:`~triggers_backends.kv_client.KeyValueClient` whose ``cas`` and ``add`` are
atomic where the cache is shared:

=====================================================  ==========================================
cache class                                            conditional write
=====================================================  ==========================================
``django.core.cache.backends.redis.RedisCache``        Lua scripts on the redis-py client
``django_redis.cache.RedisCache``                      the same (DefaultClient; ShardClient refused)
``django.core.cache.backends.memcached.PyMemcacheCache``  memcached ``gets``/``cas``/``add``
``django.core.cache.backends.db.DatabaseCache``        ``UPDATE ... WHERE value = old`` / ``INSERT``
``django.core.cache.backends.locmem.LocMemCache``      the cache's lock (one process only)
``DummyCache``, ``FileBasedCache``, ``PyLibMCCache``   refused: :class:`UnsupportedCacheError`
any other class                                        refused unless it declares support
=====================================================  ==========================================

Values are bytes we encode ourselves; the cache's pickle serializer is never used
and nothing read is ever unpickled. Keys go through the cache's ``make_key`` (so
``KEY_PREFIX``, ``VERSION`` and ``KEY_FUNCTION`` apply). Nothing expires unless
the caller passes ``timeout``: the cache's ``TIMEOUT`` setting is ignored on
purpose (Django's default of 300 seconds would silently delete live sessions).

Third-party caches declare support with :func:`register_cache_adapter` or a
``triggers_key_value_client`` class attribute (see :data:`HOOK_ATTRIBUTE`).
The design, per cache class, is in ``docs/storage.md``.
"""

from __future__ import annotations

from typing import Any

from django.core.cache import BaseCache, caches
from django.core.cache.backends.base import InvalidCacheBackendError

from triggers_backends.django_cache._adapters import (
    HOOK_ATTRIBUTE,
    AdapterFactory,
    adapter_factory,
    register_cache_adapter,
)
from triggers_backends.django_cache._common import (
    DEFAULT_IO_TIMEOUT,
    DEFAULT_MAX_VALUE_SIZE,
    AdapterOptions,
    UnsupportedCacheError,
)
from triggers_backends.kv_client import KeyValueClient

__all__ = [
    "DEFAULT_IO_TIMEOUT",
    "DEFAULT_MAX_VALUE_SIZE",
    "HOOK_ATTRIBUTE",
    "AdapterFactory",
    "AdapterOptions",
    "UnsupportedCacheError",
    "key_value_client",
    "register_cache_adapter",
    "resolve_cache",
]


def resolve_cache(cache: str | BaseCache = "default") -> tuple[BaseCache, str | None]:
    """``(cache object, alias)`` for an alias name or a cache object (alias unknown: None)."""
    if isinstance(cache, str):
        try:
            return caches[cache], cache
        except InvalidCacheBackendError as exc:
            raise InvalidCacheBackendError(
                f"no Django cache named {cache!r} in settings.CACHES"
            ) from exc
    if not isinstance(cache, BaseCache):
        raise TypeError(
            f"expected a Django cache alias or cache object, got {type(cache).__name__}"
        )
    return cache, None


def key_value_client(
    cache: str | BaseCache = "default",
    *,
    timeout: float | None = None,
    max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
    io_timeout: float = DEFAULT_IO_TIMEOUT,
) -> KeyValueClient:
    """A key-value client with a real conditional write on ``cache`` (alias or object).

    ``timeout``: seconds until written keys expire; None (the default) means never,
    whatever the cache's ``TIMEOUT`` says. ``max_value_size``: the largest value one
    key may hold. ``io_timeout``: the bound on a network call where the cache's own
    options set none (Redis sockets).

    Raises :class:`UnsupportedCacheError` (naming the cache class) for a cache that
    cannot make a write conditional across processes. The returned client's
    ``shared_across_processes`` attribute is False for ``LocMemCache``.
    """
    resolved, alias = resolve_cache(cache)
    options = AdapterOptions(
        timeout=timeout, max_value_size=max_value_size, io_timeout=io_timeout, alias=alias
    )
    factory = adapter_factory(resolved, alias)
    client: Any = factory(resolved, options)
    if not isinstance(client, KeyValueClient):
        raise TypeError(
            f"the adapter factory for {type(resolved).__qualname__} returned "
            f"{type(client).__name__}, not a KeyValueClient"
        )
    return client
