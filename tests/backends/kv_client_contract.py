"""The contract every :class:`~triggers_backends.kv_client.KeyValueClient` adapter passes.

Subclass :class:`KeyValueClientContract` in a ``test_*.py`` module (class name
starting with ``Test``) and implement :meth:`make_client` so that two clients
made in one test share one store (they model two processes). Each test uses
its own key prefix, so a shared server needs no cleanup between tests.

A store shared between OS processes sets ``supports_multiprocess = True`` and
implements :meth:`~KeyValueClientContract.process_client_factory`: a picklable
callable that builds a client on the same store in a freshly spawned process
(for example from the same settings). The multi-process race then proves that
no compare-and-swap update is lost between processes.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import traceback
import uuid
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

import pytest

from triggers_backends.kv_client import (
    INDEX_TOMBSTONE,
    AtomicCommitClient,
    CasToken,
    IndexAppend,
    IndexAppendNotPlaced,
    KeyValueClient,
    KeyValueTooLarge,
    ValueTokenClient,
)


class KeyValueClientContract:
    """get_many / gets / cas / add / set_many / delete_many semantics, and a CAS race."""

    #: Threads racing on one token.
    race_threads: ClassVar[int] = 8
    #: False for clients whose token is the previous value (compare-value CAS): they
    #: cannot tell a key rewritten with identical bytes from an untouched one. The
    #: layout never needs that (its active document carries a version that only grows).
    cas_detects_aba: ClassVar[bool] = True

    #: The store is shared between OS processes (opt in to the multi-process race).
    supports_multiprocess: ClassVar[bool] = False
    #: Processes x increments in the multi-process race.
    race_processes: ClassVar[int] = 4
    race_increments: ClassVar[int] = 25
    #: Seconds the multi-process race may take before it fails.
    race_timeout: ClassVar[float] = 180.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.supports_multiprocess:
            # Left out rather than skipped: in CI a skip means a missing service.
            cls.test_processes_racing_lose_no_update = None  # type: ignore[assignment]
        elif cls.test_processes_racing_lose_no_update is None:
            # An intermediate base class left it out; this subclass opts back in.
            cls.test_processes_racing_lose_no_update = (  # type: ignore[method-assign]
                KeyValueClientContract.test_processes_racing_lose_no_update
            )

    def make_client(self) -> KeyValueClient:
        raise NotImplementedError("subclasses implement make_client()")

    def process_client_factory(self) -> Callable[[], KeyValueClient]:
        """A picklable callable building a client on the same store in another process."""
        raise NotImplementedError("multi-process stores implement process_client_factory()")

    @pytest.fixture
    def key(self) -> str:
        return f"kvc-{uuid.uuid4().hex}"

    def test_is_a_client(self) -> None:
        client = self.make_client()
        assert isinstance(client, KeyValueClient)
        assert client.max_value_size > 0
        assert client.backend_name

    def test_missing_keys(self, key: str) -> None:
        client = self.make_client()
        assert client.gets(key) is None
        assert client.get_many([key, key + "-b"]) == {}

    def test_gets_with_reads_a_key_for_cas_and_others(self, key: str) -> None:
        """The optional ``gets_with`` (one request): what ``gets`` and ``get_many`` give. A
        client without it is read as the storage then reads it: ``gets``, then ``get_many``."""
        client = self.make_client()
        tagged = "{" + key + "}"  # one hash tag: one server
        main, other, missing, elsewhere = (f"{tagged}-{n}" for n in ("a", "b", "c", "d"))
        assert _gets_with(client, main, [other]) == (None, {})
        client.add(main, b"v1")
        client.set_many({other: b"o", f"{key}-e": b"e"})
        found, others = _gets_with(client, main, [other, missing, main, f"{key}-e", elsewhere])
        assert found is not None
        assert found[0] == b"v1"
        assert others == {other: b"o", f"{key}-e": b"e"}
        # the token is a gets token: it swaps only an unchanged value
        assert client.cas(main, b"v2", found[1])
        assert not client.cas(main, b"v3", found[1])
        assert client.get_many([main]) == {main: b"v2"}

    def test_token_of_is_the_token_of_the_value_written(self, key: str) -> None:
        """The optional ``token_of``: after a write of ``value`` (by either client), the
        token ``gets`` gives; a cas with it swaps the key while it still holds
        ``value``, and fails once another writer replaced it. A client without it passes
        (the storage then reads the key before its next compare-and-swap)."""
        first, second = self.make_client(), self.make_client()
        token_of = getattr(type(first), "token_of", None)
        if token_of is None:
            assert not isinstance(first, ValueTokenClient)
            return
        assert isinstance(first, ValueTokenClient)
        first.add(key, b"v1")
        found = second.gets(key)
        assert found is not None
        assert found[1] == first.token_of(b"v1")
        assert second.cas(key, b"v2", found[1])
        assert first.gets(key) == (b"v2", first.token_of(b"v2"))
        second.set_many({key: b"v3"})
        assert not first.cas(key, b"stale", first.token_of(b"v2"))
        assert first.cas(key, b"v4", first.token_of(b"v3"))
        assert second.get_many([key]) == {key: b"v4"}

    def test_add_creates_once(self, key: str) -> None:
        first, second = self.make_client(), self.make_client()
        assert first.add(key, b"one")
        assert not second.add(key, b"two")
        assert second.get_many([key]) == {key: b"one"}

    def test_cas_replaces_only_unchanged(self, key: str) -> None:
        first, second = self.make_client(), self.make_client()
        first.add(key, b"v1")
        found = first.gets(key)
        assert found is not None
        value, token = found
        assert value == b"v1"
        seen = second.gets(key)
        assert seen is not None
        assert second.cas(key, b"v2", seen[1])
        assert not first.cas(key, b"stale", token)
        assert first.get_many([key]) == {key: b"v2"}
        again = first.gets(key)
        assert again is not None
        assert first.cas(key, b"v3", again[1])
        assert second.get_many([key]) == {key: b"v3"}

    def test_cas_on_a_deleted_key_fails(self, key: str) -> None:
        client = self.make_client()
        client.add(key, b"v1")
        found = client.gets(key)
        assert found is not None
        client.delete_many([key])
        assert not client.cas(key, b"v2", found[1])
        assert client.gets(key) is None

    def test_cas_after_an_identical_rewrite_fails(self, key: str) -> None:
        # A writer that stored the same bytes still moved the key on: ABA must not pass.
        client = self.make_client()
        client.add(key, b"same")
        found = client.gets(key)
        assert found is not None
        other = self.make_client()
        current = other.gets(key)
        assert current is not None
        assert other.cas(key, b"different", current[1])
        current = other.gets(key)
        assert current is not None
        assert other.cas(key, b"same", current[1])
        if self.cas_detects_aba:
            assert not client.cas(key, b"late", found[1])

    def test_set_many_get_many_delete_many(self, key: str) -> None:
        client = self.make_client()
        items = {f"{key}-{n}": bytes([n]) * (n + 1) for n in range(5)}
        client.set_many(items)
        assert client.get_many(list(items)) == items
        client.set_many({f"{key}-0": b"replaced"})
        assert client.get_many([f"{key}-0"]) == {f"{key}-0": b"replaced"}
        client.delete_many([f"{key}-0", f"{key}-1", f"{key}-missing"])
        assert set(client.get_many(list(items))) == {f"{key}-{n}" for n in range(2, 5)}

    def test_binary_values_round_trip(self, key: str) -> None:
        client = self.make_client()
        value = bytes(range(256)) * 4 + b"\x00\r\n END\r\n"
        assert client.add(key, value)
        assert client.get_many([key]) == {key: value}
        found = client.gets(key)
        assert found is not None
        assert found[0] == value

    def test_too_large_is_refused_and_writes_nothing(self, key: str) -> None:
        client = self.make_client()
        big = b"x" * (client.max_value_size + 1)
        with pytest.raises(KeyValueTooLarge):
            client.set_many({key: big})
        assert client.get_many([key]) == {}

    def test_threads_racing_one_winner(self, key: str) -> None:
        clients = [self.make_client() for _ in range(self.race_threads)]
        won = _threads_racing(
            clients, key, lambda index, client, token: client.cas(key, f"w{index}".encode(), token)
        )
        assert clients[0].get_many([key]) == {key: f"w{won}".encode()}

    def test_processes_racing_lose_no_update(self, key: str) -> None:
        # Each process adds 1 to a counter stored under one key, with gets + cas,
        # retrying lost races: any lost update leaves the final count short.
        client = self.make_client()
        assert client.add(key, b"0:start")
        total = race_counter(
            self.process_client_factory(),
            key,
            processes=self.race_processes,
            increments=self.race_increments,
            timeout=self.race_timeout,
        )
        assert total == self.race_processes * self.race_increments
        final = client.get_many([key])[key]
        assert int(final.split(b":")[0]) == total


def race_counter(
    factory: Callable[[], KeyValueClient],
    key: str,
    *,
    processes: int,
    increments: int,
    timeout: float,
) -> int:
    """Spawn ``processes`` processes that each increment the counter at ``key``
    ``increments`` times through ``factory()`` clients; return the final count."""
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()
    workers = [
        context.Process(
            target=_counter_worker,
            kwargs={
                "factory": factory,
                "key": key,
                "index": index,
                "increments": increments,
                "start": start,
                "results": results,
            },
            daemon=True,
        )
        for index in range(processes)
    ]
    for worker in workers:
        worker.start()
    errors: list[str] = []
    try:
        start.set()
        for _ in workers:
            try:
                kind, payload = results.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"the multi-process CAS race did not finish within {timeout}s")
            if kind != "ok":
                errors.append(payload)
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()
                worker.join()
        results.close()
        results.join_thread()
    assert not errors, "a racing process failed:\n" + "\n".join(errors)
    final = factory().get_many([key]).get(key)
    assert final is not None, "the counter key is gone"
    return int(final.split(b":")[0])


def _counter_worker(
    *,
    factory: Callable[[], KeyValueClient],
    key: str,
    index: int,
    increments: int,
    start: Any,
    results: Any,
) -> None:
    try:
        client = factory()
        start.wait(timeout=60)
        for step in range(increments):
            for _attempt in range(100_000):
                found = client.gets(key)
                assert found is not None, f"{key} disappeared"
                count = int(found[0].split(b":")[0])
                # Unique bytes per writer and step: value-compare CAS needs no more.
                if client.cas(key, f"{count + 1}:{index}.{step}".encode(), found[1]):
                    break
            else:
                raise AssertionError(f"process {index} never won a CAS for step {step}")
        client.close()
        results.put(("ok", index))
    except BaseException:
        results.put(("error", f"process {index}:\n{traceback.format_exc()}"))


class AtomicCommitContract(KeyValueClientContract):
    """The contract plus :class:`~triggers_backends.kv_client.AtomicCommitClient.commit`."""

    def make_atomic(self) -> AtomicCommitClient:
        client = self.make_client()
        assert isinstance(client, AtomicCommitClient)
        return client

    def test_is_an_atomic_commit_client(self) -> None:
        assert isinstance(self.make_client(), AtomicCommitClient)

    def test_commit_creates_writes_marks_and_deletes(self, key: str) -> None:
        client, other = self.make_atomic(), self.make_atomic()
        client.set_many({f"{key}-old": b"old", f"{key}-marker": b"first"})
        docs = {f"{key}-d1": b"one", f"{key}-d2": b"two"}
        assert client.commit(
            key,
            b"v1",
            None,
            documents=docs,
            obsolete=[f"{key}-old", f"{key}-missing"],
            marker=(f"{key}-marker", b"second"),
        )
        assert other.get_many([key, *docs, f"{key}-old", f"{key}-marker"]) == {
            key: b"v1",
            **docs,
            f"{key}-marker": b"first",  # a marker is never overwritten
        }
        # The key exists now: a second creation writes nothing at all.
        assert not other.commit(
            key,
            b"v-late",
            None,
            documents={f"{key}-late": b"late"},
            obsolete=[f"{key}-d1"],
            marker=None,
        )
        assert other.get_many([key, f"{key}-late", f"{key}-d1"]) == {
            key: b"v1",
            f"{key}-d1": b"one",
        }

    def test_commit_adds_a_missing_marker(self, key: str) -> None:
        client = self.make_atomic()
        assert client.commit(
            key, b"v1", None, documents={}, obsolete=[], marker=(f"{key}-m", b"mark")
        )
        assert client.get_many([f"{key}-m"]) == {f"{key}-m": b"mark"}

    def test_commit_replaces_only_unchanged(self, key: str) -> None:
        first, second = self.make_atomic(), self.make_atomic()
        first.add(key, b"v1")
        found = first.gets(key)
        seen = second.gets(key)
        assert found is not None
        assert seen is not None
        assert second.commit(
            key, b"v2", seen[1], documents={f"{key}-a": b"a"}, obsolete=[], marker=None
        )
        assert not first.commit(
            key,
            b"stale",
            found[1],
            documents={f"{key}-b": b"b"},
            obsolete=[f"{key}-a"],
            marker=(f"{key}-m", b"m"),
        )
        assert first.get_many([key, f"{key}-a", f"{key}-b", f"{key}-m"]) == {
            key: b"v2",
            f"{key}-a": b"a",
        }

    def test_token_of_a_committed_value_commits_next(self, key: str) -> None:
        """After a commit of ``value``, ``token_of(value)`` commits the next one (what the
        storage does after its own compare-and-swap); after another writer's, it fails."""
        first, second = self.make_atomic(), self.make_atomic()
        if getattr(type(first), "token_of", None) is None:
            return  # the storage reads the key before its next commit
        token_of = cast(ValueTokenClient, first).token_of
        assert first.commit(key, b"v1", None, documents={}, obsolete=[], marker=None)
        assert first.commit(key, b"v2", token_of(b"v1"), documents={}, obsolete=[], marker=None)
        found = second.gets(key)
        assert found is not None
        assert second.commit(key, b"v3", found[1], documents={}, obsolete=[], marker=None)
        assert not first.commit(
            key, b"stale", token_of(b"v2"), documents={f"{key}-a": b"a"}, obsolete=[], marker=None
        )
        assert first.get_many([key, f"{key}-a"]) == {key: b"v3"}

    def test_commit_on_a_deleted_key_fails(self, key: str) -> None:
        client = self.make_atomic()
        client.add(key, b"v1")
        found = client.gets(key)
        assert found is not None
        client.delete_many([key])
        assert not client.commit(
            key, b"v2", found[1], documents={f"{key}-a": b"a"}, obsolete=[], marker=None
        )
        assert client.get_many([key, f"{key}-a"]) == {}

    def test_a_retried_commit_that_landed_reports_success(self, key: str) -> None:
        # A client that retries after a lost reply sees its own write: not a lost race.
        client = self.make_atomic()
        client.add(key, b"v1")
        found = client.gets(key)
        assert found is not None
        for _ in range(2):
            assert client.commit(
                key, b"v2", found[1], documents={f"{key}-a": b"a"}, obsolete=[], marker=None
            )
        assert client.get_many([key]) == {key: b"v2"}

    def test_a_commit_too_large_writes_nothing(self, key: str) -> None:
        client = self.make_atomic()
        big = b"x" * (client.max_value_size + 1)
        with pytest.raises(KeyValueTooLarge):
            client.commit(
                key,
                b"v1",
                None,
                documents={f"{key}-a": b"a", f"{key}-b": big},
                obsolete=[],
                marker=None,
            )
        assert client.get_many([key, f"{key}-a", f"{key}-b"]) == {}

    def test_threads_racing_commits_one_winner(self, key: str) -> None:
        clients = [self.make_atomic() for _ in range(self.race_threads)]

        def commit(index: int, client: Any, token: CasToken) -> bool:
            return bool(
                client.commit(
                    key,
                    f"w{index}".encode(),
                    token,
                    documents={f"{key}-doc{index}": b"d"},
                    obsolete=[],
                    marker=None,
                )
            )

        won = _threads_racing(clients, key, commit)
        docs = [f"{key}-doc{i}" for i in range(len(clients))]
        assert clients[0].get_many([key, *docs]) == {
            key: f"w{won}".encode(),
            f"{key}-doc{won}": b"d",  # the losers wrote nothing
        }

    # -- due-index appends (clients that declare commits_index_appends) ------------------

    def _append(self, key: str, lines: bytes, most: int = 64) -> IndexAppend:
        slots = tuple(f"{key}-s{n}" for n in range(3))
        return IndexAppend(f"{key}-dir", slots, ("7.0", "7.1", "7.2"), lines, most)

    def _atomic_with_appends(self) -> AtomicCommitClient:
        client = self.make_atomic()
        if not getattr(type(client), "commits_index_appends", False):
            pytest.skip("this client does not file index appends in its commit")
        return client

    def test_commit_files_index_appends(self, key: str) -> None:
        client = self._atomic_with_appends()
        commit: Any = client.commit
        first = self._append(key, b"a\n")
        assert commit(key, b"v1", None, documents={}, obsolete=[], marker=None, appends=[first])
        assert first.placed == 0
        assert client.get_many([f"{key}-dir", f"{key}-s0"]) == {
            f"{key}-dir": b",7.0,",
            f"{key}-s0": b"a\n",
        }
        found = client.gets(key)
        assert found is not None
        # Appended to the slot while it has room; the next one (registered) once full.
        second = self._append(key, b"b" * 40 + b"\n")
        third = self._append(key, b"c" * 40 + b"\n")
        assert commit(
            key, b"v2", found[1], documents={}, obsolete=[], marker=None, appends=[second, third]
        )
        assert (second.placed, third.placed) == (0, 1)
        assert client.get_many([f"{key}-dir", f"{key}-s0", f"{key}-s1"]) == {
            f"{key}-dir": b",7.0,7.1,",
            f"{key}-s0": b"a\n" + b"b" * 40 + b"\n",
            f"{key}-s1": b"c" * 40 + b"\n",
        }

    def test_commit_skips_closed_slots_and_refuses_when_none_has_room(self, key: str) -> None:
        client = self._atomic_with_appends()
        commit: Any = client.commit
        client.set_many({f"{key}-s0": INDEX_TOMBSTONE, f"{key}-s1": b""})
        append = self._append(key, b"a\n")
        assert commit(key, b"v1", None, documents={}, obsolete=[], marker=None, appends=[append])
        assert append.placed == 1  # empty, not closed: takes it (already listed or not)
        assert client.get_many([f"{key}-s0", f"{key}-s1"]) == {
            f"{key}-s0": INDEX_TOMBSTONE,
            f"{key}-s1": b"a\n",
        }
        client.set_many({f"{key}-s1": INDEX_TOMBSTONE, f"{key}-s2": INDEX_TOMBSTONE})
        found = client.gets(key)
        assert found is not None
        with pytest.raises(IndexAppendNotPlaced):
            commit(
                key,
                b"v2",
                found[1],
                documents={f"{key}-doc": b"d"},
                obsolete=[],
                marker=None,
                appends=[self._append(key, b"b\n")],
            )
        assert client.get_many([key, f"{key}-doc"]) == {key: b"v1"}  # nothing written

    def test_a_lost_commit_files_no_appends(self, key: str) -> None:
        client = self._atomic_with_appends()
        commit: Any = client.commit
        client.add(key, b"v1")
        found = client.gets(key)
        assert found is not None
        client.set_many({key: b"v1-changed"})
        append = self._append(key, b"a\n")
        assert not commit(
            key, b"v2", found[1], documents={}, obsolete=[], marker=None, appends=[append]
        )
        assert append.placed is None
        assert client.get_many([f"{key}-dir", f"{key}-s0"]) == {}


