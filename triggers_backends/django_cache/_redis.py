"""Key-value adapter for Django's ``RedisCache`` and django-redis's ``RedisCache``.

Both caches hand us a redis-py client; we talk to it directly, with our own value
encoding (never the cache's pickle serializer) and the cache's own key function
(``KEY_PREFIX``, ``VERSION``, ``KEY_FUNCTION`` apply to our keys as to any other).
Every call goes to the *write* server (a replica could answer a read with a value
older than the one we just wrote).

Conditional writes are single Lua scripts, atomic on the server:

* ``cas``: the token from :meth:`gets` is the SHA-1 of the value read. The script
  replaces the value only if the SHA-1 of the current value still matches.
* ``add``: ``SET NX``.
* ``commit`` (:class:`~triggers_backends.kv_client.AtomicCommitClient`): a whole
  commit of the key-value layout (compare, file the due-index hints, write the
  documents, swap, add the marker, delete what was replaced) in one script, so a
  fire costs two round trips (read, commit) instead of four or six, and a lost
  race writes nothing.

Both scripts also answer "done" when the key already holds exactly the bytes being
written. redis-py retries a command after a timeout or a dropped connection; if
the first attempt had been applied, a plain script would see its own write on the
retry and report a lost race, and the caller would throw away documents the stored
value now refers to. Reporting such a write as done is right as long as two writers
never write identical bytes, which the key-value layout guarantees (every active
document carries a fresh revision token). The compare is by value, so a key
rewritten with identical bytes is not seen as changed (no ABA detection: the
layout's version counter makes ABA impossible).

Calls are bounded: when the cache's connection options set no socket timeout, the
adapter uses a copy of its connection pool with ``io_timeout`` set.
"""

from __future__ import annotations

import hashlib
import inspect
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError, RedisError

from triggers_backends.django_cache._common import (
    ENVELOPE,
    AdapterOptions,
    UnsupportedCacheError,
    check_sizes,
    chunked,
    class_path,
    open_envelope,
)
from triggers_backends.kv_client import (
    INDEX_TOMBSTONE,
    CasToken,
    IndexAppend,
    IndexAppendNotPlaced,
    KeyValueUnavailable,
)

__all__ = ["RedisKeyValueClient", "for_django_redis", "for_redis_cache"]

# KEYS[1]: the key; ARGV[1]: SHA-1 hex of the value read; ARGV[2]: the new value;
# ARGV[3]: expiry in milliseconds ("0": never). Returns 1 if the new value is stored.
_CAS = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if current == ARGV[2] then return 1 end
if redis.sha1hex(current) ~= ARGV[1] then return 0 end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""

