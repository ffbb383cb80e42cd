"""A :class:`~triggers_backends.kv_client.KeyValueClient` over memcached, with pymemcache.

Used by the memcached storage backend and by the Django-cache backend's
``PyMemcacheCache`` adapter. What it adds to pymemcache:

* **Bytes only, never pickle.** Values go out exactly as given (``bytes``
  only) and come back as stored, whatever flags another client wrote them
  with: pymemcache's default serializer, which pickles non-bytes values and
  unpickles flagged ones, is never used.
* **Bounded waits.** Connecting, each socket send/receive, and waiting for a
  free pooled connection are each bounded (``connect_timeout``, ``timeout``).
  A server that is down, refuses, or stops answering raises
  :class:`~triggers_backends.kv_client.KeyValueUnavailable` naming the server
  (memcached has no credentials to leak); the broken connection is discarded.
* **Item size.** :attr:`PymemcacheClient.max_value_size` is the servers'
  ``item_size_max`` (from ``stats settings``, the smallest over the servers)
  minus :data:`ITEM_OVERHEAD` for the key and item header; a larger value
  raises :class:`~triggers_backends.kv_client.KeyValueTooLarge` before
  anything is sent.
* **Several servers, one session on one server.** A key is routed by its
  *hash tag* (the text between the first ``{`` and the next ``}``; the whole
  key if it has none) with rendezvous hashing. The storage layout puts the
  session hash in every key's tag, so all of a session's keys live on one
  server, where ``cas`` on its active document is atomic. A server that is
  down is never replaced by another one: its sessions fail with
  :class:`~triggers_backends.kv_client.KeyValueUnavailable` until it is back,
  instead of silently starting over on a server that does not hold them.
* **Fork safety.** A forked child (e.g. a Celery prefork worker) never reuses
  its parent's sockets.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

from pymemcache.client.base import Client
from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
)

from triggers_backends.kv_client import (
    MAX_KEY_LENGTH,
    CasToken,
    KeyValueError,
    KeyValueTooLarge,
    KeyValueUnavailable,
)

__all__ = [
    "DEFAULT_ITEM_SIZE_MAX",
    "ITEM_OVERHEAD",
    "MAX_RELATIVE_TTL",
    "PymemcacheClient",
    "hash_tag",
    "parse_servers",
]

#: memcached's default ``-I`` (item size limit), used if a server does not report one.
DEFAULT_ITEM_SIZE_MAX = 1024 * 1024
#: Bytes of an item that are not value: memcached 1.6 needs 59 plus the key (<= 250).
ITEM_OVERHEAD = 512
#: Attempts at a metadump while the server's LRU crawler is busy with another one.
METADUMP_ATTEMPTS = 50
#: memcached reads an expiry above 30 days as an absolute Unix time.
MAX_RELATIVE_TTL = 30 * 24 * 3600

Server = tuple[str, int]


def parse_servers(text: str) -> list[Server]:
    """``"host:port,host:port"`` (``[v6addr]:port``; port default 11211) -> servers."""
    servers: list[Server] = []
    for part in text.split(","):
        spec = part.strip()
        if not spec:
            raise ValueError(f"empty server in memcached server list {text!r}")
        if spec.startswith("["):
            host, sep, rest = spec[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(f"invalid memcached server {spec!r} (expected [v6addr]:port)")
            port_text = rest[1:]
        else:
            host, _, port_text = spec.partition(":")
        if not host:
            raise ValueError(f"memcached server {spec!r} names no host")
        try:
            port = int(port_text) if port_text else 11211
        except ValueError:
            raise ValueError(
                f"memcached server {spec!r}: port {port_text!r} is not a number"
            ) from None
        if not 0 < port < 65536:
            raise ValueError(f"memcached server {spec!r}: port {port} is out of range")
        servers.append((host, port))
    return servers


def hash_tag(key: str) -> str:
    """The part of ``key`` that selects its server: ``{...}`` if present, else the key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def _label(server: Server) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _BytesSerde:
    """pymemcache serde that passes bytes through and refuses anything else (no pickle)."""

    def serialize(self, key: bytes, value: Any) -> tuple[bytes, int]:
        if not isinstance(value, bytes):
            raise TypeError(f"memcached values must be bytes, got {type(value).__name__}")
        return value, 0

    def deserialize(self, key: bytes, value: bytes, flags: int) -> bytes:
        return value  # as stored, whatever the flags: never unpickle


_SERDE = _BytesSerde()


