"""The fire-record part of the storage contract: idempotency keys on every backend.

:class:`~triggers_core.testing.storage_contract.StorageContract` inherits
:class:`FireRecordsContract`, so every backend's test class runs these tests;
nothing needs to be done to get them. What they check (see
:mod:`triggers_core.runtime.storage` and :mod:`triggers_core.engine.idempotency`):

* ``load`` returns the records its scope names, in the same snapshot as the
  rest, and no others; ``compare_and_swap`` creates records atomically with
  everything else; a record already stored is a conflict and nothing is
  written; a stale write creates no record;
* through :class:`~triggers_core.runtime.manager.TriggerManager`: a keyed fire applies
  once and a duplicate returns the first fire's instances as stored now,
  writing nothing; the same key on another trigger is another fire; a finished
  instance cascades once even if it finishes again;
* threads, and OS processes (with ``supports_multiprocess``), that fire the
  same keys at once get exactly the instances of one fire per key, each
  scheduled once, and all agree on them.

A backend that keeps no fire records (its ``check_fire_keys`` raises
:class:`~triggers_core.errors.UnsupportedOperationError`) sets
``keeps_fire_records = False``: the suite then checks that keyed fires are
refused before anything is written and that instances run as before.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

from triggers_core import engine
from triggers_core.engine.idempotency import FireKey, fire_key
from triggers_core.engine.scopes import Changes, Scope
from triggers_core.engine.serialization import instance_to_json
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.errors import ConflictError, UnsupportedOperationError
from triggers_core.runtime.manager import TriggerManager
from triggers_core.runtime.registry import open_storage
from triggers_core.runtime.storage import Storage
from triggers_core.testing import sample_tasks  # noqa: F401 - registers the sample tasks
from triggers_core.testing._contract_support import (
    EVERY_TICK,
    PatientManager,
    RecordingRunner,
    StorageContractBase,
    race_in_threads,
    race_processes,
    report_to,
    state_with,
)

__all__ = ["FireRecordsContract", "run_keyed_race"]

_BOTH = {**EVERY_TICK, "t_alpha": {"after": ["a"], "run": "contract_task"}}
#: t_first's cascade creates a t_next instance each time it happens (andEvery).
_CASCADE = {
    "t_first": {"after": ["go"], "run": "triggers.DevNullTask"},
    "t_next": {"after": ["t_first"], "andEvery": "t_first", "run": "triggers.DevNullTask"},
}
_TASKS = engine.update_configuration(SessionState(), _BOTH).state.tasks


def _instance(name: str, marker: object = 0) -> TaskInstance:
    return TaskInstance(
        name=name,
        task_name=name.rsplit("#", 1)[0],
        status=Status.SCHEDULED,
        kwargs={"tick": {"marker": marker}},
        metadata={"created": "2024-01-01T00:00:00+00:00"},
    )


def _state(*instances: TaskInstance) -> SessionState:
    return state_with(_TASKS, instances)


def _write(
    instances: tuple[str, ...] = (),
    records: Mapping[FireKey, tuple[str, ...]] | None = None,
    *,
    created: tuple[str, ...] = (),
) -> Changes:
    return Changes(
        instances=frozenset(instances),
        created=frozenset(created),
        config=True,
        fire_records=dict(records or {}),
    )


class FireRecordsContract(StorageContractBase):
    """Fire-record tests, inherited by ``StorageContract`` (see the module docstring)."""

    #: The storage keeps fire records (``check_fire_keys`` accepts them).
    keeps_fire_records: ClassVar[bool] = True
    #: Keys fired by each racing thread or process (each key by all of them).
    keyed_race_keys: ClassVar[int] = 20

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in dir(FireRecordsContract):
            if name.startswith("test_keyed_"):
                wanted = cls.keeps_fire_records and (
                    cls.supports_multiprocess or name != "test_keyed_multiprocess_race"
                )
                cls._include_test(FireRecordsContract, name, wanted)

    # -- the storage port -------------------------------------------------------------

    def test_check_fire_keys_says_whether_records_are_kept(self, uid: str) -> None:
        manager, runner = self._manager(uid)
        if self.keeps_fire_records:
            manager.storage.check_fire_keys()
            return
        with pytest.raises(UnsupportedOperationError) as caught:
            manager.storage.check_fire_keys()
        assert manager.storage.backend_name in str(caught.value)
        manager.update_configuration(_CASCADE)
        version = manager.storage.load().version
        with pytest.raises(UnsupportedOperationError, match="idempotent fires"):
            manager.fire("go", idempotency_key="delivery-1")
        assert manager.storage.load().version == version  # refused before any write
        # Without keys, everything works as before: a finished instance forced back
        # and finished again cascades again (nothing records its first cascade).
        assert [i.name for i in manager.fire("go")] == ["t_first#0"]
        manager.run_instance("t_first#0", guard_cascade=True)
        manager.update_instance_status("t_first#0", Status.SCHEDULED)
        manager.run_instance("t_first#0", guard_cascade=True)
        assert runner.dispatched == ["t_first#0", "t_next#0", "t_next#1"]

    def test_keyed_records_load_in_the_snapshot_that_names_them(self, uid: str) -> None:
        storage = self.make_storage(uid)
        one, empty, absent = fire_key("tick", "1"), fire_key("tick", "2"), fire_key("tick", "3")
        other_trigger = fire_key("a", "1")
        records = {one: ("t_every#0",), empty: (), other_trigger: ("t_alpha#0", "t_every#0")}
        version = storage.compare_and_swap(
            None, _state(_instance("t_every#0")), _write(("t_every#0",), records)
        )
        for reader in (storage, self.make_storage(uid)):
            snapshot = reader.load(Scope(fire_keys=frozenset({one, empty, absent})))
            assert snapshot.version == version
            assert dict(snapshot.state.fire_records) == {one: ("t_every#0",), empty: ()}
            assert set(snapshot.state.instances) <= {"t_every#0"}
            assert dict(reader.load().state.fire_records) == {}  # only what is asked for
            named = reader.load(Scope(names=frozenset({"t_every#0"}), fire_keys={other_trigger}))
            assert dict(named.state.fire_records) == {other_trigger: ("t_alpha#0", "t_every#0")}
            assert set(named.state.instances) == {"t_every#0"}

            def select(header: SessionState) -> Scope:
                assert header.counters == {"t_every": 1}
                return Scope(fire_keys=frozenset({one}))

            assert dict(reader.load(select).state.fire_records) == {one: ("t_every#0",)}

    def test_keyed_record_already_stored_is_a_conflict_and_nothing_is_written(
        self, uid: str
    ) -> None:
        storage = self.make_storage(uid)
        key = fire_key("tick", "delivery-1")
        first = _state(_instance("t_every#0", marker="first"))
        v1 = storage.compare_and_swap(None, first, _write(("t_every#0",), {key: ("t_every#0",)}))
        # A writer that did not see the record (its load did not name it) applies the
        # fire again at the current version: refused, and none of its write lands.
        again = _state(_instance("t_every#0", "first"), _instance("t_every#1", marker="again"))
        with pytest.raises(ConflictError):
            storage.compare_and_swap(
                v1, again, _write(("t_every#1",), {key: ("t_every#1",)}, created=("t_every#1",))
            )
        stored = storage.load_full()
        assert stored.version == v1
        assert set(stored.state.instances) == {"t_every#0"}
        assert stored.state.counters == {"t_every": 1}
        reread = storage.load(Scope(fire_keys=frozenset({key}))).state
        assert dict(reread.fire_records) == {key: ("t_every#0",)}

    def test_keyed_stale_write_creates_no_record(self, uid: str) -> None:
        storage = self.make_storage(uid)
        key = fire_key("tick", "delivery-1")
        v1 = storage.compare_and_swap(None, _state(), _write())
        v2 = storage.compare_and_swap(v1, _state(_instance("t_every#0")), _write(("t_every#0",)))
        with pytest.raises(ConflictError):
            storage.compare_and_swap(v1, _state(), _write((), {key: ()}))
        snapshot = storage.load(Scope(fire_keys=frozenset({key})))
        assert snapshot.version == v2
        assert dict(snapshot.state.fire_records) == {}
        # The same record at the right version is written.
        v3 = storage.compare_and_swap(v2, _state(_instance("t_every#0")), _write((), {key: ()}))
        assert dict(storage.load(Scope(fire_keys={key})).state.fire_records) == {key: ()}
        assert storage.load().version == v3

    # -- through the manager ----------------------------------------------------------

    def test_keyed_fire_applies_once_and_a_duplicate_returns_its_instances_as_now(
        self, uid: str
    ) -> None:
        manager, runner = self._manager(uid)
        manager.update_configuration(_BOTH)
        first = manager.fire("tick", {"n": 1}, idempotency_key="delivery-1")
        assert [(i.name, i.status) for i in first] == [("t_every#0", Status.SCHEDULED)]
        manager.update_instance_status("t_every#0", Status.FINISHED)  # it ran meanwhile
        before = manager.storage.load_full()
        # Another process (storage object) gets the same delivery again, other kwargs.
        other, other_runner = self._manager(uid)
        again = other.fire("tick", {"n": 2}, idempotency_key="delivery-1")
        assert [(i.name, i.status) for i in again] == [("t_every#0", Status.FINISHED)]
        after = manager.storage.load_full()
        assert after.version == before.version  # nothing was written
        assert {n: instance_to_json(i) for n, i in after.state.instances.items()} == {
            n: instance_to_json(i) for n, i in before.state.instances.items()
        }
        assert after.state.latest_kwargs == {"tick": {"n": 1}}  # the first fire's won
        assert runner.dispatched == ["t_every#0"]
        assert other_runner.dispatched == []
        # A new key, or no key, fires as usual; the same key on another trigger too.
        assert [i.name for i in other.fire("tick", idempotency_key="delivery-2")] == ["t_every#1"]
        assert [i.name for i in other.fire("tick")] == ["t_every#2"]
        assert [i.name for i in other.fire("a", idempotency_key="delivery-1")] == ["t_alpha#0"]
        assert other_runner.dispatched == ["t_every#1", "t_every#2", "t_alpha#0"]

    def test_keyed_fire_that_scheduled_nothing_is_recorded_too(self, uid: str) -> None:
        manager, _ = self._manager(uid)
        manager.update_configuration(_BOTH)
        assert manager.fire("nobody-listens", {"x": 1}, idempotency_key="k") == []
        version = manager.storage.load().version
        assert manager.fire("nobody-listens", {"x": 2}, idempotency_key="k") == []
        assert manager.storage.load().version == version
        assert manager.storage.latest_kwargs == {"nobody-listens": {"x": 1}}

    def test_keyed_cascade_happens_once_per_instance(self, uid: str) -> None:
        manager, runner = self._manager(uid)
        manager.update_configuration(_CASCADE)
        manager.fire("go")
        finished = manager.run_instance("t_first#0", guard_cascade=True)
        assert finished is not None
        assert finished.status is Status.FINISHED
        assert runner.dispatched == ["t_first#0", "t_next#0"]
        # An operator forces it back; a redelivered message runs it again.
        manager.update_instance_status("t_first#0", Status.SCHEDULED)
        again = self._manager(uid)[0].run_instance("t_first#0", guard_cascade=True)
        assert again is not None
        assert again.status is Status.FINISHED
        assert runner.dispatched == ["t_first#0", "t_next#0"]  # no second cascade
        assert sorted(manager.storage.instances) == ["t_first#0", "t_next#0"]
        assert manager.storage.latest_kwargs.keys() == {"go", "t_first"}

    # -- races ------------------------------------------------------------------------

    def test_keyed_threads_racing_apply_each_key_once(self, uid: str) -> None:
        setup, _ = self._manager(uid)
        setup.update_configuration(EVERY_TICK)
        keys = self.keyed_race_keys

        def race(index: int, start: threading.Barrier) -> tuple[list[str], dict[int, list[str]]]:
            storage = self.make_storage(uid)
            runner = RecordingRunner()
            manager = PatientManager(storage, runners={"rec": runner}, default_runner="rec")
            try:
                start.wait(timeout=30)
                return runner.dispatched, _fire_keys(manager, index, keys)
            finally:
                storage.close()

        results = race_in_threads(race, threads=self.race_threads, timeout=self.race_timeout)
        _check_keyed_race(
            self.make_storage(uid),
            [r[0] for r in results],
            [r[1] for r in results],
            keys,
        )

    def test_keyed_multiprocess_race(self, uid: str) -> None:
        storage = self.make_storage(uid)
        setup, _ = self._manager(uid)
        setup.update_configuration(EVERY_TICK)
        dispatched, returned = run_keyed_race(
            self.process_url(storage),
            uid,
            processes=self.race_processes,
            keys=self.keyed_race_keys,
            timeout=self.race_timeout,
        )
        _check_keyed_race(storage, dispatched, returned, self.keyed_race_keys)


def _fire_keys(manager: TriggerManager, index: int, keys: int) -> dict[int, list[str]]:
    """Fire ``tick`` once per key, starting at a key that depends on ``index``."""
    returned: dict[int, list[str]] = {}
    for step in range(keys):
        n = (index + step) % keys
        fired = manager.fire("tick", {"n": n, "by": index}, idempotency_key=f"key-{n}")
        returned[n] = [i.name for i in fired]
    return returned


def _check_keyed_race(
    storage: Storage,
    dispatched: list[list[str]],
    returned: list[dict[int, list[str]]],
    keys: int,
) -> None:
    counts = Counter(name for each in dispatched for name in each)
    assert [n for n, c in counts.items() if c > 1] == [], "scheduled more than once"
    state = storage.load_full().state
    assert len(state.instances) == keys, "a key fired more than once (or not at all)"
    assert set(counts) == set(state.instances)
    by_key: dict[int, list[str]] = {}
    for each in returned:
        assert set(each) == set(range(keys))
        for n, names in each.items():
            assert by_key.setdefault(n, names) == names, f"key-{n}: {by_key[n]} vs {names}"
    assert sorted(name for names in by_key.values() for name in names) == sorted(state.instances)
    for n, (name,) in by_key.items():  # the instance holds the kwargs of a fire of its key
        assert state.instances[name].kwargs["tick"]["n"] == n
    keys_asked = frozenset(fire_key("tick", f"key-{n}") for n in range(keys))
    records = storage.load(Scope(fire_keys=keys_asked)).state.fire_records
    assert {key.digest: names for key, names in records.items()} == {
        fire_key("tick", f"key-{n}").digest: tuple(names) for n, names in by_key.items()
    }


def run_keyed_race(
    url: str, uid: str, *, processes: int, keys: int, timeout: float
) -> tuple[list[list[str]], list[dict[int, list[str]]]]:
    """Start ``processes`` OS processes (spawned) that each fire ``tick`` once per key.

    Each process fires the same ``keys`` idempotency keys, from a different
    first key. Returns what each process's runner was asked to run, and what
    each fire returned, per key.
    """
    payloads = race_processes(
        _keyed_worker,
        processes=processes,
        timeout=timeout,
        what="keyed multi-process race",
        url=url,
        uid=uid,
        keys=keys,
    )
    dispatched = [payload[0] for payload in payloads]
    returned = [{int(n): names for n, names in payload[1].items()} for payload in payloads]
    return dispatched, returned


def _keyed_worker(*, url: str, uid: str, index: int, keys: int, start: Any, results: Any) -> None:
    def work() -> tuple[list[str], dict[int, list[str]]]:
        storage = open_storage(url, uid)
        runner = RecordingRunner()
        manager = PatientManager(storage, runners={"rec": runner}, default_runner="rec")
        start.wait(60)
        returned = _fire_keys(manager, index, keys)
        storage.close()
        return runner.dispatched, returned

    report_to(results, index, work)
