"""After its own commit, a key-value storage on a value-token client reads nothing first.

Django's Redis cache derives its tokens from the stored bytes
(:class:`~triggers_backends.kv_client.ValueTokenClient`), so the storage takes
the token of the active document it just wrote: the next compare-and-swap of
that version (a finish computed on the snapshot its start left, issue 22)
sends the commit alone. Each test fails if that token let a stale write in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from triggers_core import TriggerManager
from triggers_core.engine.state import Status
from triggers_core.errors import ConflictError
from triggers_core.runtime.storage import Storage
from triggers_core.testing.sample_tasks import DevNullTask
from triggers_core.testing.storage_contract import RecordingRunner

CONFIG = {"t_a": {"after": ["x"], "run": DevNullTask.name}}


def _count_reads(storage: Any) -> list[str]:
    """Record the client's reads of keys with tokens (``gets`` and its batched forms)."""
    client = storage.client
    seen: list[str] = []
    for name in ("gets", "gets_with", "gets_many"):
        inner = getattr(client, name, None)
        if inner is None:
            continue

        def counted(*args: Any, _inner: Any = inner, _name: str = name, **kwargs: Any) -> Any:
            seen.append(_name)
            return _inner(*args, **kwargs)

        setattr(client, name, counted)
    return seen


@pytest.fixture
def make(django_cache_storage_factory: Callable[[str], Storage]) -> Callable[[str], Storage]:
    return django_cache_storage_factory


def test_the_next_swap_after_a_commit_reads_nothing(
    make: Callable[[str], Storage], session_uid: str
) -> None:
    storage = make(session_uid)
    manager = TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")
    manager.update_configuration(CONFIG)
    manager.fire("x", {"n": 1})
    snapshot = storage.load()
    first = storage.compare_and_swap(snapshot.version, snapshot.state, _no_changes())
    reads = _count_reads(storage)

    second = storage.compare_and_swap(first, snapshot.state, _no_changes())

    assert reads == []
    assert second == first + 1
    assert make(session_uid).load().version == second


def test_a_write_by_another_storage_makes_that_swap_fail(
    make: Callable[[str], Storage], session_uid: str
) -> None:
    storage = make(session_uid)
    manager = TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")
    manager.update_configuration(CONFIG)
    snapshot = storage.load()
    first = storage.compare_and_swap(snapshot.version, snapshot.state, _no_changes())
    other = TriggerManager(
        make(session_uid), runners={"rec": RecordingRunner()}, default_runner="rec"
    )
    other.fire("x", {"n": "other"})  # the version moves on to first + 1, elsewhere

    with pytest.raises(ConflictError):
        storage.compare_and_swap(first, snapshot.state, _no_changes())

    state = make(session_uid).load_full().state
    assert {n: i.status for n, i in state.instances.items()} == {"t_a#0": Status.SCHEDULED}
    assert state.instances["t_a#0"].kwargs == {"x": {"n": "other"}}


def _no_changes() -> Any:
    from triggers_core.engine.scopes import Changes

    return Changes()