class _Pool:
    """Connections to one server: at most ``size``; waiting for one is bounded."""

    def __init__(self, server: Server, size: int, connect_timeout: float, timeout: float) -> None:
        self.server = server
        self.label = _label(server)
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[Client] = []
        self._lock = threading.Lock()

    def _new(self) -> Client:
        return Client(
            self.server,
            serde=_SERDE,
            connect_timeout=self.connect_timeout,
            timeout=self.timeout,
            no_delay=True,
            default_noreply=False,
        )

    @contextmanager
    def connection(self) -> Iterator[Client]:
        if not self._slots.acquire(timeout=self.timeout):
            raise KeyValueUnavailable(
                f"memcached {self.label}: no free connection within {self.timeout:g}s "
                "(every pooled connection is busy; raise the pool size?)"
            )
        try:
            with self._lock:
                client = self._idle.pop() if self._idle else self._new()
            ok = False
            try:
                yield client
                ok = True
            finally:
                if ok and client.sock is not None:
                    with self._lock:
                        self._idle.append(client)
                else:
                    client.close()  # half-read replies must never reach the next caller
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for client in idle:
            client.close()

    def forget(self, size: int) -> None:
        """After fork: drop the parent's sockets and lock state without using them."""
        self._lock = threading.Lock()  # another thread of the parent may have held it
        self._slots = threading.BoundedSemaphore(size)
        idle, self._idle = self._idle, []
        for client in idle:
            # Closes only the child's copy of the descriptor: the parent's connection
            # stays open (no FIN is sent while the parent still holds it).
            client.close()


