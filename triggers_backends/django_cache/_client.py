"""The key-value client of a Django cache: :func:`key_value_client` and :func:`resolve_cache`."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.cache import BaseCache, caches
from django.core.cache.backends.base import InvalidCacheBackendError
from django.core.exceptions import ImproperlyConfigured

from triggers_backends.django_cache._adapters import adapter_factory
from triggers_backends.django_cache._common import (
    DEFAULT_IO_TIMEOUT,
    DEFAULT_MAX_VALUE_SIZE,
    AdapterOptions,
)
from triggers_backends.kv_client import KeyValueClient
from triggers_core.errors import did_you_mean

__all__ = ["client_for", "key_value_client", "resolve_cache"]


def resolve_cache(cache: str | BaseCache = "default") -> tuple[BaseCache, str | None]:
    """``(cache object, alias)`` for an alias name or a cache object (alias unknown: None)."""
    if isinstance(cache, str):
        try:
            return caches[cache], cache
        except InvalidCacheBackendError as exc:
            if cache in settings.CACHES:  # the alias exists; its BACKEND cannot be loaded
                raise
            raise InvalidCacheBackendError(
                f"no Django cache named {cache!r} in settings.CACHES"
                f"{did_you_mean(cache, settings.CACHES)}"
            ) from exc
        except ImproperlyConfigured as exc:
            if settings.configured:
                raise
            raise ImproperlyConfigured(
                f"Django's settings are not configured, so the cache {cache!r} cannot be "
                "opened: set DJANGO_SETTINGS_MODULE (and call django.setup(), as the app "
                "module of a Celery worker for Django does) or call "
                "django.conf.settings.configure() first"
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
    return client_for(
        resolved, alias, timeout=timeout, max_value_size=max_value_size, io_timeout=io_timeout
    )


def client_for(
    cache: BaseCache,
    alias: str | None,
    *,
    timeout: float | None = None,
    max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
    io_timeout: float = DEFAULT_IO_TIMEOUT,
) -> KeyValueClient:
    """:func:`key_value_client` for a cache already resolved (``alias``: for messages)."""
    options = AdapterOptions(
        timeout=timeout, max_value_size=max_value_size, io_timeout=io_timeout, alias=alias
    )
    resolved = cache
    factory = adapter_factory(resolved, alias)
    client: Any = factory(resolved, options)
    if not isinstance(client, KeyValueClient):
        raise TypeError(
            f"the adapter factory for {type(resolved).__qualname__} returned "
            f"{type(client).__name__}, not a KeyValueClient"
        )
    return client
