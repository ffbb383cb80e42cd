"""The key-value client contract on the in-process reference client."""

from __future__ import annotations

import pytest
from kv_client_contract import AtomicCommitContract, KeyValueClientContract
from kv_memory import AtomicDictClient, DictKeyValueClient, DictStore


class TestDictKeyValueClient(KeyValueClientContract):
    @pytest.fixture(autouse=True)
    def _store(self) -> None:
        self.store = DictStore(max_value_size=64 * 1024)

    def make_client(self) -> DictKeyValueClient:
        return DictKeyValueClient(self.store)


class TestAtomicDictClient(AtomicCommitContract):
    @pytest.fixture(autouse=True)
    def _store(self) -> None:
        self.store = DictStore(max_value_size=64 * 1024)

    def make_client(self) -> AtomicDictClient:
        return AtomicDictClient(self.store)