class PymemcacheClient:
    """memcached through pymemcache, as the key-value storage layout needs it.

    ``servers`` is a list of ``(host, port)`` or a ``"host:port,host:port"``
    string. ``connect_timeout`` bounds connecting and ``timeout`` each send,
    receive and the wait for a free connection (seconds); ``pool_size``
    connections at most per server; ``ttl`` in seconds (0: never expire, the
    default); ``max_value_size`` overrides what the servers report.
    """

    backend_name = "memcached"
    #: memcached drops items when it runs out of memory (and restarts empty).
    evicts = True

    def __init__(
        self,
        servers: str | Sequence[Server],
        *,
        connect_timeout: float = 2.0,
        timeout: float = 2.0,
        pool_size: int = 10,
        ttl: int = 0,
        max_value_size: int | None = None,
    ) -> None:
        parsed = parse_servers(servers) if isinstance(servers, str) else list(servers)
        if not parsed:
            raise ValueError("memcached needs at least one server")
        for value, name in ((connect_timeout, "connect_timeout"), (timeout, "timeout")):
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size!r}")
        if ttl < 0:
            raise ValueError(f"ttl must be >= 0 seconds (0: never expire), got {ttl!r}")
        if max_value_size is not None and max_value_size < 1:
            raise ValueError(f"max_value_size must be positive, got {max_value_size!r}")
        self.servers: tuple[Server, ...] = tuple(parsed)
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.pool_size = pool_size
        self.ttl = ttl
        self._max_value_size = max_value_size
        self._pools = {s: _Pool(s, pool_size, connect_timeout, timeout) for s in self.servers}
        _LIVE.add(self)
        # A client dropped without close() still closes its sockets (no ResourceWarning).
        weakref.finalize(self, _close_pools, list(self._pools.values()))

    def __repr__(self) -> str:
        servers = ",".join(_label(s) for s in self.servers)
        return f"<{type(self).__name__} {servers}>"

    # -- routing and errors -------------------------------------------------------

    def server_for(self, key: str) -> Server:
        """The server that holds ``key`` (rendezvous hashing on its hash tag)."""
        if len(self.servers) == 1:
            return self.servers[0]
        tag = hash_tag(key).encode("utf-8", "surrogatepass")

        def score(server: Server) -> bytes:
            node = _label(server).encode()
            return hashlib.blake2b(node + b"\0" + tag, digest_size=8).digest()

        return max(self.servers, key=score)

    def _by_server(self, keys: Sequence[str]) -> dict[Server, list[str]]:
        groups: dict[Server, list[str]] = {}
        for key in keys:
            groups.setdefault(self.server_for(key), []).append(key)
        return groups

    @contextmanager
    def _on(self, server: Server, doing: str) -> Iterator[Client]:
        """A connection to ``server``; driver and socket errors become KeyValueError."""
        pool = self._pools[server]
        try:
            with pool.connection() as client:
                yield client
        except KeyValueError:
            raise
        except MemcacheUnexpectedCloseError as exc:
            raise KeyValueUnavailable(
                f"memcached {pool.label}: connection closed during {doing}"
            ) from exc
        except MemcacheServerError as exc:
            text = _text(exc)
            if "too large" in text:
                raise KeyValueTooLarge(f"memcached {pool.label} refused {doing}: {text}") from exc
            raise KeyValueUnavailable(f"memcached {pool.label} refused {doing}: {text}") from exc
        except MemcacheClientError as exc:
            raise KeyValueError(f"memcached {pool.label} rejected {doing}: {_text(exc)}") from exc
        except MemcacheError as exc:
            raise KeyValueUnavailable(
                f"memcached {pool.label}: {doing} failed: {_text(exc)}"
            ) from exc
        except TimeoutError as exc:
            raise KeyValueUnavailable(
                f"memcached {pool.label}: no answer to {doing} within {self._bound()}"
            ) from exc
        except OSError as exc:
            raise KeyValueUnavailable(
                f"memcached {pool.label}: {doing} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def _bound(self) -> str:
        return f"{self.connect_timeout:g}s to connect / {self.timeout:g}s per reply"

    def _check_keys(self, keys: Sequence[str]) -> None:
        for key in keys:
            if not key or not key.isascii() or not key.isprintable() or " " in key:
                raise ValueError(f"invalid memcached key {key!r} (printable ASCII, no spaces)")
            if len(key) > MAX_KEY_LENGTH:
                raise ValueError(f"memcached key longer than {MAX_KEY_LENGTH} bytes: {key!r}")

    def _check_value(self, key: str, value: bytes) -> None:
        if not isinstance(value, bytes):
            raise TypeError(f"value of {key!r} must be bytes, got {type(value).__name__}")
        limit = self.max_value_size
        if len(value) > limit:
            raise KeyValueTooLarge(
                f"value of {key!r} is {len(value)} bytes; memcached accepts at most {limit} "
                f"(item_size_max minus {ITEM_OVERHEAD} bytes for key and header)"
            )

    def _expire(self) -> int:
        if self.ttl > MAX_RELATIVE_TTL:  # memcached would read it as a Unix time
            return int(time.time()) + self.ttl
        return self.ttl

    # -- the item size limit ------------------------------------------------------

    @property
    def max_value_size(self) -> int:
        """The largest value one key may hold, in bytes (asks the servers on first use)."""
        if self._max_value_size is not None:
            return self._max_value_size
        limit, complete = self._discover_max_value_size()
        if complete:  # a server that did not answer may have a smaller limit: ask again
            self._max_value_size = limit
        return limit

    def _discover_max_value_size(self) -> tuple[int, bool]:
        limits: list[int] = []
        failures: list[KeyValueError] = []
        for server in self.servers:
            try:
                with self._on(server, "stats settings") as client:
                    settings = client.stats("settings")
            except KeyValueError as exc:
                failures.append(exc)
                continue
            reported = settings.get(b"item_size_max", DEFAULT_ITEM_SIZE_MAX)
            limits.append(reported if isinstance(reported, int) else DEFAULT_ITEM_SIZE_MAX)
        if not limits:
            raise failures[0]
        smallest = min(limits) - ITEM_OVERHEAD
        if smallest < 1:
            raise KeyValueError(f"memcached item_size_max {min(limits)} is too small to use")
        return smallest, not failures

    # -- KeyValueClient -----------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Values of the keys that exist."""
        self._check_keys(keys)
        found: dict[str, bytes] = {}
        for server, group in self._by_server(list(dict.fromkeys(keys))).items():
            with self._on(server, f"get of {len(group)} key(s)") as client:
                found.update(client.get_many(group))
        return found

    def gets(self, key: str) -> tuple[bytes, CasToken] | None:
        """The value and its ``cas unique``, or None."""
        self._check_keys([key])
        with self._on(self.server_for(key), f"gets {key!r}") as client:
            value, token = client.gets(key)
        if value is None:
            return None
        found: bytes = value
        return found, token

    def gets_with(
        self, key: str, others: Sequence[str]
    ) -> tuple[tuple[bytes, CasToken] | None, dict[str, bytes]]:
        """:meth:`gets` of ``key`` and the values of ``others``: one ``gets`` request for
        ``key`` and the others on its server (memcached reads the keys of a request in
        their order, so each after ``key``); others elsewhere with :meth:`get_many`,
        after it."""
        others = [k for k in dict.fromkeys(others) if k != key]
        self._check_keys([key, *others])
        server = self.server_for(key)
        here = [k for k in others if self.server_for(k) == server]
        with self._on(server, f"gets of {1 + len(here)} key(s)") as client:
            stored = client.gets_many([key, *here])
        found: dict[str, bytes] = {k: stored[k][0] for k in here if k in stored}
        elsewhere = [k for k in others if k not in set(here)]
        if elsewhere:
            found.update(self.get_many(elsewhere))
        mine = stored.get(key)
        if mine is None:
            return None, found
        value: bytes = mine[0]
        return (value, mine[1]), found

    def add(self, key: str, value: bytes) -> bool:
        """Create ``key`` unless it exists."""
        self._check_keys([key])
        self._check_value(key, value)
        with self._on(self.server_for(key), f"add {key!r}") as client:
            return bool(client.add(key, value, expire=self._expire(), noreply=False))

    def cas(self, key: str, value: bytes, token: CasToken) -> bool:
        """Replace ``key`` if its ``cas unique`` is still ``token``."""
        self._check_keys([key])
        self._check_value(key, value)
        if not isinstance(token, bytes | int | str):
            raise TypeError(f"cas token for {key!r} did not come from gets(): {token!r}")
        with self._on(self.server_for(key), f"cas {key!r}") as client:
            return client.cas(key, value, token, expire=self._expire(), noreply=False) is True

    def set_many(self, items: Mapping[str, bytes]) -> None:
        """Write every item; raise if any was not stored."""
        self._check_keys(list(items))
        for key, value in items.items():
            self._check_value(key, value)
        expire = self._expire()
        for server, group in self._by_server(list(items)).items():
            with self._on(server, f"set of {len(group)} key(s)") as client:
                failed = client.set_many({k: items[k] for k in group}, expire=expire, noreply=False)
            if failed:
                raise KeyValueUnavailable(
                    f"memcached {_label(server)} did not store {len(failed)} key(s), "
                    f"e.g. {failed[0]!r}"
                )

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete the keys that exist."""
        self._check_keys(keys)
        for server, group in self._by_server(list(dict.fromkeys(keys))).items():
            with self._on(server, f"delete of {len(group)} key(s)") as client:
                client.delete_many(group, noreply=False)

    def keys_with_prefix(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix`` on every server (``lru_crawler metadump
        all``: a walk of each server's whole cache, for operator tools and tests only).

        Keys written after the walk passed them may be missing. Raises
        :class:`KeyValueUnavailable` if a server's crawler stays busy.
        """
        self._check_keys([prefix] if prefix else [])
        found: list[str] = []
        for server in self.servers:
            for _ in range(METADUMP_ATTEMPTS):
                raw = self._metadump(server)
                if not raw.startswith(b"BUSY"):
                    break
                time.sleep(0.1)  # another crawl runs on this server: wait for it
            else:
                raise KeyValueUnavailable(
                    f"memcached {_label(server)}: its LRU crawler stayed busy "
                    f"({METADUMP_ATTEMPTS} attempts)"
                )
            for line in raw.split(b"\n"):
                if line.startswith(b"key="):
                    key = unquote(line[4:].split(b" ", 1)[0].decode("ascii", "replace"))
                    if key.startswith(prefix):
                        found.append(key)
        return found

    def _metadump(self, server: Server) -> bytes:
        """The reply to ``lru_crawler metadump all`` (on a connection of its own: pymemcache's
        ``raw_command`` keeps only the last packet of a long reply)."""
        try:
            with socket.create_connection(server, timeout=self.connect_timeout) as sock:
                sock.settimeout(self.timeout)
                sock.sendall(b"lru_crawler metadump all\r\n")
                parts: list[bytes] = []
                tail = b""
                while True:
                    data = sock.recv(65536)
                    if not data:
                        raise KeyValueUnavailable(
                            f"memcached {_label(server)}: closed the connection during a metadump"
                        )
                    parts.append(data)
                    tail = (tail + data)[-64:]
                    if (
                        tail.endswith(b"END\r\n")
                        or (tail.startswith(b"BUSY") and tail.endswith(b"\r\n"))
                        or tail.endswith(b"ERROR\r\n")
                    ):
                        break
        except OSError as exc:
            raise KeyValueUnavailable(
                f"memcached {_label(server)}: metadump failed: {_text(exc)}"
            ) from exc
        raw = b"".join(parts)
        if raw.endswith(b"ERROR\r\n") and not raw.startswith(b"key="):
            raise KeyValueUnavailable(
                f"memcached {_label(server)} refused lru_crawler metadump: {raw[:200]!r}"
            )
        return raw

    def close(self) -> None:
        """Close every pooled connection (the client reconnects if used again)."""
        _close_pools(self._pools.values())


def _close_pools(pools: Iterable[_Pool]) -> None:
    for pool in pools:
        pool.close()


def _text(exc: BaseException) -> str:
    raw = exc.args[0] if exc.args else exc
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())


_LIVE: weakref.WeakSet[PymemcacheClient] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_LIVE):
        for pool in client._pools.values():
            pool.forget(client.pool_size)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
