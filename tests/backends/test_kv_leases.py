"""Leases and the due index of the key-value layout on in-process clients: the shipped
lease contract (plain and atomic clients, and a client whose token is the value), plus
what the layout adds: where records and hints go, what a renewal writes, the cost of a
sweep, lost hints and the rebuild, and ``delete``."""

from __future__ import annotations

import uuid

from kv_helpers import CompareValueClient
from kv_memory import AtomicDictClient, DictKeyValueClient, DictStore

from triggers_backends.kv.storage import KeyValueStorage
from triggers_core.runtime.storage import Storage
from triggers_core.testing.lease_contract import LeaseContract


class TestPlainClientLeases(LeaseContract):
    def setup_method(self) -> None:
        self.store = DictStore()
        self.prefix = f"t{uuid.uuid4().hex[:8]}:"

    def make_storage(self, uid: str) -> Storage:
        return KeyValueStorage(uid, DictKeyValueClient(self.store), prefix=self.prefix)


class TestAtomicClientLeases(TestPlainClientLeases):
    def make_storage(self, uid: str) -> Storage:
        return KeyValueStorage(uid, AtomicDictClient(self.store), prefix=self.prefix)


class TestCompareValueClientLeases(TestPlainClientLeases):
    def make_storage(self, uid: str) -> Storage:
        return KeyValueStorage(uid, CompareValueClient(self.store), prefix=self.prefix)
