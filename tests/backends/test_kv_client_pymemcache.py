"""The key-value client contract and memcached specifics on real memcached servers.

Each test session starts its own memcached (``tests/memcached_server.py``);
faults are caused for real: a port nothing listens on, and a TCP proxy that
stops forwarding (a frozen server) or refuses connections.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kv_client_contract import KeyValueClientContract
from memcached_server import SMALL_ITEM_SIZE, MemcachedServer, free_port
from pymemcache.client.base import Client
from services import finishes
from tcp_proxy import FreezingProxy

from triggers_backends.kv_client import (
    MAX_KEY_LENGTH,
    KeyValueClient,
    KeyValueTooLarge,
    KeyValueUnavailable,
)
from triggers_backends.pymemcache_client import (
    ITEM_OVERHEAD,
    PymemcacheClient,
    hash_tag,
    parse_servers,
)

pytestmark = pytest.mark.service


class TestPymemcacheClient(KeyValueClientContract):
    @pytest.fixture(autouse=True)
    def _server(self, memcached: MemcachedServer) -> Iterator[None]:
        self.server = memcached
        self.clients: list[PymemcacheClient] = []
        yield
        for client in self.clients:
            client.close()

    supports_multiprocess = True

    def make_client(self) -> PymemcacheClient:
        client = PymemcacheClient(self.server.address, timeout=10)
        self.clients.append(client)
        return client

    def process_client_factory(self) -> Callable[[], KeyValueClient]:
        return functools.partial(PymemcacheClient, self.server.address, timeout=10)


class TestPymemcacheClientSmallItems(TestPymemcacheClient):
    """The same contract on a server with ``-I 64k`` (its limit is read from the server)."""

    @pytest.fixture(autouse=True)
    def _server(self, memcached_small: MemcachedServer) -> Iterator[None]:
        self.server = memcached_small
        self.clients = []
        yield
        for client in self.clients:
            client.close()


@pytest.fixture
def key() -> str:
    return f"pmc-{uuid.uuid4().hex}"


@pytest.fixture
def client(memcached: MemcachedServer) -> Iterator[PymemcacheClient]:
    made = PymemcacheClient(memcached.address, timeout=10)
    yield made
    made.close()


def raw_keys(server: MemcachedServer, keys: list[str]) -> set[str]:
    """Which of ``keys`` one server holds (asked with pymemcache's own client)."""
    client = Client((server.host, server.port), default_noreply=False, timeout=10)
    try:
        return set(client.get_many(keys))
    finally:
        client.close()


# -- item size ------------------------------------------------------------------------


def test_max_value_size_comes_from_the_server(
    memcached: MemcachedServer, memcached_small: MemcachedServer
) -> None:
    assert PymemcacheClient(memcached.address).max_value_size == 1024 * 1024 - ITEM_OVERHEAD
    small = PymemcacheClient(memcached_small.address)
    assert small.max_value_size == SMALL_ITEM_SIZE - ITEM_OVERHEAD
    # Several servers: the smallest limit wins.
    both = PymemcacheClient(f"{memcached.address},{memcached_small.address}")
    assert both.max_value_size == SMALL_ITEM_SIZE - ITEM_OVERHEAD
    assert PymemcacheClient(memcached.address, max_value_size=1000).max_value_size == 1000


def test_the_largest_value_fits_with_the_longest_key(memcached_small: MemcachedServer) -> None:
    client = PymemcacheClient(memcached_small.address)
    key = "k" * (MAX_KEY_LENGTH - 32) + uuid.uuid4().hex
    assert len(key) == MAX_KEY_LENGTH
    value = os.urandom(client.max_value_size)
    client.set_many({key: value})
    assert client.get_many([key]) == {key: value}
    assert client.cas(key, value[::-1], client.gets(key)[1])  # type: ignore[index]
    with pytest.raises(KeyValueTooLarge, match=str(client.max_value_size)):
        client.add(key, value + b"!")


def test_a_server_side_size_refusal_is_too_large(
    memcached_small: MemcachedServer, key: str
) -> None:
    # Told a larger limit than the server has, the client still reports the refusal
    # as KeyValueTooLarge and the key stays absent.
    client = PymemcacheClient(memcached_small.address, max_value_size=10 * SMALL_ITEM_SIZE)
    with pytest.raises(KeyValueTooLarge, match="too large"):
        client.set_many({key: b"x" * (2 * SMALL_ITEM_SIZE)})
    assert client.get_many([key]) == {}
    client.set_many({key: b"ok"})  # the connection that saw the error was replaced cleanly
    assert client.get_many([key]) == {key: b"ok"}


# -- bytes only -----------------------------------------------------------------------


def test_values_must_be_bytes(client: PymemcacheClient, key: str) -> None:
    for value in ("text", 1, {"a": 1}, bytearray(b"x")):
        with pytest.raises(TypeError, match="bytes"):
            client.set_many({key: value})  # type: ignore[dict-item]
    assert client.get_many([key]) == {}


def test_pickled_values_are_never_unpickled(
    memcached: MemcachedServer, client: PymemcacheClient, key: str
) -> None:
    # pymemcache's default serde pickles a dict (flags 1); we hand back the bytes as stored.
    from pymemcache.serde import pickle_serde

    writer = Client((memcached.host, memcached.port), serde=pickle_serde, default_noreply=False)
    writer.set(key, {"evil": "pickle"})
    writer.close()
    stored = client.get_many([key])[key]
    assert isinstance(stored, bytes)
    assert stored.startswith(b"\x80")  # pickle protocol marker, not a dict
    found = client.gets(key)
    assert found is not None
    assert found[0] == stored


# -- keys -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "has space", "new\nline", "ünï", "x" * (MAX_KEY_LENGTH + 1)])
def test_invalid_keys_are_refused_before_anything_is_sent(
    client: PymemcacheClient, bad: str
) -> None:
    with pytest.raises(ValueError, match="key"):
        client.get_many([bad])
    with pytest.raises(ValueError, match="key"):
        client.set_many({bad: b"x"})


def test_hash_tag() -> None:
    assert hash_tag("triggers:a:{abc}") == "abc"
    assert hash_tag("p:i:{abc}:rev:3") == "abc"
    assert hash_tag("no-tag") == "no-tag"
    assert hash_tag("empty:{}") == "empty:{}"
    assert hash_tag("open:{abc") == "open:{abc"


def test_parse_servers() -> None:
    assert parse_servers("a:1,b:2") == [("a", 1), ("b", 2)]
    assert parse_servers(" a ") == [("a", 11211)]
    assert parse_servers("[::1]:11212,[fe80::1]") == [("::1", 11212), ("fe80::1", 11211)]
    for bad in ("", "a:1,", ":1", "a:x", "a:0", "a:70000", "[::1", "[::1]x"):
        with pytest.raises(ValueError, match="memcached"):
            parse_servers(bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": 0},
        {"connect_timeout": -1},
        {"pool_size": 0},
        {"ttl": -1},
        {"max_value_size": 0},
    ],
)
def test_invalid_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        PymemcacheClient("127.0.0.1:11211", **kwargs)


