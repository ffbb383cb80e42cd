"""Helpers for the key-value layout tests: clients that fail on cue, and the reachable keys."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kv_memory import DictKeyValueClient, DictStore

from triggers_backends.kv.active import Active, Page
from triggers_backends.kv.documents import DocRef, decode, join, stored_keys
from triggers_backends.kv.storage import KeyValueStorage
from triggers_backends.kv_client import CasToken, KeyValueUnavailable
from triggers_core import TriggerManager
from triggers_core.testing.storage_contract import RecordingRunner


def values(store: DictStore) -> dict[str, bytes]:
    """Every stored key and its value."""
    with store.lock:
        return {k: v for k, (v, _) in store.items.items()}


def manager_on(storage: KeyValueStorage) -> tuple[TriggerManager, RecordingRunner]:
    """A manager whose runner records what it is given (nothing runs)."""
    runner = RecordingRunner()
    return TriggerManager(storage, runners={"rec": runner}, default_runner="rec"), runner


class CompareValueClient(DictKeyValueClient):
    """A client whose CAS token is the previous value (like a cache without ``cas unique``)."""

    backend_name = "dict-compare-value"

    def gets(self, key: str) -> tuple[bytes, CasToken] | None:
        with self.store.lock:
            found = self.store.items.get(key)
            return None if found is None else (found[0], found[0])

    def cas(self, key: str, value: bytes, token: CasToken) -> bool:
        self._check(value)
        with self.store.lock:
            found = self.store.items.get(key)
            if found is None or found[0] != token:
                return False
            self._put(key, value)
            return True


class ScriptedClient(DictKeyValueClient):
    """A dict client that records writes and can run a hook before any call.

    ``hooks[name]`` is called with the call's arguments before the call runs;
    it may raise (a crash or an outage at that point) or act (a concurrent
    writer at that point).
    """

    backend_name = "scripted"

    def __init__(self, store: DictStore) -> None:
        super().__init__(store)
        self.hooks: dict[str, Callable[..., None]] = {}
        self.written: list[str] = []
        self.calls: list[str] = []

    def _hook(self, name: str, *args: Any) -> None:
        self.calls.append(name)
        hook = self.hooks.get(name)
        if hook is not None:
            hook(*args)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        self._hook("get_many", keys)
        return super().get_many(keys)

    def gets(self, key: str) -> tuple[bytes, CasToken] | None:
        self._hook("gets", key)
        return super().gets(key)

    def add(self, key: str, value: bytes) -> bool:
        self._hook("add", key, value)
        self.written.append(key)
        return super().add(key, value)

    def cas(self, key: str, value: bytes, token: CasToken) -> bool:
        self._hook("cas", key, value, token)
        self.written.append(key)
        return super().cas(key, value, token)

    def set_many(self, items: Mapping[str, bytes]) -> None:
        self._hook("set_many", items)
        self.written.extend(items)
        super().set_many(items)

    def delete_many(self, keys: Sequence[str]) -> None:
        self._hook("delete_many", keys)
        super().delete_many(keys)


def outage(*_: Any) -> None:
    raise KeyValueUnavailable("dict: simulated outage")


def reachable_keys(storage: KeyValueStorage, values: Mapping[str, bytes]) -> set[str]:
    """Every key the session's active document references, directly or through pages,
    plus the fire record pointers of its epoch and the records they point to, their
    numbered entries, and the
    lease records of its running instances."""
    keys = storage.keys
    uid = storage.uid
    raw = values.get(keys.active)
    if raw is None:
        return set()
    active = Active.from_body(decode(raw, "active", uid, "active"), "active")
    found = {keys.active, keys.marker}
    for record, ref in active.fires.items():  # fire records this version created
        found.update(stored_keys(keys.fire_record(active.epoch, record, ref.rev), ref))
    pointers = keys.fire_pointer(active.epoch, "") if active.epoch else None
    for key, raw in values.items():  # older fire records, through their pointers
        if pointers is not None and key.startswith(pointers):
            body = decode(raw, "firekey", uid, "pointer")
            ref = DocRef.from_json(body["ref"], "pointer")
            record_keys = stored_keys(keys.fire_record(active.epoch, body["record"], ref.rev), ref)
            assert all(k in values for k in record_keys), f"{key} points to a missing record"
            found.update([key, *record_keys])
    entries = keys.fire_entry(active.epoch, 0)[:-1] if active.epoch else None
    for key in values:  # the numbered entries of the confirmed records (for delete)
        if entries is not None and key.startswith(entries) and key[len(entries) :].isdigit():
            number = int(key[len(entries) :])
            assert number < active.confirmed + len(active.fires), f"{key}: beyond the entries"
            found.add(key)
    if active.config is not None:
        found.update(stored_keys(keys.config(active.config.rev), active.config))
    for trigger, ref in active.latest.items():
        found.update(stored_keys(keys.latest(trigger, ref.rev), ref))
    for task, index in active.index.items():
        for number, ref in index.pages.items():
            key = keys.page(task, number, ref.rev)
            found.update(stored_keys(key, ref))
            data = join(key, ref, values, "page")
            assert data is not None, f"page {key} is missing"
            page = Page.from_body(decode(data, "page", uid, "page"), task, number, "page")
            for n, entry in page.entries.items():
                key = keys.instance(f"{task}#{n}", entry.ref.rev)
                found.update(stored_keys(key, entry.ref))
                if entry.status == "running":  # its run's lease record
                    data = join(key, entry.ref, values, "instance")
                    assert data is not None, f"instance {key} is missing"
                    metadata = decode(data, "instance", uid, "instance")["metadata"]
                    if metadata.get("owner"):
                        found.add(keys.lease(f"{task}#{n}", metadata["owner"]))
    return found


def session_keys(storage: KeyValueStorage, values: Mapping[str, bytes]) -> set[str]:
    """Every stored key of the session (by its hash tag)."""
    tag = "{" + storage.keys.session + "}"
    return {key for key in values if tag in key}
