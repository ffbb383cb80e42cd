"""HeaderCodec: the same text and states as header_to_json/header_from_json, with reuse."""

from __future__ import annotations

from datetime import UTC, datetime

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triggers_core import engine
from triggers_core.engine.serialization import (
    SPLIT_HEADER_VERSION,
    HeaderCodec,
    dumps,
    header_from_json,
    header_to_json,
    loads,
)
from triggers_core.engine.state import SessionState
from triggers_core.errors import SerializationError
from triggers_core.testing.strategies import json_kwargs, session_states, triggers_used

NOW = datetime(2024, 5, 6, tzinfo=UTC)


def plain_text(state: SessionState) -> str:
    return dumps(header_to_json(state))


def plain_state(text: str, state: SessionState) -> SessionState:
    return header_from_json(loads(text, "session header"), tasks=state.tasks)


def header(state: SessionState) -> SessionState:
    return attrs.evolve(state, instances={})


@settings(max_examples=100, deadline=None)
@given(st.data(), session_states(min_triggers=2, max_triggers=8, groups=True))
def test_a_codec_reused_across_operations_agrees_with_the_plain_functions(
    data: st.DataObject, state: SessionState
) -> None:
    """Property: codecs used as storages use them (two storage objects, or processes,
    on one session: either encodes the next state, either decodes what was stored,
    over a random run of fires, with ``settled`` sometimes forgotten) produce exactly
    the text of ``dumps(header_to_json(s))`` and exactly the state
    ``header_from_json`` gives.
    """
    codecs = (HeaderCodec(), HeaderCodec())
    for _ in range(data.draw(st.integers(1, 8), label="steps")):
        text = data.draw(st.sampled_from(codecs), label="writer").encode(state)
        codec = data.draw(st.sampled_from(codecs), label="reader")
        assert text == plain_text(state)
        decoded = codec.decode(text, state.tasks)
        assert decoded == plain_state(text, state) == header(state)
        assert decoded.settled == state.settled
        assert decoded.counters == state.counters
        if data.draw(st.booleans(), label="forget settled"):
            state = attrs.evolve(state, settled={})
        trigger = data.draw(st.sampled_from([*triggers_used(state.tasks), "unused"]))
        state = engine.fire(state, trigger, data.draw(json_kwargs()), now=NOW).state


def state_of(waiting: int) -> SessionState:
    config = {f"t_{k}": {"after": ["x", f"never{k}"], "run": "T"} for k in range(waiting)}
    state = engine.update_configuration(SessionState(), config).state
    return engine.fire(state, "x", {"n": 0}, now=NOW).state


def test_a_header_written_elsewhere_is_decoded_afresh() -> None:
    codec, elsewhere = HeaderCodec(), HeaderCodec()
    state = engine.update_configuration(
        SessionState(), {"t_e": {"after": ["x"], "andEvery": "x", "run": "T"}}
    ).state
    state = engine.fire(state, "x", {"n": 0}, now=NOW).state
    codec.decode(codec.encode(state), state.tasks)  # every field remembered
    later = engine.fire(state, "x", {"n": 1}, now=NOW).state
    text = elsewhere.encode(later)  # the counter of t_e is 2 now: a text just as long
    assert len(text) == len(codec.encode(state))
    assert codec.decode(text, later.tasks) == header(later)


def test_decoded_values_are_the_callers_own() -> None:
    codec = HeaderCodec()
    state = state_of(3)
    text = codec.encode(state)
    first = codec.decode(text, state.tasks)
    first.counters["t_0"] = 99  # type: ignore[index] # a caller breaking the read-only rule
    first.settled["t_1"] = frozenset()  # type: ignore[index]
    again = codec.decode(text, state.tasks)
    assert again.counters == state.counters
    assert again.settled == state.settled


