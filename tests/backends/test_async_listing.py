"""Listing a store's sessions from asyncio code: ``alist_sessions`` / ``aiter_sessions``.

The shipped listing contract through the async URLs (memory, aiosqlite, asyncpg,
aiomysql): the same pages as the synchronous listing, on the async driver. Then
what is the async face's own: lost runs, cursors shared with the sync listing, the
loop not blocked, errors (no URL, a backend that cannot list, missing tables)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from services import require_service

from triggers_backends.sqlalchemy import drop_schema
from triggers_backends.sqlalchemy.asyncio import dispose_async_engines
from triggers_core import (
    RegistryError,
    SchemaMissingError,
    TriggerManager,
    UnsupportedOperationError,
    open_storage,
)
from triggers_core.engine.scopes import Changes
from triggers_core.engine.state import SessionState
from triggers_core.runtime.async_storage import AsyncStorage
from triggers_core.runtime.registry import sync_twin_url
from triggers_core.runtime.sessions import SessionFilter, SessionPage
from triggers_core.runtime.storage import Snapshot, Storage, Version
from triggers_core.testing.listing_contract import SessionListingContract
from triggers_core.testing.lost_runs import start_run
from triggers_core.testing.storage_contract import RecordingRunner
from triggers_core.tools.listing import aiter_sessions, alist_sessions, list_sessions

ASYNC_URLS = {
    "memory": "memory://",
    "aiosqlite": "sqlite+aiosqlite:///",
    "asyncpg": "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    "aiomysql": "mysql+aiomysql://root@127.0.0.1:3306/test",
}


def _store_url(kind: str, tmp_path: Path) -> str:
    """A fresh, empty store of ``kind``: its own memory name, file or table prefix."""
    run = uuid.uuid4().hex[:10]
    if kind == "memory":
        return f"memory://alisting-{run}"
    if kind == "aiosqlite":
        base = f"sqlite+aiosqlite:///{tmp_path / 'listing.db'}"
    else:
        base = ASYNC_URLS[kind]
        url = sa.engine.make_url(base)
        require_service(url.get_backend_name(), url.host or "", url.port or 0)
    return f"{base}?triggers_prefix=al{run}_"


def _sync(url: str) -> str:
    """The sync URL of the same store, creating its tables when first opened."""
    twin = sync_twin_url(url)
    if twin.startswith("memory"):
        return twin
    return f"{twin}&triggers_create_schema=true"


def _drop(url: str) -> None:
    if url.startswith("memory"):
        return
    parsed = sa.engine.make_url(sync_twin_url(url))
    prefix = parsed.query["triggers_prefix"]
    engine = sa.create_engine(parsed.set(query={}))
    try:
        drop_schema(engine, table_prefix=str(prefix))
    finally:
        engine.dispose()


def alist(url: str, filter: SessionFilter, *, page_size: int, cursor: str | None) -> SessionPage:
    async def main() -> SessionPage:
        try:
            return await alist_sessions(url, filter, page_size=page_size, cursor=cursor)
        finally:
            await dispose_async_engines()

    return asyncio.run(main())


@pytest.fixture(params=list(ASYNC_URLS))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url = _store_url(request.param, tmp_path)
    open_storage(_sync(url), "made").close()  # the tables, for SQL
    yield url
    _drop(url)


class TestAsyncListingContract(SessionListingContract):
    """The listing contract, each page read by ``alist_sessions`` on the async URL."""

    @pytest.fixture(autouse=True)
    def _url(self, store_url: str) -> None:
        self.url = store_url

    def make_storage(self, uid: str) -> Storage:
        return open_storage(_sync(self.url), uid)

    def list_sessions(
        self, filter: SessionFilter, *, page_size: int, cursor: str | None
    ) -> SessionPage:
        found = alist(self.url, filter, page_size=page_size, cursor=cursor)
        # The same page as the synchronous listing of the same store, cursor and all.
        assert found == list_sessions(
            sync_twin_url(self.url), filter, page_size=page_size, cursor=cursor
        )
        return found


def _lost_store(url: str) -> None:
    """Sessions lost-1, lost-2 (a run under a lease expired 5 s ago) and live (600 s left)."""
    for uid in ("lost-1", "lost-2", "live"):
        manager = TriggerManager(
            open_storage(_sync(url), uid),
            runners={"rec": RecordingRunner()},
            default_runner="rec",
        )
        manager.sweep_interval = None
        manager.update_configuration({"t_a": {"after": ["x"], "run": "contract_task"}})
        manager.fire("x")
        start_run(open_storage(_sync(url), uid), "t_a#0", expires_in=-5 if "lost" in uid else 600)


def test_lost_runs_are_listed_through_the_due_index(store_url: str) -> None:
    _lost_store(store_url)
    now = datetime.now(UTC)

    async def main() -> tuple[list[str], list[str], list[str]]:
        try:
            lost = [u async for u in aiter_sessions(store_url, SessionFilter(lost=True, now=now))]
            later = SessionFilter(lost=True, now=now + timedelta(hours=1))
            paged = [u async for u in aiter_sessions(store_url, later, page_size=1)]
            unresolved = [
                u async for u in aiter_sessions(store_url, SessionFilter(unresolved=True))
            ]
            return lost, paged, unresolved
        finally:
            await dispose_async_engines()

    lost, paged, unresolved = asyncio.run(main())
    assert lost == ["lost-1", "lost-2"]
    assert sorted(paged) == ["live", "lost-1", "lost-2"]  # an hour later, live's lease ran out
    assert sorted(unresolved) == ["live", "lost-1", "lost-2"]


def test_the_loop_keeps_running_while_a_page_is_read(tmp_path: Path) -> None:
    """Another coroutine gets turns while the listing waits on the database."""
    url = _store_url("aiosqlite", tmp_path)
    for n in range(50):
        open_storage(_sync(url), f"s-{n:03}").compare_and_swap(None, SessionState(), Changes())

    async def main() -> tuple[list[str], int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        try:
            uids = [u async for u in aiter_sessions(url, page_size=7)]
        finally:
            stop.set()
            await task
            await dispose_async_engines()
        return uids, ticks

    uids, ticks = asyncio.run(main())
    assert sorted(uids) == [f"s-{n:03}" for n in range(50)]  # each once (the order is SQLite's)
    assert ticks > 8  # at least one turn per page read (8 pages)


def test_no_url_and_no_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIGGERS_STORAGE_URL", raising=False)
    with pytest.raises(RegistryError, match="TRIGGERS_STORAGE_URL is not set"):
        asyncio.run(alist_sessions(None))


def test_the_environment_names_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"alisting-env-{uuid.uuid4().hex[:8]}"
    open_storage(f"memory://{name}", "only").compare_and_swap(None, SessionState(), Changes())
    monkeypatch.setenv("TRIGGERS_STORAGE_URL", f"memory://{name}")
    assert asyncio.run(alist_sessions(None)).uids == ("only",)


def test_missing_tables_are_a_clear_error(tmp_path: Path) -> None:
    """(An SQLite file's tables are made when a storage first opens it, as everywhere,
    unless the URL says ``triggers_create_schema=false``.)"""
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}?triggers_create_schema=false"

    async def main() -> None:
        try:
            await alist_sessions(url)
        finally:
            await dispose_async_engines()

    with pytest.raises(SchemaMissingError, match="do not exist"):
        asyncio.run(main())


def test_a_bad_page_size_or_cursor_is_refused(tmp_path: Path) -> None:
    url = f"memory://alisting-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValueError, match="page_size"):
        asyncio.run(alist_sessions(url, page_size=0))
    with pytest.raises(ValueError, match="not a cursor of a listing of lost sessions"):
        asyncio.run(
            alist_sessions(url, SessionFilter(lost=True, now=datetime.now(UTC)), cursor="x")
        )


class Bare(AsyncStorage):
    """An async storage of a third party's, with no synchronous storage behind it."""

    backend_name = "bare"

    async def load(self, scope: object = None) -> Snapshot:
        raise AssertionError("not reached")

    async def load_full(self) -> Snapshot:
        raise AssertionError("not reached")

    async def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        raise AssertionError("not reached")


def test_a_storage_without_a_synchronous_storage_cannot_list() -> None:
    with pytest.raises(UnsupportedOperationError, match="listing sessions"):
        asyncio.run(Bare("u").run_with_sync("listing sessions", lambda sync: None))
