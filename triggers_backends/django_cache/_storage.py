"""``CacheStorageBackend``: one session in a Django cache, on the key-value layout.

The storage is :class:`~triggers_backends.kv.storage.KeyValueStorage` (the layout
the memcached backend uses: a small active document compared-and-swapped,
immutable documents under their own keys) on the key-value client that
:func:`~triggers_backends.django_cache.key_value_client` builds for the cache, so
the conditional write is the cache class's own (see ``docs/storage.md``).

URL: ``django-cache://<alias>[?options]``, where ``<alias>`` is a key of
``settings.CACHES`` (percent-encoded if it holds characters a URL cannot).
Options:

* ``prefix``: key prefix inside the cache (default ``triggers:``; the cache's own
  ``KEY_PREFIX`` and ``VERSION`` apply on top);
* ``timeout``: seconds until each written document expires (default: never,
  whatever the cache's ``TIMEOUT`` says);
* ``io_timeout``: bound on a network call where the cache sets none (Redis);
* ``max_value_size``: the largest value one key may hold (larger documents are
  chunked);
* ``max_value_bytes``: the bound on one stored value's encoded size (trigger
  kwargs, a result, metadata; default 1 MiB, see ``docs/limits.md``).

A process opens the alias from *its own* Django settings: a Celery worker with
the same settings reopens the session from the reference ``django-cache://<alias>``.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlencode

from django.core.cache import BaseCache
from django.core.cache.backends.base import DEFAULT_TIMEOUT

from triggers_backends.django_cache._client import client_for, resolve_cache
from triggers_backends.django_cache._common import (
    DEFAULT_IO_TIMEOUT,
    DEFAULT_MAX_VALUE_SIZE,
    AdapterOptions,
    class_path,
)
from triggers_backends.kv.keys import DEFAULT_PREFIX
from triggers_backends.kv.storage import KeyValueStorage
from triggers_core.engine.sizes import DEFAULT_MAX_VALUE_BYTES, check_value_limit, parse_value_limit
from triggers_core.errors import StorageURLError, did_you_mean
from triggers_core.runtime.redaction import redact

__all__ = ["SCHEME", "CacheStorageBackend", "parse_url"]

SCHEME = "django-cache"

#: URL options and their defaults.
DEFAULTS: dict[str, Any] = {
    "prefix": DEFAULT_PREFIX,
    "timeout": None,
    "io_timeout": DEFAULT_IO_TIMEOUT,
    "max_value_size": DEFAULT_MAX_VALUE_SIZE,
    "max_value_bytes": DEFAULT_MAX_VALUE_BYTES,
}


def _timeout(text: str) -> float | None:
    return None if text.lower() in ("", "none", "never") else float(text)


_CONVERT: dict[str, Any] = {
    "prefix": str,
    "timeout": _timeout,
    "io_timeout": float,
    "max_value_size": int,
    "max_value_bytes": lambda text: parse_value_limit(text, "max_value_bytes"),
}


def parse_url(url: str) -> tuple[str, dict[str, Any]]:
    """``django-cache://alias?options`` -> (alias, options with defaults filled in)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != SCHEME:
        raise StorageURLError(
            f"not a Django cache storage URL: expected {SCHEME}://<cache alias>, "
            f"got {redact(url)!r}"
        )
    location, _, query = rest.partition("?")
    location = location.rstrip("/")
    if not location:
        raise StorageURLError(
            f"storage URL {redact(url)!r} names no cache alias; expected {SCHEME}://default"
        )
    if "/" in location or "@" in location:
        # Connection details belong in the process's Django settings, never in the URL.
        raise StorageURLError(
            f"storage URL {redact(url)!r}: expected {SCHEME}://<cache alias> (a key of "
            "settings.CACHES); the cache's location and credentials stay in the settings"
        )
    alias = unquote(location)
    options = dict(DEFAULTS)
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in DEFAULTS:
            raise StorageURLError(
                f"unknown {SCHEME} URL option {name!r}{did_you_mean(name, DEFAULTS)}"
            )
        try:
            options[name] = _CONVERT[name](value)
        except ValueError:
            raise StorageURLError(f"{SCHEME} URL option {name}={value!r} is not valid") from None
    return alias, options