def test_a_state_changed_in_place_is_encoded_as_it_is_now() -> None:
    codec = HeaderCodec()
    state = state_of(3)
    codec.encode(state)
    counters = dict(state.counters)
    changed = attrs.evolve(state, counters=counters)
    counters["t_2"] = 7
    assert codec.encode(changed) == plain_text(changed)
    assert '"t_2":7' in codec.encode(changed)


def test_a_header_of_another_layout_still_decodes() -> None:
    codec = HeaderCodec()
    state = state_of(2)
    codec.decode(codec.encode(state), state.tasks)  # warm
    older = header_to_json(state)
    del older["settled"]  # written before ``settled`` existed
    decoded = codec.decode(dumps(older), state.tasks)
    assert decoded.settled == {}
    assert decoded.counters == state.counters
    spaced = codec.decode(
        '{"counters": {}, "latestKwargs": {}, "schemaVersion": 2, "unsettled": {}}', state.tasks
    )
    assert spaced == SessionState(tasks=state.tasks)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"t_0":1', '"t_0":-1', "session.counters.t_0: expected a count"),
        ('"t_1":["x"]', '"t_1":"x"', "session.settled.t_1: expected a list of names"),
        ('"x":{"n":0}', '"x":[0]', "session.latestKwargs.x: expected an object"),
        ('"schemaVersion":3', '"schemaVersion":9', "schemaVersion 9 is newer"),
        ('{"counters"', '["counters"', "session header: not valid JSON"),
    ],
)
def test_a_malformed_header_gets_the_usual_error_even_after_good_ones(
    old: str, new: str, message: str
) -> None:
    codec = HeaderCodec()
    state = state_of(2)
    text = codec.encode(state)
    codec.decode(text, state.tasks)  # every field remembered
    assert old in text
    broken = text.replace(old, new, 1)
    with pytest.raises(SerializationError) as caught:
        codec.decode(broken, state.tasks)
    with pytest.raises(SerializationError) as plain:
        header_from_json(loads(broken, "session header"), tasks=state.tasks)
    assert str(caught.value) == str(plain.value)
    assert message in str(caught.value)


@settings(max_examples=50, deadline=None)
@given(session_states(min_triggers=2, max_triggers=8, groups=True))
def test_a_split_header_names_the_triggers_and_reads_back_without_their_values(
    state: SessionState,
) -> None:
    """Property: a split header (latest kwargs stored apart) decodes, through the fast
    path and through the general one (keys in another order), to the header without
    its latest kwargs plus the names of the triggers that have them; the plain reader
    of the schema version before it refuses it."""
    codec = HeaderCodec()
    text = codec.encode(state, split=True)
    assert "latestKwargs" not in text
    expected = attrs.evolve(header(state), latest_kwargs={})
    for decoder in (codec, HeaderCodec()):
        decoded, triggers = decoder.decode_split(text, state.tasks)
        assert decoded == expected
        assert triggers == tuple(sorted(state.latest_kwargs))
    doc = loads(text)  # schemaVersion first: another text, the same document
    slow, triggers = HeaderCodec().decode_split(
        f'{{"schemaVersion":{SPLIT_HEADER_VERSION},'
        + dumps({k: v for k, v in doc.items() if k != "schemaVersion"})[1:],
        state.tasks,
    )
    assert slow == expected
    assert triggers == tuple(sorted(state.latest_kwargs))
    with pytest.raises(SerializationError, match="newer than this library understands"):
        plain_state(text, state)
    with pytest.raises(SerializationError, match="stored apart"):
        HeaderCodec().decode(text, state.tasks)


def test_a_split_header_with_a_bad_trigger_list_is_refused() -> None:
    for bad in ('"tick"', "[1]", "{}"):
        text = (
            f'{{"counters":{{}},"latestTriggers":{bad},"schemaVersion":{SPLIT_HEADER_VERSION},'
            '"settled":{},"unsettled":{}}'
        )
        with pytest.raises(SerializationError, match="latestTriggers"):
            HeaderCodec().decode_split(text, {})
