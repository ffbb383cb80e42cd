"""End-to-end behaviour of idempotent fires on every storage kind: duplicates call no hook,
dispatch nothing and write nothing; the log says so without kwargs or keys; a finished
instance finished again (an operator forced it back) does not cascade twice."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import pytest

from triggers_core import (
    LIFECYCLE_LOGGER,
    MemoryStorage,
    MemoryStore,
    Snapshot,
    Status,
    Storage,
    TaskInstance,
    TriggerManager,
    UnsupportedOperationError,
)
from triggers_core.engine.idempotency import cascade_key
from triggers_core.engine.scopes import Changes, Scope, Selector
from triggers_core.engine.state import SessionState
from triggers_core.runtime.storage import Version
from triggers_core.testing.assertions import assert_instance_finished
from triggers_core.testing.sample_tasks import DevNullTask, PassThruTask
from triggers_core.testing.storage_contract import RecordingRunner

PASS = PassThruTask.name
NULL = DevNullTask.name
CASCADE = {
    "t_first": {"after": ["go"], "run": PASS},
    "t_next": {"after": ["t_first"], "andEvery": "t_first", "run": NULL},
}


class HookRecorder(TriggerManager):
    """Records every hook call."""

    calls: ClassVar[list[tuple[str, Any]]] = []

    def _post_fire(self, trigger_name: str, scheduled_instances: list[TaskInstance]) -> None:
        self.calls.append((trigger_name, [i.name for i in scheduled_instances]))


def test_a_duplicate_calls_no_hook_dispatches_nothing_and_writes_nothing(
    storage_factory: Any, session_uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    HookRecorder.calls = []
    manager = HookRecorder(storage_factory(session_uid))
    manager.update_configuration(CASCADE)
    first = manager.fire("go", {"secret": "kwargs-value"}, idempotency_key="delivery-7")
    assert [i.name for i in first] == ["t_first#0"]
    manager.get_runner().join_all()
    assert_instance_finished(manager.storage, "t_next#0")
    version = manager.storage.load().version
    calls = list(HookRecorder.calls)
    caplog.set_level(logging.INFO, LIFECYCLE_LOGGER)
    again = manager.fire("go", {"secret": "other-value"}, idempotency_key="delivery-7")
    manager.get_runner().join_all()
    assert [(i.name, i.status) for i in again] == [("t_first#0", Status.FINISHED)]
    assert manager.storage.load().version == version
    assert HookRecorder.calls == calls  # no _post_fire, and nothing ran
    assert sorted(manager.storage.instances) == ["t_first#0", "t_next#0"]
    assert manager.storage.latest_kwargs["go"] == {"secret": "kwargs-value"}
    (record,) = [r for r in caplog.records if getattr(r, "duplicate", False)]
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        f"session {session_uid!r}: go fired again with an idempotency key it already used: "
        "a duplicate, nothing changed (the first fire scheduled t_first#0)"
    )
    assert (record.trigger, record.scheduled) == ("go", ["t_first#0"])  # type: ignore[attr-defined]
    text = repr(record.__dict__)
    assert "delivery-7" not in text
    assert "value" not in text


def test_a_finished_instance_forced_back_does_not_cascade_twice(
    storage_factory: Any, session_uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    """What the Celery worker does (``guard_cascade=True``), driven by hand."""
    HookRecorder.calls = []
    runner = RecordingRunner()
    manager = HookRecorder(
        storage_factory(session_uid), runners={"recording": runner}, default_runner="recording"
    )
    manager.update_configuration(CASCADE)
    manager.fire("go", {"n": 1})
    manager.run_instance("t_first#0", guard_cascade=True)
    assert sorted(manager.storage.instances) == ["t_first#0", "t_next#0"]
    # An operator forces t_first#0 back to scheduled; a redelivered message runs it.
    manager.update_instance_status("t_first#0", Status.SCHEDULED)
    caplog.set_level(logging.INFO, LIFECYCLE_LOGGER)
    rerun = manager.run_instance("t_first#0", guard_cascade=True)
    assert rerun is not None
    assert rerun.status is Status.FINISHED
    assert sorted(manager.storage.instances) == ["t_first#0", "t_next#0"]  # no t_next#1
    assert [c for c in HookRecorder.calls if c[0] == "t_first"] == [("t_first", ["t_next#0"])]
    assert runner.dispatched == ["t_first#0", "t_next#0"]
    (record,) = [r for r in caplog.records if getattr(r, "duplicate", False)]
    assert record.getMessage() == (
        f"session {session_uid!r}: t_first#0 finished again; its cascade (t_first) happened "
        "at its first finish and is not repeated (it scheduled t_next#0)"
    )
    assert record.instance == "t_first#0"  # type: ignore[attr-defined]
    # An operator's explicit cascade still fires (it is not a finish).
    manager.update_instance_status("t_first#0", Status.FINISHED, cascade=True)
    assert sorted(manager.storage.instances) == ["t_first#0", "t_next#0", "t_next#1"]


def test_in_process_runs_do_not_record_cascades(storage_factory: Any, session_uid: str) -> None:
    """In-process runners get each instance once: their finishes write no fire record."""
    runner = RecordingRunner()
    manager = TriggerManager(
        storage_factory(session_uid), runners={"recording": runner}, default_runner="recording"
    )
    manager.update_configuration(CASCADE)
    manager.fire("go")
    manager.run_instance("t_first#0")
    key = cascade_key("t_first", "t_first#0")
    assert manager.storage.load(Scope(fire_keys=frozenset({key}))).state.fire_records == {}
    manager.run_instance("t_next#0")
    manager.update_instance_status("t_first#0", Status.SCHEDULED)
    manager.run_instance("t_first#0", guard_cascade=True)  # no record of the first cascade
    assert runner.dispatched == ["t_first#0", "t_next#0", "t_next#1"]


def test_a_replayed_instance_cascades_under_its_own_name(
    storage_factory: Any, session_uid: str
) -> None:
    manager = TriggerManager(storage_factory(session_uid))
    manager.update_configuration(CASCADE)
    manager.fire("go")
    manager.get_runner().join_all()
    manager.update_instance_status("t_first#0", Status.FAILED)
    manager.replay_failed_instance("t_first#0")
    manager.get_runner().join_all()
    assert_instance_finished(manager.storage, "t_first#1")
    assert sorted(manager.storage.instances) == ["t_first#0", "t_first#1", "t_next#0", "t_next#1"]


# -- a storage that keeps no fire records (a third-party one) -------------------------


class ThirdPartyStorage(Storage):
    """Implements only the three primitives (on a MemoryStorage); knows nothing of records."""

    backend_name = "third-party"

    def __init__(self, uid: str, store: MemoryStore) -> None:
        super().__init__(uid)
        self._inner = MemoryStorage(uid, store)

    def load(self, scope: Scope | Selector = Scope()) -> Snapshot:  # noqa: B008 - frozen
        assert not isinstance(scope, Scope) or not scope.fire_keys, "asked for records"
        return self._inner.load(scope)

    def load_full(self) -> Snapshot:
        return self._inner.load_full()

    def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        assert not changes.fire_records, "given records to write"
        return self._inner.compare_and_swap(expected, state, changes)


def test_a_storage_that_keeps_no_records_refuses_keys_and_runs_as_before() -> None:
    storage = ThirdPartyStorage("s", MemoryStore())
    manager = TriggerManager(storage)
    manager.update_configuration(CASCADE)
    with pytest.raises(UnsupportedOperationError) as caught:
        manager.fire("go", idempotency_key="k")
    message = str(caught.value)
    assert "third-party" in message
    assert "ThirdPartyStorage" in message
    assert "idempotent fires" in message
    assert storage.load().version == 1  # refused before anything was written
    manager.fire("go")
    manager.get_runner().join_all()
    manager.update_instance_status("t_first#0", Status.SCHEDULED)
    manager.run_instance("t_first#0", guard_cascade=True)  # unguarded: cascades again
    manager.get_runner().join_all()
    assert sorted(storage.instances) == ["t_first#0", "t_next#0", "t_next#1"]


def test_the_default_check_names_the_storage() -> None:
    with pytest.raises(UnsupportedOperationError, match="third-party: ThirdPartyStorage"):
        ThirdPartyStorage("s", MemoryStore()).check_fire_keys()