def _threads_racing(
    clients: Sequence[KeyValueClient],
    key: str,
    attempt: Callable[[int, Any, CasToken], bool],
) -> int:
    """Each client reads ``key`` (stored as ``base``), then all race ``attempt`` at once.

    ``attempt(index, client, token)`` returns whether it won. Asserts that no
    attempt raised and exactly one won; returns the winner's index. Each
    thread closes its client (per-thread connections, e.g. Django's).
    """
    clients[0].add(key, b"base")
    tokens = []
    for client in clients:
        found = client.gets(key)
        assert found is not None
        tokens.append(found[1])
    barrier = threading.Barrier(len(clients))
    won: list[int] = []
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait(timeout=30)
        try:
            if attempt(index, clients[index], tokens[index]):
                won.append(index)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            clients[index].close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(won) == 1, won
    return won[0]


def _gets_with(
    client: KeyValueClient, key: str, others: list[str]
) -> tuple[tuple[bytes, Any] | None, dict[str, bytes]]:
    """``client.gets_with`` if it has one; else what the storage does without it
    (``SessionDocuments._read_active_with``): ``gets``, then ``get_many`` of the others."""
    if callable(getattr(type(client), "gets_with", None)):
        found: tuple[tuple[bytes, Any] | None, dict[str, bytes]] = client.gets_with(  # type: ignore[attr-defined]
            key, others
        )
        return found
    return client.gets(key), dict(client.get_many([k for k in dict.fromkeys(others) if k != key]))
