"""The shipped storage contract suite on the in-process MemoryStorage."""

from __future__ import annotations

from triggers_core import MemoryStorage, MemoryStore, Storage
from triggers_core.testing.storage_contract import StorageContract


class TestMemoryStorage(StorageContract):
    # In-process only: the multi-process race does not apply.
    supports_multiprocess = False

    def setup_method(self) -> None:
        self.store = MemoryStore()

    def make_storage(self, uid: str) -> Storage:
        return MemoryStorage(uid, self.store)
