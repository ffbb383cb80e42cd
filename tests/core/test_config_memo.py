"""Stored configurations decoded once per process (``triggers_core.runtime.config_memo``).

The memo must give exactly what a fresh decode gives (the same tasks, in the
same order), never keep a text that fails, stay bounded, and, on real storages,
give two sessions storing one configuration the same table while a session
whose configuration changes gets its own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triggers_core import MemoryStore, TriggerManager
from triggers_core.engine.config import parse_configuration
from triggers_core.engine.serialization import config_from_json, config_to_json
from triggers_core.errors import SerializationError
from triggers_core.runtime.config_memo import ConfigMemo
from triggers_core.runtime.memory import MemoryStorage
from triggers_core.testing.sample_tasks import DevNullTask
from triggers_core.testing.storage_contract import RecordingRunner
from triggers_core.testing.strategies import task_configurations

CONFIG = {
    "t_a": {"after": ["x"], "run": DevNullTask.name},
    "t_b": {"after": ["t_a", "y"], "run": DevNullTask.name},
}


def _text(config: dict[str, Any]) -> str:
    return json.dumps(config_to_json(parse_configuration(config)))


def test_a_text_met_again_gives_the_same_table() -> None:
    memo = ConfigMemo()
    text = _text(CONFIG)
    first = memo.from_text(text)
    assert first == config_from_json(json.loads(text))
    assert memo.from_text(text) is first
    # A document the caller parsed (the key-value layout's): kept by its compact text.
    body = memo.from_body(json.loads(text))
    assert body == first
    assert memo.from_body(json.loads(text)) is body
    assert len(memo) <= 2


def test_the_order_of_the_tasks_is_kept() -> None:
    memo = ConfigMemo()
    forward = _text(CONFIG)
    backward = _text(dict(reversed(list(CONFIG.items()))))
    assert list(memo.from_text(forward)) == ["t_a", "t_b"]
    assert list(memo.from_text(backward)) == ["t_b", "t_a"]
    assert list(memo.from_body(json.loads(backward))) == ["t_b", "t_a"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{not json",
        "[]",
        '{"schemaVersion": 1}',
        '{"schemaVersion": 3, "tasks": {"t": {"after": 5}}}',
    ],
)
def test_a_text_that_fails_raises_for_each_reader_and_is_not_kept(text: str) -> None:
    memo = ConfigMemo()
    for what in ("session 'a' configuration", "session 'b' configuration"):
        with pytest.raises(SerializationError) as caught:
            memo.from_text(text, what)
        assert what in str(caught.value)
    assert len(memo) == 0


def test_a_body_that_fails_raises() -> None:
    memo = ConfigMemo()
    for body in ([], "x", {"schemaVersion": 3, "tasks": {"t": {"after": 5}}}, {"a": {1, 2}}):
        with pytest.raises(SerializationError):
            memo.from_body(body)
    assert len(memo) == 0


def test_the_memo_is_bounded_least_recently_used_first() -> None:
    memo = ConfigMemo(entries=2, max_chars=10_000)
    texts = [_text({f"t_{n}": {"after": ["x"], "run": DevNullTask.name}}) for n in range(3)]
    first = memo.from_text(texts[0])
    memo.from_text(texts[1])
    assert memo.from_text(texts[0]) is first  # used again: now the most recent
    memo.from_text(texts[2])  # drops texts[1]
    assert len(memo) == 2
    assert memo.from_text(texts[0]) is first
    again = memo.from_text(texts[1])
    assert again == config_from_json(json.loads(texts[1]))
    big = ConfigMemo(max_chars=len(texts[0]) - 1)
    assert big.from_text(texts[0]) is not big.from_text(texts[0])
    assert len(big) == 0


@settings(max_examples=100, deadline=None)
@given(task_configurations(using=False, extras=False), st.integers(0, 3))
def test_the_memo_decodes_what_a_fresh_decode_does(config: dict[str, Any], others: int) -> None:
    config = {name: {**d, "run": DevNullTask.name} for name, d in config.items()}
    memo = ConfigMemo(entries=2)
    for n in range(others):  # other configurations met before (some dropped again)
        memo.from_text(_text({f"o_{n}": {"after": ["x"], "run": DevNullTask.name}}))
    text = _text(config)
    fresh = config_from_json(json.loads(text))
    for table in (memo.from_text(text), memo.from_body(json.loads(text)), memo.from_text(text)):
        assert table == fresh
        assert list(table) == list(fresh)
        for trigger in {t for task in fresh.values() for t in task.after}:
            assert table.using(trigger) == fresh.using(trigger)


def _configure(storage: Any, config: dict[str, Any]) -> None:
    runner = RecordingRunner()
    TriggerManager(storage, runners={"r": runner}, default_runner="r").update_configuration(config)


def test_sessions_storing_one_configuration_share_its_table(every_storage_factory: Any) -> None:
    make = every_storage_factory
    _configure(make("memo-a"), CONFIG)
    _configure(make("memo-b"), CONFIG)
    # Fresh storage objects, as a worker opens one per message.
    a = make("memo-a").load().state.tasks
    b = make("memo-b").load().state.tasks
    assert a == b == parse_configuration(CONFIG)
    if not isinstance(make("memo-a"), MemoryStorage):  # memory keeps the objects it was given
        assert a is b
    # A session whose configuration changes gets its own; the other keeps the shared one.
    changed = {**CONFIG, "t_c": {"after": ["t_b"], "run": DevNullTask.name}}
    _configure(make("memo-a"), changed)
    assert make("memo-a").load().state.tasks == parse_configuration(changed)
    assert make("memo-b").load().state.tasks == parse_configuration(CONFIG)
    if not isinstance(make("memo-b"), MemoryStorage):
        assert make("memo-b").load().state.tasks is b


def test_the_memory_store_is_not_affected() -> None:
    store = MemoryStore()
    _configure(MemoryStorage("m", store), CONFIG)
    assert MemoryStorage("m", store).load().state.tasks == parse_configuration(CONFIG)