# KEYS[1]: the key; ARGV[1]: the value; ARGV[2]: expiry in milliseconds ("0": never).
_ADD = """
local current = redis.call('GET', KEYS[1])
if current then
  if current == ARGV[1] then return 1 end
  return 0
end
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""

# One commit of the key-value layout, atomically (see RedisKeyValueClient.commit).
# KEYS[1]: the active document; KEYS[2]: the marker; KEYS[3 .. 2+n]: the documents;
# then per index append (g of them) its directory and its c candidate slots; then the
# obsolete keys. ARGV[1]: SHA-1 hex of the value read ("": the key must not exist);
# ARGV[2]: the new value; ARGV[3]: expiry in milliseconds ("0": never); ARGV[4]: n;
# ARGV[5]: the marker's value ("": no marker); ARGV[6]: g; ARGV[7]: c; ARGV[8]: a
# closed slot's stored value; ARGV[9]: the envelope; ARGV[10]: the bytes a slot may
# hold before it takes no more; ARGV[11 .. 10+n]: the documents' values; then per
# append its lines and the directory entries of its c candidates.
# Returns {1, slot chosen per append (0-based)...} if committed, {0} if the compare
# failed, {2} if an append found no candidate slot (then nothing is written).
_COMMIT = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[2] then return {1} end
if ARGV[1] == '' then
  if current then return {0} end
elseif (not current) or redis.sha1hex(current) ~= ARGV[1] then
  return {0}
end
local n, groups, per = tonumber(ARGV[4]), tonumber(ARGV[6]), tonumber(ARGV[7])
local closed, envelope, most = ARGV[8], ARGV[9], tonumber(ARGV[10])
local chosen, planned = {}, {}
for g = 1, groups do
  local k, a = 2 + n + (g - 1) * (1 + per), 10 + n + (g - 1) * (1 + per)
  local size = #ARGV[a + 1]
  chosen[g] = 0
  for c = 1, per do
    local key = KEYS[k + 1 + c]
    local held = planned[key]
    if held == nil then
      local slot = redis.call('GET', key)
      if not slot then held = -2
      elseif slot == closed then held = -1
      else held = #slot - #envelope end
    end
    if held == -2 then chosen[g] = -c planned[key] = size break end
    if held == 0 or (held > 0 and held + size <= most) then
      chosen[g] = c planned[key] = held + size break
    end
  end
  if chosen[g] == 0 then return {2} end
end
local function put(key, value, ...)
  if ARGV[3] == '0' then
    return redis.call('SET', key, value, ...)
  end
  return redis.call('SET', key, value, 'PX', ARGV[3], ...)
end
local placed = {1}
for g = 1, groups do
  local k, a = 2 + n + (g - 1) * (1 + per), 10 + n + (g - 1) * (1 + per)
  local c = math.abs(chosen[g])
  if chosen[g] < 0 then
    put(KEYS[k + 1 + c], envelope .. ARGV[a + 1])
    local entry = ',' .. ARGV[a + 1 + c] .. ','
    local listed = redis.call('GET', KEYS[k + 1])
    if not listed then
      put(KEYS[k + 1], envelope .. entry)
    elseif not string.find(listed, entry, 1, true) then
      if string.sub(listed, -1) ~= ',' then entry = ',' .. entry end
      redis.call('APPEND', KEYS[k + 1], string.sub(entry, 2))
    end
  else
    redis.call('APPEND', KEYS[k + 1 + c], ARGV[a + 1])
  end
  placed[g + 1] = c - 1
end
for i = 1, n do put(KEYS[2 + i], ARGV[10 + i]) end
put(KEYS[1], ARGV[2])
if ARGV[5] ~= '' then put(KEYS[2], ARGV[5], 'NX') end
for i = 3 + n + groups * (1 + per), #KEYS do redis.call('DEL', KEYS[i]) end
return placed
"""

_BATCH = 500
_CLOSED = ENVELOPE + INDEX_TOMBSTONE


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def _raw(stored: bytes | str) -> bytes:
    # Connections never decode responses: _bounded() refuses pools that would.
    assert isinstance(stored, bytes), type(stored)
    return stored


