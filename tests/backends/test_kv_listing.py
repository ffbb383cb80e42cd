"""Listing sessions on the key-value storages: the listing contract on real memcached and
on Django's cache on real Redis (and memcached), concurrent creation from threads and
processes, deletion, paging, the eviction note, and rebuilding a lost index.

Each test uses its own key prefix, so each lists a store of its own.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import django_env
import pytest
from memcached_server import MemcachedServer
from services import require_service

from triggers_backends.django_cache import CacheStorageBackend
from triggers_backends.kv.session_index import SHARDS, SessionIndex
from triggers_backends.kv.storage import KeyValueStorage
from triggers_backends.memcached import MemcachedStorage, close_clients
from triggers_backends.pymemcache_client import PymemcacheClient
from triggers_core import TriggerManager
from triggers_core.runtime.sessions import SessionFilter, SessionPage
from triggers_core.testing.listing_contract import SessionListingContract
from triggers_core.testing.lost_runs import start_run
from triggers_core.testing.storage_contract import RecordingRunner
from triggers_core.tools.listing import iter_sessions, list_sessions

pytestmark = pytest.mark.service

CONFIG = {"t_a": {"after": ["x"], "run": "contract_task"}}


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


def quoted(prefix: str) -> str:
    return prefix.replace(":", "%3A")


def create(storage: KeyValueStorage) -> None:
    manager = TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")
    manager.update_configuration(CONFIG)


class KeyValueListingCases(SessionListingContract):
    """The contract, plus what only the index of a key-value store has to get right."""

    prefix: str
    #: Whether the store may evict (the pages say so).
    evicts: ClassVar[bool]

    def url(self) -> str:
        raise NotImplementedError

    def list_sessions(
        self, filter: SessionFilter, *, page_size: int, cursor: str | None
    ) -> SessionPage:
        page = list_sessions(self.url(), filter, page_size=page_size, cursor=cursor)
        assert page.may_be_incomplete is self.evicts
        return page

    def make_storage(self, uid: str) -> KeyValueStorage:
        raise NotImplementedError

    def test_sessions_with_a_lost_run_are_found_through_the_due_index(self) -> None:
        for uid in ("lost-a", "live", "lost-b", "idle"):
            create(self.make_storage(uid))
            manager = TriggerManager(
                self.make_storage(uid), runners={"rec": RecordingRunner()}, default_runner="rec"
            )
            manager.sweep_interval = None
            manager.fire("x")
        start_run(self.make_storage("lost-a"), "t_a#0", expires_in=-5)
        start_run(self.make_storage("lost-b"), "t_a#0", expires_in=-5)
        start_run(self.make_storage("live"), "t_a#0", expires_in=600)
        now = datetime.now(UTC)
        wanted = SessionFilter(lost=True, now=now)
        assert list(iter_sessions(self.url(), wanted, page_size=1)) == ["lost-a", "lost-b"]
        later = SessionFilter(lost=True, now=now + timedelta(hours=1))
        assert list(iter_sessions(self.url(), later)) == ["live", "lost-a", "lost-b"]

    def test_sessions_created_by_many_threads_are_all_listed(self) -> None:
        uids = [f"thread-{n:03}" for n in range(120)]
        errors: list[BaseException] = []

        def work(part: list[str]) -> None:
            try:
                for uid in part:
                    create(self.make_storage(uid))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(uids[n::8],)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
        listed = self.everything(SessionFilter(), 7)
        assert sorted(listed) == uids

    def test_two_creators_of_one_session_list_it_once(self) -> None:
        for n in range(20):
            uid = f"race-{n}"
            barrier = threading.Barrier(4)

            def work(uid: str = uid, barrier: threading.Barrier = barrier) -> None:
                barrier.wait(10)
                # A loser may give up (ConcurrencyError): the winner created the session.
                with contextlib.suppress(Exception):
                    create(self.make_storage(uid))

            threads = [threading.Thread(target=work) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        assert sorted(self.everything(SessionFilter(), 3)) == sorted(f"race-{n}" for n in range(20))

    def test_a_deleted_session_leaves_the_index(self) -> None:
        uids = [f"del-{n:02}" for n in range(10)]
        for uid in uids:
            create(self.make_storage(uid))
        for uid in uids[::2]:
            self.make_storage(uid).delete()
        assert sorted(self.everything(SessionFilter(), 3)) == uids[1::2]
        # Its line is gone from the index, not only skipped.
        index = SessionIndex(self.make_storage("x").client, self.prefix)
        assert sorted(uid for uid, _ in index.members()) == uids[1::2]
        # Created again: listed once, under its new epoch.
        create(self.make_storage(uids[0]))
        assert sorted(self.everything(SessionFilter(), 4)) == sorted([uids[0], *uids[1::2]])

    def test_cursors_survive_deletions_before_them(self) -> None:
        uids = [f"page-{n:02}" for n in range(9)]
        for uid in uids:
            create(self.make_storage(uid))
        first = self.list_sessions(SessionFilter(), page_size=4, cursor=None)
        assert first.cursor is not None
        for uid in first.uids:
            self.make_storage(uid).delete()
        rest: list[str] = []
        cursor: str | None = first.cursor
        while cursor is not None:
            page = self.list_sessions(SessionFilter(), page_size=2, cursor=cursor)
            rest.extend(page.uids)
            cursor = page.cursor
        assert sorted(rest) == sorted(set(uids) - set(first.uids))

    def test_iter_sessions_follows_the_pages(self) -> None:
        uids = [f"iter-{n:02}" for n in range(12)]
        for uid in uids:
            create(self.make_storage(uid))
        assert sorted(iter_sessions(self.url(), page_size=5)) == uids


class TestMemcachedListing(KeyValueListingCases):
    evicts = True

    @pytest.fixture(autouse=True)
    def _server(self, memcached: MemcachedServer) -> Iterator[None]:
        self.server = memcached
        self.prefix = unique_prefix()
        self.client = PymemcacheClient(memcached.address, timeout=10)
        yield
        self.client.close()
        close_clients()

    def url(self) -> str:
        return f"memcached://{self.server.address}?prefix={quoted(self.prefix)}"

    def make_storage(self, uid: str) -> MemcachedStorage:
        return MemcachedStorage(uid, self.client, prefix=self.prefix)

    def test_sessions_created_by_several_processes_are_all_listed(self) -> None:
        context = multiprocessing.get_context("spawn")
        parts = [[f"proc{p}-{n:02}" for n in range(15)] for p in range(3)]
        with context.Pool(3) as pool:
            pool.starmap(_create_all, [(self.url(), part) for part in parts])
        listed = self.everything(SessionFilter(), 10)
        assert sorted(listed) == sorted(uid for part in parts for uid in part)

    def test_the_sessions_command_lists_pages_and_says_it_may_be_incomplete(self) -> None:
        from click.testing import CliRunner

        from triggers_core.cli._app import cli
        from triggers_core.cli._sessions import INCOMPLETE_NOTE

        uids = [f"cli-{n}" for n in range(5)]
        for uid in uids:
            create(self.make_storage(uid))
        runner = CliRunner()
        done = runner.invoke(cli, ["sessions", self.url()])
        assert done.exit_code == 0, done.output
        assert sorted(done.stdout.split()) == uids
        assert done.stderr.strip() == INCOMPLETE_NOTE
        first = runner.invoke(cli, ["sessions", self.url(), "--limit", "2", "--json"])
        page = json.loads(first.stdout)
        assert len(page["sessions"]) == 2
        assert page["mayBeIncomplete"] is True
        rest = runner.invoke(cli, ["sessions", self.url(), "--cursor", page["cursor"], "--json"])
        assert sorted(page["sessions"] + json.loads(rest.stdout)["sessions"]) == uids
        assert runner.invoke(cli, ["sessions", self.url(), "--failed"]).stdout == ""

    def test_a_lost_index_is_rebuilt_from_the_store(self) -> None:
        uids = [f"lost-{n:02}" for n in range(30)]
        for uid in uids:
            create(self.make_storage(uid))
        index = SessionIndex(self.client, self.prefix)
        # What eviction does: the index's keys go, the sessions stay.
        doomed = [index.head(s) for s in range(SHARDS)]
        doomed += [index.slot_key(s, n) for s in range(SHARDS) for n in range(4)]
        self.client.delete_many(doomed)
        assert self.everything(SessionFilter()) == []
        store = self.make_storage("-")
        assert store.rebuild_session_index() == len(uids)
        assert sorted(self.everything(SessionFilter(), 7)) == uids
        assert store.rebuild_session_index() == 0  # nothing missing any more
        # A rebuilt session is removed from the index when it is deleted.
        self.make_storage(uids[0]).delete()
        assert sorted(self.everything(SessionFilter(), 7)) == uids[1:]
        assert sorted(u for u, _ in index.members()) == uids[1:]


def _create_all(url: str, uids: list[str]) -> None:
    for uid in uids:
        create(MemcachedStorage(uid, url))


class DjangoCacheListingCases(KeyValueListingCases):
    alias: ClassVar[str]
    service: ClassVar[tuple[str, str, int] | None] = None

    @pytest.fixture(autouse=True)
    def _django(self, django_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
        if self.service is not None:
            require_service(*self.service)
        for name, value in django_env.process_environment(django_settings).items():
            monkeypatch.setenv(name, value)
        self.prefix = unique_prefix()

    def url(self) -> str:
        return f"django-cache://{self.alias}?prefix={quoted(self.prefix)}"

    def make_storage(self, uid: str) -> CacheStorageBackend:
        return CacheStorageBackend(uid, self.alias, prefix=self.prefix)

    def test_sessions_created_by_several_processes_are_all_listed(self) -> None:
        context = multiprocessing.get_context("spawn")
        parts = [[f"proc{p}-{n:02}" for n in range(15)] for p in range(3)]
        with context.Pool(3) as pool:
            pool.starmap(_create_all_django, [(self.url(), part) for part in parts])
        listed = self.everything(SessionFilter(), 10)
        assert sorted(listed) == sorted(uid for part in parts for uid in part)


def _create_all_django(url: str, uids: list[str]) -> None:
    import django

    django.setup()
    from triggers_core import open_storage

    for uid in uids:
        storage = open_storage(url, uid)
        assert isinstance(storage, KeyValueStorage)
        create(storage)


class TestRedisCacheListing(DjangoCacheListingCases):
    evicts = False
    alias = django_env.REDIS
    service = ("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)


class TestDjangoRedisCacheListing(DjangoCacheListingCases):
    evicts = False
    alias = django_env.DJANGO_REDIS
    service = ("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)


class TestPyMemcacheCacheListing(DjangoCacheListingCases):
    evicts = True
    alias = django_env.MEMCACHED

    @pytest.fixture(autouse=True)
    def _server(self, memcached: Any) -> None:
        """The session's memcached (the cache's LOCATION)."""
