"""Every error survives pickling (multiprocessing, result backends) with its fields and text."""

from __future__ import annotations

import pickle

import pytest

from triggers_core import errors as E

CASES: list[E.TriggersError] = [
    E.ConfigurationError(["t_a.run: required", "t_b: bad"]),
    E.InvalidKwargsError("trigger_kwargs.a[0]", "set is not JSON-serializable"),
    E.InvalidTransitionError("replay", "t_a#0", "finished", "only failed instances can replay"),
    E.UnknownInstanceError("t_a#9", "session-1"),
    E.UnknownTaskError("app.Nope", ["app.Yes"]),
    E.UnknownTriggerError("scroe", "session-1", "; did you mean 'score'?"),
    E.StorageError("database is down", backend="postgresql", session="s"),
    E.ConflictError("version moved", backend="sqlite", session="s"),
    E.ConcurrencyError("gave up", backend="memory", session="s"),
    E.SchemaMissingError("run create_schema()", backend="mysql", session="s"),
    E.DispatchError([("t_a#0", RuntimeError("broker down"))]),
    E.SerializationError("session: not valid JSON"),
    E.RegistryError("no storage named 'x'"),
    E.MaxRetriesExceeded("t_a#3 asked to retry after 3 retries"),
]

FIELDS = ("problems", "path", "instance", "status", "session", "backend", "name", "known")


@pytest.mark.parametrize("error", CASES, ids=lambda e: type(e).__name__)
def test_errors_round_trip_through_pickle(error: E.TriggersError) -> None:
    restored = pickle.loads(pickle.dumps(error))

    assert type(restored) is type(error)
    assert str(restored) == str(error)
    for field in FIELDS:
        assert getattr(restored, field, None) == getattr(error, field, None), field