# -- several servers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_servers() -> Iterator[tuple[MemcachedServer, MemcachedServer]]:
    from memcached_server import _serve

    first, second = _serve(None), _serve(None)
    yield next(first), next(second)
    for each in (first, second):
        each.close()


def test_one_hash_tag_lives_on_one_server(
    two_servers: tuple[MemcachedServer, MemcachedServer],
) -> None:
    client = PymemcacheClient(",".join(s.address for s in two_servers))
    sessions = [uuid.uuid4().hex for _ in range(40)]
    items = {
        f"t:{kind}:{{{s}}}:{n}": s.encode() for s in sessions for kind in "ai" for n in range(3)
    }
    client.set_many(items)
    assert client.get_many(list(items)) == items
    per_server = [raw_keys(server, list(items)) for server in two_servers]
    assert per_server[0].isdisjoint(per_server[1])
    assert per_server[0] | per_server[1] == set(items)
    for session in sessions:
        holders = [i for i, keys in enumerate(per_server) if f"t:a:{{{session}}}:0" in keys]
        assert len(holders) == 1
        assert {k for k in items if session in k} <= per_server[holders[0]]
    assert all(per_server), "40 sessions all hashed to one server"
    # cas works through the routing: the token comes from the server holding the key.
    key = next(iter(items))
    found = client.gets(key)
    assert found is not None
    assert client.cas(key, b"new", found[1])
    assert client.get_many([key]) == {key: b"new"}
    client.delete_many(list(items))
    assert client.get_many(list(items)) == {}


