"""Django cache storage: ``CacheStorageBackend`` on a real conditional write per cache class.

:class:`CacheStorageBackend` (URL ``django-cache://<alias>``) keeps one session in a
Django cache with the key-value layout the memcached backend uses
(:mod:`triggers_backends.kv`), on the key-value client described below.

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

from triggers_backends.django_cache._adapters import (
    HOOK_ATTRIBUTE,
    AdapterFactory,
    register_cache_adapter,
)
from triggers_backends.django_cache._client import key_value_client, resolve_cache
from triggers_backends.django_cache._common import (
    DEFAULT_IO_TIMEOUT,
    DEFAULT_MAX_VALUE_SIZE,
    AdapterOptions,
    UnsupportedCacheError,
)
from triggers_backends.django_cache._storage import CacheStorageBackend

__all__ = [
    "DEFAULT_IO_TIMEOUT",
    "DEFAULT_MAX_VALUE_SIZE",
    "HOOK_ATTRIBUTE",
    "AdapterFactory",
    "AdapterOptions",
    "CacheStorageBackend",
    "UnsupportedCacheError",
    "key_value_client",
    "register_cache_adapter",
    "resolve_cache",
]