class RedisKeyValueClient:
    """A :class:`~triggers_backends.kv_client.KeyValueClient` on one redis-py client."""

    #: Every process that opens the same cache sees the same keys.
    shared_across_processes = True
    #: ``commit`` files due-index hints in its script (no round trip of their own).
    commits_index_appends = True

    def __init__(
        self,
        client: redis.Redis,
        make_key: Callable[[str], str],
        options: AdapterOptions,
        *,
        backend_name: str,
    ) -> None:
        self._client = client
        self._make_key = make_key
        # Keys and arguments go to redis-py as bytes, encoded as its encoder would
        # (str with the client's encoding, ints as decimal digits): its command packer
        # passes bytes through with one type check instead of several per argument.
        encoder = client.get_encoder()
        self._encoding = (encoder.encoding, encoder.encoding_errors)
        self._options = options
        self.backend_name = backend_name
        self.max_value_size = options.max_value_size
        ttl = options.timeout
        self._ttl_ms = "0" if ttl is None else str(max(1, round(ttl * 1000)))
        #: Keys go only when they expire (``timeout``): Redis evicts nothing unless its
        #: ``maxmemory-policy`` says so (docs/operations.md), so listings are complete.
        self.evicts = ttl is not None
        self._cas_script = client.register_script(_CAS)
        self._add_script = client.register_script(_ADD)
        self._commit_script = client.register_script(_COMMIT)
        self._ttl_arg = self._ttl_ms.encode(*self._encoding)

    def _key(self, key: str) -> bytes:
        """The cache's key for ``key``, encoded as redis-py would send it."""
        return self._make_key(key).encode(*self._encoding)

    def _run(self, script: Any, keys: Sequence[bytes], args: Sequence[bytes]) -> Any:
        """``script`` on ``keys`` and ``args`` (all bytes): ``EVALSHA`` through the client's
        ``execute_command`` (its connection pool, timeouts and retries), loading the script
        if the server does not know it, as redis-py's ``Script.__call__`` does."""
        client = self._client
        try:
            return client.execute_command(  # type: ignore[no-untyped-call]
                "EVALSHA", script.sha, len(keys), *keys, *args
            )
        except NoScriptError:
            script.sha = client.script_load(script.script)
            return client.execute_command(  # type: ignore[no-untyped-call]
                "EVALSHA", script.sha, len(keys), *keys, *args
            )

    def __repr__(self) -> str:
        return f"<RedisKeyValueClient {self.backend_name} alias={self._options.alias!r}>"

    def _fail(self, exc: RedisError, action: str) -> KeyValueUnavailable:
        # redis-py's messages name host and port, never the password.
        return KeyValueUnavailable(
            f"{self.backend_name}: {action} failed: {type(exc).__name__}: {exc}"
        )

    def _px(self) -> int | None:
        return None if self._ttl_ms == "0" else int(self._ttl_ms)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        try:
            for batch in chunked(list(keys), _BATCH):
                values = self._client.mget([self._key(k) for k in batch])
                for key, stored in zip(batch, values, strict=True):
                    if stored is not None:
                        found[key] = open_envelope(_raw(stored), key, self.backend_name)
        except RedisError as exc:
            raise self._fail(exc, "get_many") from exc
        return found

    def gets(self, key: str) -> tuple[bytes, CasToken] | None:
        try:
            stored = self._client.get(self._key(key))
        except RedisError as exc:
            raise self._fail(exc, "gets") from exc
        if stored is None:
            return None
        raw = _raw(stored)
        return open_envelope(raw, key, self.backend_name), _sha1(raw)

    def token_of(self, value: bytes) -> CasToken:
        """The token :meth:`gets` returns for a key holding ``value`` (the digest of the
        stored bytes; see :class:`~triggers_backends.kv_client.ValueTokenClient`)."""
        return _sha1(ENVELOPE + bytes(value))

    def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, CasToken]]:
        """:meth:`gets` of each key that exists, in one ``MGET`` (per 500 keys)."""
        found: dict[str, tuple[bytes, CasToken]] = {}
        try:
            for batch in chunked(list(keys), _BATCH):
                values = self._client.mget([self._key(k) for k in batch])
                for key, stored in zip(batch, values, strict=True):
                    if stored is not None:
                        raw = _raw(stored)
                        found[key] = (open_envelope(raw, key, self.backend_name), _sha1(raw))
        except RedisError as exc:
            raise self._fail(exc, "gets_many") from exc
        return found

    def gets_with(
        self, key: str, others: Sequence[str]
    ) -> tuple[tuple[bytes, CasToken] | None, dict[str, bytes]]:
        """:meth:`gets` of ``key`` and the values of ``others`` in one ``MGET`` (atomic);
        more others than one batch holds are read after it."""
        others = [k for k in dict.fromkeys(others) if k != key]
        first, rest = others[: _BATCH - 1], others[_BATCH - 1 :]
        try:
            stored = self._client.mget([self._key(k) for k in (key, *first)])
        except RedisError as exc:
            raise self._fail(exc, "gets") from exc
        found: dict[str, bytes] = {}
        for other, value in zip(first, stored[1:], strict=True):
            if value is not None:
                found[other] = open_envelope(_raw(value), other, self.backend_name)
        if rest:
            found.update(self.get_many(rest))
        if stored[0] is None:
            return None, found
        raw = _raw(stored[0])
        return (open_envelope(raw, key, self.backend_name), _sha1(raw)), found

    def add(self, key: str, value: bytes) -> bool:
        check_sizes([value], self.max_value_size, self.backend_name)
        try:
            done = self._run(self._add_script, [self._key(key)], [ENVELOPE + value, self._ttl_arg])
        except RedisError as exc:
            raise self._fail(exc, "add") from exc
        return bool(done)

    def cas(self, key: str, value: bytes, token: CasToken) -> bool:
        check_sizes([value], self.max_value_size, self.backend_name)
        if not isinstance(token, str):
            raise TypeError(f"{self.backend_name}: not a token from gets(): {token!r}")
        try:
            done = self._run(
                self._cas_script,
                [self._key(key)],
                [token.encode(*self._encoding), ENVELOPE + value, self._ttl_arg],
            )
        except RedisError as exc:
            raise self._fail(exc, "cas") from exc
        return bool(done)

    def commit(
        self,
        key: str,
        value: bytes,
        token: CasToken | None,
        *,
        documents: Mapping[str, bytes],
        obsolete: Sequence[str],
        marker: tuple[str, bytes] | None,
        appends: Sequence[IndexAppend] = (),
    ) -> bool:
        """One commit of the layout as one script: compare, file the due-index hints,
        write, swap, mark, delete.

        See :class:`~triggers_backends.kv_client.AtomicCommitClient`. A script runs
        atomically on the server (and is replicated and persisted as one unit), so
        readers see all of the commit or none of it, and a lost race writes nothing.
        The hints of ``appends`` cost no round trip of their own (``APPEND`` to the
        slot the script picks).
        """
        marker_value = b"" if marker is None else ENVELOPE + bytes(marker[1])
        check_sizes(
            [
                value,
                *documents.values(),
                *([marker[1]] if marker else []),
                *(a.lines for a in appends),
            ],
            self.max_value_size,
            self.backend_name,
        )
        if token is not None and not isinstance(token, str):
            raise TypeError(f"{self.backend_name}: not a token from gets(): {token!r}")
        per = len(appends[0].slots) if appends else 0
        if any(len(a.slots) != per or len(a.entries) != per for a in appends):
            raise ValueError("every index append must name as many candidate slots as entries")
        mk = self._key
        active = mk(key)
        keys = [active, mk(marker[0]) if marker else active]
        keys += [mk(k) for k in documents]
        for append in appends:
            keys += [mk(append.directory), *(mk(slot) for slot in append.slots)]
        keys += [mk(k) for k in obsolete]
        args = [
            b"" if token is None else token.encode(*self._encoding),
            ENVELOPE + value,
            self._ttl_arg,
            b"%d" % len(documents),
            marker_value,
            b"%d" % len(appends),
            b"%d" % per,
            _CLOSED,
            ENVELOPE,
            b"%d" % (appends[0].max_bytes if appends else 0),
        ]
        args += [ENVELOPE + v for v in documents.values()]
        encoding = self._encoding
        for append in appends:
            args += [bytes(append.lines), *(e.encode(*encoding) for e in append.entries)]
        try:
            done = self._run(self._commit_script, keys, args)
        except RedisError as exc:
            raise self._fail(exc, "commit") from exc
        outcome = int(done[0])
        if outcome == 2:
            raise IndexAppendNotPlaced(f"{self.backend_name}: every candidate slot is full")
        if outcome == 1:
            for append, placed in zip(appends, done[1:], strict=False):
                append.placed = int(placed)
        return outcome == 1

    def set_many(self, items: Mapping[str, bytes]) -> None:
        check_sizes(items.values(), self.max_value_size, self.backend_name)
        px = self._px()
        try:
            for batch in chunked(list(items.items()), _BATCH):
                pipe = self._client.pipeline(transaction=False)
                for key, value in batch:
                    pipe.set(self._key(key), ENVELOPE + value, px=px)
                pipe.execute()
        except RedisError as exc:
            raise self._fail(exc, "set_many") from exc

    def delete_many(self, keys: Sequence[str]) -> None:
        try:
            for batch in chunked(list(keys), _BATCH):
                if batch:
                    self._client.delete(*(self._key(k) for k in batch))
        except RedisError as exc:
            raise self._fail(exc, "delete_many") from exc

    def close(self) -> None:
        """Nothing to release: the connections belong to the cache's pool."""


