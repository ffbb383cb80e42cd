"""The shipped storage contract suite on the in-process MemoryStorage."""

from __future__ import annotations

import uuid

from triggers_core import MemoryStorage, MemoryStore, SessionState, Storage
from triggers_core.engine.scopes import Changes
from triggers_core.runtime.sessions import SessionFilter, SessionPage
from triggers_core.testing.lease_contract import LeaseContract
from triggers_core.testing.listing_contract import SessionListingContract
from triggers_core.testing.storage_contract import StorageContract
from triggers_core.tools.listing import iter_sessions, list_sessions


class TestMemoryStorage(StorageContract):
    # In-process only: the multi-process race does not apply.
    supports_multiprocess = False

    def setup_method(self) -> None:
        self.store = MemoryStore()

    def make_storage(self, uid: str) -> Storage:
        return MemoryStorage(uid, self.store)


class TestMemoryListing(SessionListingContract):
    def setup_method(self) -> None:
        self.store = MemoryStore()

    def make_storage(self, uid: str) -> Storage:
        return MemoryStorage(uid, self.store)

    def list_sessions(
        self, filter: SessionFilter, *, page_size: int, cursor: str | None
    ) -> SessionPage:
        return self.store.list_sessions(filter, page_size=page_size, cursor=cursor)


def test_memory_urls_list_their_named_store() -> None:
    name = f"listing-{uuid.uuid4().hex}"
    MemoryStorage("b", store_name=name).compare_and_swap(None, SessionState(), Changes())
    MemoryStorage("a", store_name=name).compare_and_swap(None, SessionState(), Changes())
    assert list(iter_sessions(f"memory://{name}", page_size=1)) == ["a", "b"]
    assert list_sessions(f"memory://{name}-other") == SessionPage(())


class TestMemoryLeases(LeaseContract):
    def setup_method(self) -> None:
        self.store = MemoryStore()

    def make_storage(self, uid: str) -> Storage:
        return MemoryStorage(uid, self.store)
