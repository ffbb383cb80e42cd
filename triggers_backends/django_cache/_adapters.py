"""Which Django cache classes get which key-value adapter, and which are refused.

Lookup walks the cache's class and then its base classes (so a subclass of a
supported cache is supported the same way) and takes the first class that is
registered, refused, or declares the :data:`HOOK_ATTRIBUTE` hook. A class none of
that applies to is refused: a cache we know nothing about cannot be trusted with
a conditional write.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any

from triggers_backends.django_cache._common import AdapterOptions, UnsupportedCacheError, class_path
from triggers_backends.kv_client import KeyValueClient

__all__ = [
    "HOOK_ATTRIBUTE",
    "AdapterFactory",
    "adapter_factory",
    "register_cache_adapter",
]

#: ``factory(cache, options) -> KeyValueClient``.
AdapterFactory = Callable[[Any, AdapterOptions], KeyValueClient]

#: A cache class may declare support itself: a class attribute of this name holding
#: an :data:`AdapterFactory` (a ``staticmethod`` or a plain function stored on the class).
HOOK_ATTRIBUTE = "triggers_key_value_client"

_BUILTIN: dict[str, str] = {
    "django.core.cache.backends.redis.RedisCache": (
        "triggers_backends.django_cache._redis:for_redis_cache"
    ),
    "django_redis.cache.RedisCache": "triggers_backends.django_cache._redis:for_django_redis",
    "django.core.cache.backends.db.DatabaseCache": (
        "triggers_backends.django_cache._database:for_database_cache"
    ),
    "django.core.cache.backends.locmem.LocMemCache": (
        "triggers_backends.django_cache._locmem:for_locmem_cache"
    ),
    "django.core.cache.backends.memcached.PyMemcacheCache": (
        "triggers_backends.django_cache._memcached:for_pymemcache_cache"
    ),
}

_REFUSED: dict[str, str] = {
    "django.core.cache.backends.dummy.DummyCache": (
        "it stores nothing, so every session would be lost at once"
    ),
    "django.core.cache.backends.filebased.FileBasedCache": (
        "it writes each key as a file with no compare-and-swap, so two processes can "
        "overwrite each other's updates; use the database cache (SQLite file) instead"
    ),
    "django.core.cache.backends.memcached.PyLibMCCache": (
        "Triggers' memcached support uses pymemcache; switch the cache to "
        "django.core.cache.backends.memcached.PyMemcacheCache"
    ),
}

_registered: dict[str, str | AdapterFactory] = {}
_lock = threading.Lock()


def register_cache_adapter(cache_class: type | str, factory: AdapterFactory | str) -> None:
    """Declare that ``cache_class`` (a class or its dotted path) is served by ``factory``.

    ``factory(cache, options)`` (or ``"module:function"``) returns a
    :class:`~triggers_backends.kv_client.KeyValueClient` whose ``cas`` and ``add``
    are atomic across every process that uses the cache; prove it with
    ``KeyValueClientContract``. Registering a refused class overrides the refusal.
    """
    path = cache_class if isinstance(cache_class, str) else class_path(cache_class)
    with _lock:
        _registered[path] = factory


def _load(target: str | AdapterFactory) -> AdapterFactory:
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    factory: AdapterFactory = getattr(importlib.import_module(module_name), attr)
    return factory


def adapter_factory(cache: Any, alias: str | None = None) -> AdapterFactory:
    """The factory serving ``cache``; :class:`UnsupportedCacheError` if there is none."""
    name = class_path(type(cache))
    for cls in type(cache).__mro__:
        path = class_path(cls)
        with _lock:
            registered = _registered.get(path)
        if registered is not None:
            return _load(registered)
        hook = cls.__dict__.get(HOOK_ATTRIBUTE)
        if hook is not None:
            return hook.__func__ if isinstance(hook, staticmethod) else hook
        if path in _REFUSED:
            raise UnsupportedCacheError(name, _REFUSED[path], alias=alias)
        if path in _BUILTIN:
            try:
                return _load(_BUILTIN[path])
            except ImportError as exc:
                raise UnsupportedCacheError(
                    name, f"its adapter needs a module that cannot be imported ({exc})", alias=alias
                ) from exc
    raise UnsupportedCacheError(
        name,
        "Triggers does not know whether this cache class can make a write conditional "
        "across processes. Supported: Django's RedisCache, django-redis's RedisCache, "
        "PyMemcacheCache, DatabaseCache (SQLite, PostgreSQL) and LocMemCache (one process). "
        f"A third-party cache declares support with a {HOOK_ATTRIBUTE!r} class attribute or "
        "triggers_backends.django_cache.register_cache_adapter()",
        alias=alias,
    )