# -- bounded calls --------------------------------------------------------------------

_BOUNDED_POOLS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_BOUNDED_LOCK = threading.Lock()


def _effective(pool: Any, name: str) -> Any:
    if name in pool.connection_kwargs:
        return pool.connection_kwargs[name]
    try:
        parameter = inspect.signature(pool.connection_class).parameters.get(name)
    except (TypeError, ValueError):
        return None
    return None if parameter is None else parameter.default


def _bounded(client: redis.Redis, options: AdapterOptions, cache_class: str) -> redis.Redis:
    """``client``, or a client on a copy of its pool whose sockets time out."""
    pool = client.connection_pool
    if pool.connection_kwargs.get("decode_responses"):
        raise UnsupportedCacheError(
            cache_class,
            "its Redis connections decode responses to text (decode_responses=True); "
            "Triggers stores bytes",
            alias=options.alias,
        )
    missing = [
        name
        for name in ("socket_timeout", "socket_connect_timeout")
        if _effective(pool, name) in (None, inspect.Parameter.empty)
    ]
    if not missing:
        return client
    with _BOUNDED_LOCK:
        bounded = _BOUNDED_POOLS.get(pool)
        if bounded is None:
            kwargs = dict(pool.connection_kwargs)
            for name in missing:
                kwargs[name] = options.io_timeout
            try:
                bounded = type(pool)(
                    connection_class=pool.connection_class,
                    max_connections=pool.max_connections,
                    **kwargs,
                )
            except TypeError as exc:
                raise UnsupportedCacheError(
                    cache_class,
                    f"its Redis connection pool ({class_path(type(pool))}) sets no socket "
                    "timeout and cannot be copied with one; set socket_timeout and "
                    "socket_connect_timeout in the cache's OPTIONS",
                    alias=options.alias,
                ) from exc
            _BOUNDED_POOLS[pool] = bounded
    return redis.Redis(connection_pool=bounded)


# -- factories ------------------------------------------------------------------------


def for_redis_cache(cache: Any, options: AdapterOptions) -> RedisKeyValueClient:
    """Adapter for ``django.core.cache.backends.redis.RedisCache``."""
    client = cache._cache.get_client(write=True)
    return RedisKeyValueClient(
        _bounded(client, options, class_path(type(cache))),
        cache.make_key,
        options,
        backend_name="django-cache/redis",
    )


def for_django_redis(cache: Any, options: AdapterOptions) -> RedisKeyValueClient:
    """Adapter for ``django_redis.cache.RedisCache`` (its default, herd or sentinel client)."""
    from django_redis.client import ShardClient  # noqa: PLC0415 - only with django-redis

    if isinstance(cache.client, ShardClient):
        raise UnsupportedCacheError(
            class_path(type(cache)),
            "django-redis's ShardClient spreads one session's keys over several servers; "
            "use the DefaultClient (one server, with replicas if you like)",
            alias=options.alias,
        )
    client = cache.client.get_client(write=True)
    return RedisKeyValueClient(
        _bounded(client, options, class_path(type(cache))),
        cache.make_key,
        options,
        backend_name="django-cache/django-redis",
    )
