"""Shared by the SQLite, PostgreSQL and MariaDB test modules: the contract suite plus
tests of what is specific to the SQLAlchemy backend (schema, errors, flat writes, URLs).

Each test module provides a module-scoped ``sql_engine`` fixture; every test gets
its own table prefix, created before and dropped after it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from _sql_fire_keys_cases import SQLFireKeysCases
from _sql_latest_cases import SQLLatestCases
from _sql_lease_cases import stop_sweepers
from _sql_listing_cases import SQLListingCases
from _sql_upgrade_cases import SQLUpgradeCases

from triggers_backends.sqlalchemy import (
    SQLAlchemyStorage,
    create_schema,
    dispose_engines,
    drop_schema,
    metadata_for,
)
from triggers_core import (
    SchemaMissingError,
    SerializationError,
    SessionState,
    Status,
    StorageError,
    TaskInstance,
    TriggerManager,
    open_storage,
)
from triggers_core import engine as pure
from triggers_core.engine.scopes import Changes, Scope
from triggers_core.testing.storage_contract import RecordingRunner, StorageContract

EVERY = {"t_every": {"after": ["tick"], "andEvery": "tick", "run": "contract_task"}}


class SQLAlchemyCases(
    StorageContract, SQLUpgradeCases, SQLListingCases, SQLFireKeysCases, SQLLatestCases
):
    supports_multiprocess = True
    #: The backend label in error messages (``sqlalchemy/<dialect>``).
    dialect: ClassVar[str]
    #: A URL on which nothing listens, with a password that must never be shown.
    dead_url: ClassVar[str]

    @pytest.fixture(autouse=True)
    def _tables(self, sql_engine: sa.Engine) -> Iterator[None]:
        self.engine = sql_engine
        self.prefix = f"t{uuid.uuid4().hex[:12]}_"
        create_schema(sql_engine, self.prefix)
        yield
        stop_sweepers(self.prefix)  # of managers with the in-process runner, on these tables
        drop_schema(sql_engine, self.prefix)
        dispose_engines()  # engines opened from URLs during the test

    def make_storage(self, uid: str) -> SQLAlchemyStorage:
        return SQLAlchemyStorage(uid, self.engine, table_prefix=self.prefix)

    def url(self, **query: str) -> str:
        """The engine's URL with its password, plus Triggers options."""
        url = self.engine.url.update_query_dict({"triggers_prefix": self.prefix, **query})
        return url.render_as_string(hide_password=False)

    def rows(self, table: str) -> dict[str, dict[str, Any]]:
        t = metadata_for(self.prefix).tables[f"{self.prefix}{table}"]
        key = "name" if table == "instances" else "uid"
        with self.engine.connect() as conn:
            return {r[key]: dict(r) for r in conn.execute(sa.select(t)).mappings()}

    def set_column(self, table: str, column: str, value: str, name: str | None = None) -> None:
        t = metadata_for(self.prefix).tables[f"{self.prefix}{table}"]
        statement = sa.update(t).values({column: value})
        if name is not None:
            statement = statement.where(t.c.name == name)
        with self.engine.begin() as conn:
            conn.execute(statement)

    def manager(self, uid: str) -> tuple[TriggerManager, RecordingRunner]:
        runner = RecordingRunner()
        storage = self.make_storage(uid)
        return TriggerManager(storage, runners={"rec": runner}, default_runner="rec"), runner

    # -- schema -----------------------------------------------------------------------

    def test_missing_tables_say_how_to_create_them(self, uid: str) -> None:
        storage = SQLAlchemyStorage(uid, self.engine, table_prefix=f"{self.prefix}missing_")
        with pytest.raises(SchemaMissingError) as caught:
            storage.load()
        message = str(caught.value)
        assert "create_schema" in message
        assert uid in message
        assert self.dialect in message
        with pytest.raises(SchemaMissingError):
            TriggerManager(storage).update_configuration(EVERY)

    def test_create_schema_option(self, uid: str) -> None:
        prefix = f"{self.prefix}auto_"
        try:
            storage = SQLAlchemyStorage(uid, self.engine, table_prefix=prefix, create_schema=True)
            storage.compare_and_swap(None, storage.load().state, Changes())
            assert storage.load().version == 1
            create_schema(self.engine, prefix)  # idempotent
        finally:
            drop_schema(self.engine, prefix)

    def test_create_schema_from_url_option(self, uid: str) -> None:
        prefix = f"{self.prefix}url_"
        url = self.engine.url.update_query_dict(
            {"triggers_prefix": prefix, "triggers_create_schema": "true"}
        ).render_as_string(hide_password=False)
        try:
            storage = open_storage(url, uid)
            assert isinstance(storage, SQLAlchemyStorage)
            assert storage.table_prefix == prefix
            assert storage.load().version is None
        finally:
            drop_schema(self.engine, prefix)

    # -- errors -----------------------------------------------------------------------

    def test_database_down_is_a_storage_error(self, uid: str) -> None:
        storage = open_storage(self.dead_url, uid)
        with pytest.raises(StorageError) as caught:
            storage.load()
        message = str(caught.value)
        assert caught.value.backend == self.dialect
        assert caught.value.session == uid
        assert self.dialect in message
        assert uid in message
        assert "s3cret" not in message
        assert "s3cret" not in repr(storage)
        assert "s3cret" not in (storage.reference() or "")
        with pytest.raises(StorageError) as caught:
            storage.compare_and_swap(None, _empty(), Changes())
        assert "s3cret" not in str(caught.value)

    def test_corrupted_row_is_reported_and_not_overwritten(self, uid: str) -> None:
        manager, _ = self.manager(uid)
        manager.update_configuration(EVERY)
        manager.fire("tick", {"n": 0})
        self.set_column("instances", "doc", '{"hand": "edited"', name="t_every#0")
        before = self.rows("instances")
        with pytest.raises(SerializationError) as caught:
            manager.update_instance_metadata("t_every#0", {"note": "x"})
        assert uid in str(caught.value)
        assert "t_every#0" in str(caught.value)
        with pytest.raises(SerializationError):
            manager.storage.load_full()
        assert self.rows("instances") == before
        assert len(before) == 1
        # A fire that cannot change t_every#0 does not read it, and leaves it as it is.
        manager.fire("tick", {"n": 1})
        assert self.rows("instances")["t_every#0"] == before["t_every#0"]

    def test_corrupted_header_is_reported_and_not_overwritten(self, uid: str) -> None:
        manager, _ = self.manager(uid)
        manager.update_configuration(EVERY)
        self.set_column("sessions", "header", '{"schemaVersion": 99}')
        before = self.rows("sessions")
        with pytest.raises(SerializationError) as caught:
            manager.fire("tick")
        assert "newer" in str(caught.value)
        assert self.rows("sessions") == before

    def test_a_counter_lowered_in_the_table_cannot_overwrite_history(self, uid: str) -> None:
        manager, runner = self.manager(uid)
        manager.update_configuration(EVERY)
        manager.fire("tick", {"n": 0})
        manager.update_instance_status("t_every#0", Status.FINISHED)
        header = json.loads(self.rows("sessions")[uid]["header"])
        header["counters"]["t_every"] = 0  # edited by hand
        self.set_column("sessions", "header", json.dumps(header))
        sessions, instances = self.rows("sessions"), self.rows("instances")
        with pytest.raises(SerializationError) as caught:
            manager.fire("tick", {"n": 1})
        message = str(caught.value)
        assert "t_every#0" in message
        assert uid in message
        assert "already exists" in message
        assert self.rows("sessions") == sessions  # nothing written, not even the version
        assert self.rows("instances") == instances
        assert runner.dispatched == ["t_every#0"]

    # -- flat fire cost ---------------------------------------------------------------

    def test_a_fire_writes_only_what_changed(self, uid: str) -> None:
        manager, runner = self.manager(uid)
        manager.update_configuration(EVERY)
        for n in range(20):
            manager.fire("tick", {"n": n})
        for n in range(20):
            manager.update_instance_status(f"t_every#{n}", Status.FINISHED)
        before = self.rows("instances")
        manager.fire("tick", {"n": 20})
        after = self.rows("instances")
        assert set(after) - set(before) == {"t_every#20"}
        assert {n: after[n] for n in before} == before  # history untouched, updated_at too
        assert runner.dispatched[-1] == "t_every#20"

    def test_a_fire_reads_only_the_working_set(self, uid: str) -> None:
        manager, _ = self.manager(uid)
        manager.update_configuration(EVERY)
        for n in range(10):
            manager.fire("tick", {"n": n})
            manager.update_instance_status(f"t_every#{n}", Status.FINISHED)
        snapshot = manager.storage.load()
        assert snapshot.state.instances == {}
        assert len(manager.storage.instances) == 10

    def test_large_scopes_are_loaded_exactly(self, uid: str) -> None:
        # More task names and instance names than one IN list may carry.
        tasks = [f"t_{k:04d}" for k in range(1_200)]
        instances = {}
        for task in tasks:
            for n, status in enumerate((Status.UNSTARTED, Status.SCHEDULED, Status.FINISHED)):
                instance = TaskInstance(name=f"{task}#{n}", task_name=task, status=status)
                instances[instance.name] = instance
        config = {task: {"after": ["x"], "run": "contract_task"} for task in tasks}
        state = SessionState(
            tasks=pure.update_configuration(SessionState(), config).state.tasks,
            instances=instances,
            counters=dict.fromkeys(tasks, 3),
        )
        names = frozenset(instances)
        storage = self.make_storage(uid)
        storage.compare_and_swap(None, state, Changes(instances=names, created=names))
        some_tasks = frozenset(tasks[::2])  # 600 tasks
        some_names = frozenset(f"{t}#2" for t in tasks[:700])  # 700 finished ones
        for scope in (
            Scope(unstarted_of=some_tasks),
            Scope(names=some_names),
            Scope(unstarted_of=frozenset(tasks[:10]), names=some_names),
            Scope(unstarted_of=some_tasks, names=frozenset({"t_0001#1"}), unresolved=True),
        ):
            got = set(storage.load(scope).state.instances)
            assert got == {n for n, i in instances.items() if scope.wants(i)}

    # -- URLs -------------------------------------------------------------------------

    def test_open_storage_and_manager_from_url(self, uid: str) -> None:
        storage = open_storage(self.url(), uid)
        assert isinstance(storage, SQLAlchemyStorage)
        assert storage.table_prefix == self.prefix
        manager = TriggerManager(self.url(), uid=uid, runners={"rec": RecordingRunner()})
        manager.default_runner = "rec"
        manager.update_configuration(EVERY)
        assert [i.name for i in manager.fire("tick")] == ["t_every#0"]
        assert self.make_storage(uid)["t_every#0"].status is Status.SCHEDULED
        # Storages opened from one URL share one engine (one pool).
        assert open_storage(self.url(), "other").engine is storage.engine  # type: ignore[attr-defined]

    def test_url_from_environment(self, uid: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TRIGGERS_STORAGE_URL", self.url())
        storage = open_storage(None, uid)
        assert isinstance(storage, SQLAlchemyStorage)
        manager = TriggerManager(uid=uid, runners={"rec": RecordingRunner()})
        assert isinstance(manager.storage, SQLAlchemyStorage)
        assert manager.storage.table_prefix == self.prefix

    def test_reference_reopens_the_same_session(self, uid: str) -> None:
        storage = self.make_storage(uid)
        storage.compare_and_swap(None, _empty(), Changes())
        reference = storage.reference()
        assert "triggers_prefix" in reference
        if self.engine.url.password:
            assert str(self.engine.url.password) not in reference
        assert open_storage(reference, uid).load().version == 1


def _empty() -> SessionState:
    return SessionState()