def test_a_down_server_is_not_replaced_by_another(memcached: MemcachedServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    client = PymemcacheClient(f"{memcached.address},{dead}", connect_timeout=1, timeout=1)
    keys = [f"t:a:{{{uuid.uuid4().hex}}}" for _ in range(30)]
    on_dead = [k for k in keys if client.server_for(k) == parse_servers(dead)[0]]
    on_live = [k for k in keys if k not in on_dead]
    assert on_dead
    assert on_live
    client.set_many(dict.fromkeys(on_live, b"v"))
    for key in on_dead:
        with pytest.raises(KeyValueUnavailable, match=dead):
            client.add(key, b"v")
    assert client.get_many(on_live) == dict.fromkeys(on_live, b"v")
    # Until the dead server answers, the size limit is asked again each time.
    assert client.max_value_size == 1024 * 1024 - ITEM_OVERHEAD
    assert client._max_value_size is None


# -- faults ---------------------------------------------------------------------------


#: How long a call may wait before the test fails (far above the client's timeouts).
BOUND = 30.0


def test_nothing_listening_is_unavailable(key: str) -> None:
    address = f"127.0.0.1:{free_port()}"
    client = PymemcacheClient(address, connect_timeout=1, timeout=1)
    for call in (
        lambda: client.gets(key),
        lambda: client.add(key, b"v"),
        lambda: client.get_many([key]),
        lambda: client.set_many({key: b"v"}),
        lambda: client.max_value_size,
    ):
        error = finishes(call, BOUND)
        assert isinstance(error, KeyValueUnavailable), error
        assert address in str(error)
        assert "Refused" in str(error) or "refused" in str(error)


def test_a_frozen_server_is_unavailable_within_the_timeout(
    memcached: MemcachedServer, key: str
) -> None:
    with FreezingProxy((memcached.host, memcached.port)) as proxy:
        client = PymemcacheClient(proxy.address, connect_timeout=0.5, timeout=0.5)
        assert client.add(key, b"before")
        found = client.gets(key)
        assert found is not None
        proxy.freeze()
        for call in (
            lambda: client.gets(key),
            lambda: client.cas(key, b"during", found[1]),
            lambda: client.set_many({key + "-2": b"x"}),
            lambda: client.get_many([key]),
            lambda: client.delete_many([key]),
        ):
            began = time.monotonic()
            error = finishes(call, BOUND)
            assert isinstance(error, KeyValueUnavailable), error
            assert proxy.address in str(error)
            assert "0.5s" in str(error)
            assert time.monotonic() - began < 30
        proxy.thaw()
        # The connections that timed out were dropped: no stale reply reaches a later
        # call. (The requests they sent may still reach the server late, as with a real
        # server that hangs and recovers, so check with a fresh key.)
        fresh = key + "-fresh"
        assert client.add(fresh, b"one")
        again = client.gets(fresh)
        assert again is not None
        assert again[0] == b"one"
        assert client.cas(fresh, b"two", again[1])
        assert client.get_many([fresh]) == {fresh: b"two"}


def test_a_refusing_server_is_unavailable(memcached: MemcachedServer, key: str) -> None:
    with FreezingProxy((memcached.host, memcached.port)) as proxy:
        client = PymemcacheClient(proxy.address, connect_timeout=0.5, timeout=0.5)
        proxy.refuse()
        error = finishes(lambda: client.add(key, b"v"), BOUND)
        assert isinstance(error, KeyValueUnavailable), error
        assert proxy.address in str(error)


def test_waiting_for_a_pooled_connection_is_bounded(memcached: MemcachedServer, key: str) -> None:
    client = PymemcacheClient(memcached.address, pool_size=1, timeout=0.5)
    pool = client._pools[client.servers[0]]
    with pool.connection():  # the only connection is busy
        error = finishes(lambda: client.get_many([key]), BOUND)
    assert isinstance(error, KeyValueUnavailable), error
    assert "no free connection" in str(error)
    assert client.get_many([key]) == {}


# -- expiry and fork ------------------------------------------------------------------


def test_no_ttl_by_default_and_long_ttls_are_not_read_as_dates(
    memcached: MemcachedServer, key: str
) -> None:
    assert PymemcacheClient(memcached.address).ttl == 0
    # memcached reads an expiry above 30 days as a Unix time (1970: already expired).
    client = PymemcacheClient(memcached.address, ttl=40 * 24 * 3600)
    client.set_many({key: b"v"})
    assert client.add(key + "-add", b"v")
    assert client.get_many([key, key + "-add"]) == {key: b"v", key + "-add": b"v"}


@pytest.mark.slow
def test_a_ttl_expires_keys(memcached: MemcachedServer, key: str) -> None:
    client = PymemcacheClient(memcached.address, ttl=1)
    client.set_many({key: b"v"})
    assert client.get_many([key]) == {key: b"v"}
    deadline = time.monotonic() + 10
    while client.get_many([key]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.get_many([key]) == {}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_the_parents_connections(
    client: PymemcacheClient, key: str
) -> None:
    client.set_many({key: b"parent"})
    pool = client._pools[client.servers[0]]
    assert pool._idle
    parent_sockets = {c.sock.getsockname() for c in pool._idle}
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's teardown
        try:
            forgot = not pool._idle
            value = client.get_many([key]).get(key)
            new = all(c.sock.getsockname() not in parent_sockets for c in pool._idle)
            os.write(write, b"ok" if forgot and value == b"parent" and new else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as reader:
        report = reader.read()
    os.waitpid(pid, 0)
    assert report == b"ok"
    assert client.get_many([key]) == {key: b"parent"}  # the parent's socket still works


def test_is_a_key_value_client(client: PymemcacheClient) -> None:
    assert isinstance(client, KeyValueClient)
    assert client.backend_name == "memcached"
    assert "127.0.0.1" in repr(client)
