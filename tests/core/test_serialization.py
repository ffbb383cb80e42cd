"""State <-> JSON: round trips, schema versions, malformed documents."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings

from triggers_core import engine
from triggers_core.engine.serialization import (
    SCHEMA_VERSION,
    config_from_json,
    config_to_json,
    dumps,
    header_from_json,
    header_to_json,
    instance_from_json,
    instance_to_json,
    loads,
    state_from_json,
    state_to_json,
)
from triggers_core.engine.state import SessionState, Status
from triggers_core.errors import SerializationError
from triggers_core.testing.strategies import session_states

NOW = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
CONFIG = {
    "t_a": {"after": ["a"], "run": "A", "withParams": {"a": {"p": 1}}, "queue": "q"},
    "t_b": {"after": ["t_a", "b"], "run": "B", "andEvery": "e", "unless": ["u"]},
}


def sample_state() -> SessionState:
    state = engine.update_configuration(SessionState(), CONFIG).state
    state = engine.fire(state, "a", {"x": [1, 2.5, None, True]}, now=NOW).state
    state = engine.mark_running(state, "t_a#0", now=NOW).state
    state = engine.finish(state, "t_a#0", {"score": 3}, now=NOW).state
    return engine.fire(state, "u", {}, now=NOW).state


def round_trip(state: SessionState) -> SessionState:
    return state_from_json(loads(dumps(state_to_json(state))))


def test_state_round_trips_through_json_text() -> None:
    state = sample_state()
    assert {i.status for i in state.instances.values()} == {Status.FINISHED, Status.ABANDONED}

    assert round_trip(state) == state


def test_document_layout() -> None:
    doc = state_to_json(sample_state())

    assert doc["schemaVersion"] == SCHEMA_VERSION == 3
    assert doc["tasks"]["t_a"] == CONFIG["t_a"]
    assert doc["unsettled"] == {}
    assert doc["settled"] == {"t_a": ["a"], "t_b": ["b", "e", "t_a", "u"]}  # none waiting
    assert doc["latestKwargs"] == {"a": {"x": [1, 2.5, None, True]}, "t_a": {"score": 3}, "u": {}}
    assert doc["counters"] == {"t_a": 1, "t_b": 1}
    assert doc["instances"]["t_b#0"] == {
        "schemaVersion": 3,
        "name": "t_b#0",
        "task": "t_b",
        "status": "abandoned",
        "kwargs": {"t_a": {"score": 3}},
        "unlessFired": ["u"],
        "metadata": {
            "created": NOW.isoformat(),
            "lastModified": NOW.isoformat(),
            "timestamps": {"unstarted": NOW.isoformat(), "abandoned": NOW.isoformat()},
            "depth": 0,
            "cascadeDepth": 1,  # created by the cascade of t_a#0
        },
        "retries": 0,
        "logLevel": 0,
        "logsResolved": False,
    }


def test_dumps_is_compact_and_deterministic() -> None:
    assert (
        dumps({"b": 1, "a": [1, {"d": None, "c": True}]}) == '{"a":[1,{"c":true,"d":null}],"b":1}'
    )


def test_header_and_instances_round_trip_separately() -> None:
    state = sample_state()
    instances = {
        name: instance_from_json(loads(dumps(instance_to_json(i))))
        for name, i in state.instances.items()
    }

    tasks = config_from_json(loads(dumps(config_to_json(state.tasks))))
    header = loads(dumps(header_to_json(state)))

    assert header_from_json(header, instances, tasks=tasks) == state
    assert "instances" not in header
    assert "tasks" not in header


def test_a_header_without_its_tasks_needs_them() -> None:
    with pytest.raises(SerializationError, match="session: missing field 'tasks'"):
        header_from_json(header_to_json(sample_state()))


def test_unsettled_round_trips() -> None:
    state = engine.update_configuration(
        SessionState(), {"t_w": {"after": ["x", "y"], "andEvery": "e", "run": "W"}}
    ).state
    state = engine.fire(state, "x", {}, now=NOW).state  # t_w#0 has not recorded e yet
    assert state.unsettled == {"t_w": frozenset({"t_w#0"})}

    doc = loads(dumps(state_to_json(state)))

    assert doc["unsettled"] == {"t_w": ["t_w#0"]}
    assert state_from_json(doc) == state


def test_settled_round_trips_and_may_be_absent() -> None:
    state = engine.update_configuration(
        SessionState(), {"t_w": {"after": ["x", "y"], "unless": ["u"], "run": "W"}}
    ).state
    state = engine.fire(state, "x", {}, now=NOW).state  # t_w#0 waits for y
    assert state.settled == {"t_w": frozenset({"x"})}

    doc = loads(dumps(state_to_json(state)))

    assert doc["settled"] == {"t_w": ["x"]}
    assert state_from_json(doc) == state
    # Written before ``settled`` existed: nothing known, which is always correct.
    del doc["settled"]
    assert state_from_json(doc).settled == {}


@pytest.mark.parametrize(
    ("settled", "message"),
    [
        ([], "session.settled: unexpected list"),
        ({"t_w": "x"}, "session.settled.t_w: expected a list of names"),
        ({"t_w": [1]}, "session.settled.t_w: expected a list of names"),
    ],
)
def test_a_malformed_settled_field_is_refused(settled: Any, message: str) -> None:
    doc = state_to_json(engine.update_configuration(SessionState(), CONFIG).state)
    doc["settled"] = settled
    with pytest.raises(SerializationError) as caught:
        state_from_json(doc)
    assert str(caught.value) == message


def test_a_version_1_document_loads_with_unsettled_derived_from_its_instances() -> None:
    state = engine.update_configuration(
        SessionState(), {"t_w": {"after": ["x", "y"], "andEvery": "e", "run": "W"}}
    ).state
    state = engine.fire(state, "x", {}, now=NOW).state  # t_w#0 has not recorded e yet
    doc = state_to_json(state)
    # What version 1 wrote: the same, minus ``unsettled`` and ``settled``.
    del doc["unsettled"]
    del doc["settled"]
    doc["schemaVersion"] = 1
    for instance in doc["instances"].values():
        instance["schemaVersion"] = 1

    loaded = state_from_json(doc)

    assert loaded.unsettled == {"t_w": frozenset({"t_w#0"})}
    assert loaded.settled == {"t_w": frozenset({"x"})}  # derived exactly
    assert loaded == state


@settings(max_examples=100, deadline=None)
@given(session_states(groups=True))
def test_every_generated_state_round_trips(state: SessionState) -> None:
    """Property: every reachable state s survives JSON text unchanged.

    state_from_json(loads(dumps(state_to_json(s)))) == s
    """
    assert round_trip(state) == state


def _doc() -> dict[str, Any]:
    return copy.deepcopy(state_to_json(sample_state()))


def test_unknown_future_schema_version_is_refused() -> None:
    doc = _doc()
    doc["schemaVersion"] = SCHEMA_VERSION + 1

    with pytest.raises(SerializationError) as caught:
        state_from_json(doc)

    assert str(caught.value) == (
        "session: schemaVersion 4 is newer than this library understands (3); "
        "upgrade triggers to read it"
    )


def test_unknown_future_schema_version_of_an_instance_is_refused() -> None:
    doc = _doc()
    doc["instances"]["t_a#0"]["schemaVersion"] = 99

    with pytest.raises(SerializationError, match="schemaVersion 99 is newer than this library"):
        state_from_json(doc)


def _set(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    doc = _doc()
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("schemaVersion",), _DELETE, "session: missing or invalid schemaVersion None"),
        (("schemaVersion",), "1", "session: missing or invalid schemaVersion '1'"),
        (("schemaVersion",), True, "session: missing or invalid schemaVersion True"),
        (("schemaVersion",), 0, "session: invalid schemaVersion 0"),
        (("tasks",), [], "session.tasks: unexpected list"),
        (("counters",), _DELETE, "session: missing field 'counters'"),
        (("counters", "t_a"), -1, "session.counters.t_a: expected a count"),
        (("counters", "t_a"), True, "session.counters.t_a: expected a count"),
        (("instances",), _DELETE, "session: missing field 'instances'"),
        (("latestKwargs", "a"), 5, "session.latestKwargs.a: expected an object"),
        (
            ("tasks", "t_a", "run"),
            _DELETE,
            "session.tasks: t_a.run: required (the name of the trigger task to execute)",
        ),
        (("instances", "t_a#0"), "x", "session.instances.t_a#0: expected an object, got str"),
        (
            ("instances", "t_a#0", "status"),
            "done",
            "instance 't_a#0'.status: unknown status 'done'",
        ),
        (
            ("instances", "t_a#0", "task"),
            "t_b",
            "instance 't_a#0': name does not match task 't_b'",
        ),
        (
            ("instances", "t_a#0", "name"),
            "t_a#1",
            "session.instances.t_a#0: name field is 't_a#1'",
        ),
        (
            ("instances", "t_a#0", "kwargs", "a"),
            [1],
            "instance 't_a#0'.kwargs.a: expected an object",
        ),
        (
            ("instances", "t_a#0", "unlessFired"),
            [1],
            "instance 't_a#0'.unlessFired: expected a list of strings",
        ),
        (("instances", "t_a#0", "retries"), "0", "instance 't_a#0'.retries: unexpected str"),
        (("instances", "t_a#0", "retries"), False, "instance 't_a#0'.retries: unexpected bool"),
        (("instances", "t_a#0", "metadata"), _DELETE, "instance 't_a#0': missing field 'metadata'"),
    ],
)
def test_malformed_documents_raise_a_clear_error(
    path: tuple[str, ...], value: Any, message: str
) -> None:
    with pytest.raises(SerializationError) as caught:
        state_from_json(_set(path, value))

    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "session: not valid JSON (Expecting property name"),
        ("[1, 2]", "session: expected a JSON object, got list"),
        (b"\xff\xfe\x00", "session: not valid JSON"),
    ],
)
def test_loads_rejects_non_objects(text: str | bytes, message: str) -> None:
    with pytest.raises(SerializationError) as caught:
        loads(text, "session")

    assert str(caught.value).startswith(message)


def test_non_mapping_documents_are_rejected() -> None:
    with pytest.raises(SerializationError, match="session: expected an object, got list"):
        state_from_json([])  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["t_a#²", "t_a#01", "t_a#", "t_a#-1", "t_a#0#1"])
def test_instance_names_must_be_task_hash_canonical_number(name: str) -> None:
    doc = _doc()
    instance = doc["instances"].pop("t_a#0")
    instance["name"] = name
    if name == "t_a#0#1":
        instance["task"] = "t_a#0"
    doc["instances"][name] = instance

    with pytest.raises(SerializationError, match="name does not match task"):
        state_from_json(doc)
