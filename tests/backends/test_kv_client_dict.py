"""The key-value client contract on the in-process reference client."""

from __future__ import annotations

import pytest
from kv_client_contract import KeyValueClientContract
from kv_memory import DictKeyValueClient, DictStore


class TestDictKeyValueClient(KeyValueClientContract):
    @pytest.fixture(autouse=True)
    def _store(self) -> None:
        self.store = DictStore(max_value_size=64 * 1024)

    def make_client(self) -> DictKeyValueClient:
        return DictKeyValueClient(self.store)
