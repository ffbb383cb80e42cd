"""The key-value layout's shortcuts that save CPU must leave nothing different behind.

A writer keeps the parse of the active document it swapped in (the next load of
the same bytes skips parsing them): that kept parse must be what parsing the
stored bytes gives, value for value and in the same order.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kv_memory import AtomicDictClient, DictKeyValueClient, DictStore

from triggers_backends.kv.active import Active, IndexTable
from triggers_backends.kv.documents import DocRef, decode, encode
from triggers_backends.kv.session_documents import _PARSED
from triggers_backends.kv.storage import KeyValueStorage
from triggers_core import TriggerManager
from triggers_core.testing.storage_contract import RecordingRunner

CONFIG = {
    "t_first": {"after": ["start", "more"], "run": "triggers.PassThruTask"},
    "t_second": {"after": ["t_first", "end"], "run": "triggers.PassThruTask"},
    "t_page": {"after": ["start"], "andEvery": "page", "run": "triggers.PassThruTask"},
}


def shape(active: Active) -> Any:
    """Everything an :class:`Active` holds, mapping orders included."""
    return (
        active.version,
        json.dumps(active.header),  # not sorted: the key order is compared too
        active.config,
        list(active.latest.items()),
        list(active.index.to_json().items()),
        [(task, active.index[task]) for task in active.index],
        active.index._what,
        active.epoch,
        list(active.fires.items()),
        active.listed,
        active.confirmed,
    )


def parse(raw: bytes, uid: str, what: str) -> Active:
    return Active.from_body(decode(raw, "active", uid, what), what)


def test_as_read_is_the_parse_of_the_encoding() -> None:
    index = IndexTable({"zeta": "0=r1;0;0", "alpha": "0=r2;;0"})
    active = Active(
        7,
        {"counters": {"zeta": 2, "alpha": 1}, "unsettled": {"b": ["x"], "a": []}, "n": (1, 2)},
        DocRef("c1"),
        {"t2": DocRef("k2"), "t1": DocRef("k1", 2, "ab")},
        index,
        "epoch1",
        {"f2": DocRef("f"), "f1": DocRef("g")},
        3,
        4,
    )
    raw = encode("active", "uid", active.to_body())
    what = "the active document"
    assert shape(active.as_read(what)) == shape(parse(raw, "uid", what))
    assert shape(active) != shape(parse(raw, "uid", what))  # the orders did differ


def _check_kept_parse(storage: KeyValueStorage, store: DictStore) -> int:
    """Compare the kept parse of the active document with a parse of the stored bytes."""
    key = storage.keys.active
    kept = storage._cache.get(key + _PARSED)
    assert kept is not storage._cache.missing
    raw, active = kept
    assert store.items[key][0] == raw
    what = storage._what("active document", key)
    assert shape(active) == shape(parse(raw, storage.uid, what))
    return active.version


@pytest.mark.parametrize("client_class", [DictKeyValueClient, AtomicDictClient])
def test_a_writer_keeps_the_parse_of_what_it_swapped_in(client_class: type[Any]) -> None:
    store = DictStore()
    storage = KeyValueStorage("session-1", client_class(store))
    TriggerManager(storage).update_configuration(CONFIG)
    versions = [_check_kept_parse(storage, store)]
    pending: list[str] = []
    for trigger, kwargs in [
        ("start", {"b": 1, "a": [1, {"z": 0, "y": 1}]}),
        ("page", {"n": 1}),
        ("more", {"x": "é"}),
        ("page", {"n": 2}),
        ("end", {}),
    ]:
        runner = RecordingRunner()
        manager = TriggerManager(storage, runners={"r": runner}, default_runner="r")
        manager.fire(trigger, kwargs)
        versions.append(_check_kept_parse(storage, store))
        pending += runner.dispatched
    while pending:
        runner = RecordingRunner()
        manager = TriggerManager(storage, runners={"r": runner}, default_runner="r")
        manager.run_instance(pending.pop(0), guard_cascade=True)
        versions.append(_check_kept_parse(storage, store))
        pending += runner.dispatched
    assert versions == sorted(versions)
    assert versions[-1] > 10
    # A load that finds the kept bytes uses the kept parse, and sees what was stored.
    fresh = KeyValueStorage("session-1", client_class(store))
    assert fresh.load_full().state == storage.load_full().state
