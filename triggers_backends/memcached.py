"""memcached storage: the key-value layout (:mod:`triggers_backends.kv`) on pymemcache.

URL: ``memcached://host:port[,host:port...][?options]`` (port default 11211;
IPv6 as ``[addr]:port``). Options:

* ``prefix``: key prefix (default ``triggers:``);
* ``ttl``: seconds until each written document expires (default 0: never);
* ``connect_timeout`` / ``timeout``: seconds to connect / to wait for each
  reply or for a free pooled connection (default 2 each);
* ``pool_size``: connections per server (default 10);
* ``max_value_bytes``: the bound on one stored value's encoded size (default
  1 MiB; see ``docs/limits.md``), unrelated to memcached's item size (larger
  documents are chunked).

Storages opened from equal URLs share one :class:`PymemcacheClient` (one pool
per server) in the process. With several servers, every key of a session lives
on one server (the session hash is the keys' hash tag), because a session
split across servers could not be compared-and-swapped atomically; a server
that is down makes its sessions fail until it is back, and is never replaced by
another one (its sessions would silently start over there).
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlencode

from triggers_backends.kv.keys import DEFAULT_PREFIX
from triggers_backends.kv.storage import KeyValueStorage
from triggers_backends.pymemcache_client import PymemcacheClient, parse_servers
from triggers_core.engine.sizes import DEFAULT_MAX_VALUE_BYTES, check_value_limit, parse_value_limit
from triggers_core.errors import did_you_mean
from triggers_core.runtime.redaction import redact

__all__ = ["MemcachedStorage", "close_clients", "parse_url", "shared_client"]

SCHEME = "memcached"

#: URL options and their defaults (``prefix`` and ``max_value_bytes`` belong to the
#: storage, the rest to the client).
DEFAULTS: dict[str, Any] = {
    "prefix": DEFAULT_PREFIX,
    "max_value_bytes": DEFAULT_MAX_VALUE_BYTES,
    "ttl": 0,
    "connect_timeout": 2.0,
    "timeout": 2.0,
    "pool_size": 10,
}
_STORAGE_OPTIONS = ("prefix", "max_value_bytes")
_CONVERT: dict[str, Any] = {
    "prefix": str,
    "max_value_bytes": lambda text: parse_value_limit(text, "max_value_bytes"),
    "ttl": int,
    "connect_timeout": float,
    "timeout": float,
    "pool_size": int,
}


def parse_url(url: str) -> tuple[str, dict[str, Any]]:
    """``memcached://...`` -> (canonical server list, options with defaults filled in)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != SCHEME:
        raise ValueError(f"not a memcached URL: expected memcached://host:port, got {scheme!r}://")
    location, _, query = rest.partition("?")
    location = location.rstrip("/")
    if "@" in location:
        # memcached has no credentials here; never echo what looked like them.
        raise ValueError("memcached URLs take no user or password (memcached://host:port)")
    if "/" in location:
        raise ValueError(
            f"memcached URL {redact(url)!r} has a path; expected memcached://host:port"
        )
    servers = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in parse_servers(location))
    options = dict(DEFAULTS)
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in DEFAULTS:
            raise ValueError(f"unknown memcached URL option {name!r}{did_you_mean(name, DEFAULTS)}")
        try:
            options[name] = _CONVERT[name](value)
        except ValueError:
            raise ValueError(f"memcached URL option {name}={value!r} is not valid") from None
    return servers, options


def _reference(servers: str, options: dict[str, Any]) -> str:
    extra = {k: v for k, v in options.items() if v != DEFAULTS[k]}
    query = urlencode(extra, quote_via=quote) if extra else ""
    return f"{SCHEME}://{servers}" + (f"?{query}" if query else "")


_CLIENTS: dict[str, PymemcacheClient] = {}
_CLIENTS_LOCK = threading.Lock()


def shared_client(url: str) -> PymemcacheClient:
    """One client (one connection pool per server) per URL in this process."""
    servers, options = parse_url(url)
    client_options = {k: v for k, v in options.items() if k not in _STORAGE_OPTIONS}
    key = _reference(servers, {**client_options, "prefix": DEFAULT_PREFIX})
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = PymemcacheClient(servers, **client_options)
        return client


def close_clients() -> None:
    """Close the connections of every client :func:`shared_client` made."""
    with _CLIENTS_LOCK:
        clients = list(_CLIENTS.values())
        _CLIENTS.clear()
    for client in clients:
        client.close()


class MemcachedStorage(KeyValueStorage):
    """One session in memcached (see the module docstring for URLs and guarantees).

    ``client_or_url`` is a :class:`PymemcacheClient` (share one between
    storages) or a ``memcached://`` URL. ``max_value_bytes`` (or the URL option) bounds
    each stored value's encoded size.
    """

    backend_name: ClassVar[str] = "memcached"

    def __init__(
        self,
        uid: str,
        client_or_url: PymemcacheClient | str,
        *,
        prefix: str | None = None,
        max_value_bytes: int | None = None,
    ) -> None:
        if isinstance(client_or_url, str):
            _, options = parse_url(client_or_url)
            client = shared_client(client_or_url)
            if prefix is None:
                prefix = options["prefix"]
            if max_value_bytes is None:
                max_value_bytes = options["max_value_bytes"]
        else:
            client = client_or_url
        super().__init__(uid, client, prefix=DEFAULT_PREFIX if prefix is None else prefix)
        self.memcached: PymemcacheClient = client
        if max_value_bytes is not None:
            self.max_value_bytes = check_value_limit(max_value_bytes)

    @classmethod
    def from_url(cls, url: str, uid: str) -> MemcachedStorage:
        """Open ``uid`` from ``memcached://host:port[,...][?options]``."""
        return cls(uid, url)

    def _store_location(self) -> object:
        return self.memcached.servers

    def reference(self) -> str:
        """The URL that reopens this session (servers and non-default options)."""
        client = self.memcached
        servers = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in client.servers)
        options = {
            "prefix": self.prefix,
            "max_value_bytes": self.max_value_bytes,
            "ttl": client.ttl,
            "connect_timeout": client.connect_timeout,
            "timeout": client.timeout,
            "pool_size": client.pool_size,
        }
        return _reference(servers, options)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} uid={self.uid!r} at {self.reference()}>"