def _canonical(value: Any) -> str:
    """One spelling per value (``3600``, ``3600.0`` and ``3.6e3`` alike), so that equal
    settings give equal references in every process."""
    if value is None:
        return "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _reference(alias: str, options: dict[str, Any]) -> str:
    extra = {k: _canonical(v) for k, v in options.items() if v != DEFAULTS[k]}
    query = urlencode(extra, quote_via=quote) if extra else ""
    return f"{SCHEME}://{quote(alias, safe='')}" + (f"?{query}" if query else "")


class CacheStorageBackend(KeyValueStorage):
    """One session in a Django cache, with a real compare-and-swap.

    ``cache`` is a cache alias (a key of ``settings.CACHES``) or a cache object.
    ``timeout``: seconds until each written document expires; None (the default)
    means never, whatever the cache's ``TIMEOUT`` setting says (Django's default
    of 300 seconds would silently delete live sessions). ``prefix``: key prefix
    inside the cache. ``max_value_size`` and ``io_timeout``: see
    :class:`~triggers_backends.django_cache.AdapterOptions`. ``max_value_bytes``:
    the bound on each stored value's encoded size (``docs/limits.md``).

    Raises :class:`~triggers_backends.django_cache.UnsupportedCacheError` for a
    cache that cannot make a write conditional across processes (``DummyCache``,
    ``FileBasedCache``, unknown classes). ``LocMemCache`` works within one process.
    """

    backend_name: ClassVar[str] = "django-cache"

    def __init__(
        self,
        uid: str,
        cache: str | BaseCache = "default",
        timeout: float | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        io_timeout: float = DEFAULT_IO_TIMEOUT,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        if timeout is DEFAULT_TIMEOUT:
            raise ValueError(
                "timeout=DEFAULT_TIMEOUT (the cache's TIMEOUT setting) is not supported: "
                "sessions would silently expire; pass None (never expire, the default) "
                "or a number of seconds"
            )
        # Validated here too, so that a bad option fails before the cache is looked up.
        AdapterOptions(timeout=timeout, max_value_size=max_value_size, io_timeout=io_timeout)
        check_value_limit(max_value_bytes)
        resolved, alias = resolve_cache(cache)
        client = client_for(
            resolved, alias, timeout=timeout, max_value_size=max_value_size, io_timeout=io_timeout
        )
        super().__init__(uid, client, prefix=prefix)
        self.cache = resolved
        #: The alias the cache was opened by (None: given as an object).
        self.alias = alias
        self.timeout = timeout
        # Documents expire after ``timeout``: a longer timer would outlive its session.
        self.max_timer_seconds = None if timeout is None else float(timeout)
        self.max_value_size = max_value_size
        self.io_timeout = io_timeout
        self.max_value_bytes = max_value_bytes

    @classmethod
    def from_url(cls, url: str, uid: str) -> CacheStorageBackend:
        """Open ``uid`` from ``django-cache://<alias>[?options]``."""
        alias, options = parse_url(url)
        return cls(uid, alias, **options)

    def _store_location(self) -> object:
        """The alias in this process's settings (the cache object's id if opened by object)."""
        return ("alias", self.alias) if self.alias is not None else ("object", id(self.cache))

    def reference(self) -> str | None:
        """``django-cache://<alias>`` plus non-default options; None if opened by object.

        Another process (a Celery worker) reopens the session from it with *its own*
        Django settings for that alias. A cache object has no name other processes
        know, so a storage built from one cannot be named.
        """
        if self.alias is None:
            return None
        options = {
            "prefix": self.prefix,
            "timeout": self.timeout,
            "io_timeout": self.io_timeout,
            "max_value_size": self.max_value_size,
            "max_value_bytes": self.max_value_bytes,
        }
        return _reference(self.alias, options)

    def close(self) -> None:
        """Release what the calling thread opened: its connection to a ``DatabaseCache``'s
        database (Django opens one per thread; a thread of your own that used this
        storage should call this before it ends). Nothing to do for the other caches."""
        self.client.close()

    def __repr__(self) -> str:
        where = (
            f"cache {self.alias!r}"
            if self.alias is not None
            else f"a {class_path(type(self.cache))} object"
        )
        return f"<{type(self).__name__} uid={self.uid!r} on {self._label}, {where}>"
