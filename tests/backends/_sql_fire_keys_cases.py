"""Mixed into the SQL test cases: the fire keys table, its cost, and tables made without it."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa

from triggers_backends.sqlalchemy import SQLAlchemyStorage, create_schema, metadata_for
from triggers_backends.sqlalchemy_upgrade import needs_upgrade, upgrade_schema
from triggers_core import (
    LIFECYCLE_LOGGER,
    SchemaMissingError,
    Status,
    TaskContext,
    TriggerManager,
    TriggerTask,
)
from triggers_core.engine.idempotency import fire_key
from triggers_core.engine.scopes import Scope
from triggers_core.testing.storage_contract import RecordingRunner

CONFIG = {
    "t_every": {"after": ["tick"], "andEvery": "tick", "run": "contract_task"},
    "t_count": {"after": ["go"], "run": "sqltest.Count"},
}


class Count(TriggerTask):
    """Counts its runs (the test checks that nothing ran)."""

    name: ClassVar[str] = "sqltest.Count"
    runs: ClassVar[int] = 0
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        with Count._lock:
            Count.runs += 1
        return {}


@contextlib.contextmanager
def statements(engine: sa.Engine) -> Iterator[list[str]]:
    """The SQL text of every statement ``engine`` runs inside the block."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


class SQLFireKeysCases:
    """Mixed into SQLAlchemyCases (which provides ``engine``, ``prefix`` and ``manager``)."""

    engine: sa.Engine
    prefix: str

    def manager(self, uid: str) -> tuple[TriggerManager, RecordingRunner]:
        raise NotImplementedError

    def _drop_fire_keys(self) -> None:
        """Make the tables look like an earlier version's: no fire keys table."""
        metadata_for(self.prefix).tables[f"{self.prefix}fire_keys"].drop(self.engine)

    def test_fire_records_are_rows_of_digests(self, uid: str) -> None:
        manager, _ = self.manager(uid)
        manager.update_configuration(CONFIG)
        manager.fire("tick", {"n": 1}, idempotency_key="webhook delivery 7")
        table = metadata_for(self.prefix).tables[f"{self.prefix}fire_keys"]
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(sa.select(table)).mappings()]
        assert len(rows) == 1
        (row,) = rows
        assert row["key_hash"] == fire_key("tick", "webhook delivery 7").digest
        assert row["trigger_name"] == "tick"
        assert row["scheduled"] == '["t_every#0"]'
        assert "webhook delivery 7" not in repr(rows)  # the key itself is not stored

    def test_a_keyed_fire_costs_one_lookup_and_one_insert_more(self, uid: str) -> None:
        manager, _ = self.manager(uid)
        manager.update_configuration(CONFIG)
        manager.fire("tick")  # warm: configuration decoded, statements compiled
        manager.fire("tick", idempotency_key="warm")
        with statements(self.engine) as plain:
            manager.fire("tick")
        with statements(self.engine) as keyed:
            manager.fire("tick", idempotency_key="k1")
        assert not any("fire_keys" in s for s in plain)
        extra = [s for s in keyed if "fire_keys" in s]
        if self.engine.dialect.name == "postgresql":
            # the lookup rides in the load's instances statement, the record's INSERT
            # in the compare-and-swap's one statement: no statement more
            assert len(keyed) == len(plain)
            assert [s.split()[0].upper() for s in extra] == ["SELECT", "WITH"]
            assert "UNION ALL" in extra[0]
        else:
            assert len(keyed) == len(plain) + 2
            assert [s.split()[0].upper() for s in extra] == ["SELECT", "INSERT"]
        with statements(self.engine) as duplicate:  # a duplicate only reads
            manager.fire("tick", idempotency_key="k1")
        assert not any(s.split()[0].upper() in ("INSERT", "UPDATE") for s in duplicate)

    def test_tables_without_the_fire_keys_table(
        self, uid: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        self._drop_fire_keys()
        manager, runner = self.manager(uid)
        manager.update_configuration(CONFIG)
        # Fires without a key work, and never touch (or look for) the table.
        with statements(self.engine) as seen:
            assert [i.name for i in manager.fire("tick")] == ["t_every#0"]
            assert [i.name for i in manager.fire("go")] == ["t_count#0"]
        assert not any("fire_keys" in s for s in seen)
        version = manager.storage.load().version
        with pytest.raises(SchemaMissingError) as caught:
            manager.fire("tick", idempotency_key="k")
        message = str(caught.value)
        assert f"{self.prefix}fire_keys" in message
        assert f"upgrade_schema(engine, {self.prefix!r})" in message
        assert f"create_schema(engine, {self.prefix!r})" in message
        assert "without an idempotency key" in message
        assert uid in message
        assert manager.storage.load().version == version  # nothing written
        # A worker's run (guarding its cascade) still runs, unguarded, and says why.
        runs = Count.runs
        with caplog.at_level(logging.WARNING, LIFECYCLE_LOGGER):
            finished = manager.run_instance("t_count#0", guard_cascade=True)
        assert finished is not None
        assert finished.status is Status.FINISHED
        assert Count.runs == runs + 1
        warned = [r.getMessage() for r in caplog.records if "not recorded" in r.getMessage()]
        assert len(warned) == 1
        assert f"{self.prefix}fire_keys" in warned[0]
        # The upgrade adds the table (and only it); everything works afterwards.
        assert needs_upgrade(self.engine, self.prefix)
        assert upgrade_schema(self.engine, self.prefix) is True
        assert not needs_upgrade(self.engine, self.prefix)
        assert upgrade_schema(self.engine, self.prefix) is False
        assert [i.name for i in manager.fire("tick", idempotency_key="k")] == ["t_every#1"]
        assert [i.name for i in manager.fire("tick", idempotency_key="k")] == ["t_every#1"]
        assert runner.dispatched == ["t_every#0", "t_count#0", "t_every#1"]

    def test_create_schema_adds_a_missing_fire_keys_table(self, uid: str) -> None:
        manager, _ = self.manager(uid)
        manager.update_configuration(CONFIG)
        manager.fire("tick")
        self._drop_fire_keys()
        # This storage object found the table before: the check is remembered, so
        # the lookup itself reports the missing table.
        fresh = SQLAlchemyStorage(uid, self.engine, table_prefix=f"{self.prefix}")
        with pytest.raises(SchemaMissingError, match="fire_keys"):
            fresh.load(Scope(fire_keys=frozenset({fire_key("tick", "k")})))
        create_schema(self.engine, self.prefix)
        assert [i.name for i in manager.fire("tick", idempotency_key="k")] == ["t_every#1"]
        assert manager.storage.load_full().state.counters == {"t_every": 2}

    def test_delete_removes_the_sessions_fire_records(self, uid: str) -> None:
        manager, _ = self.manager(uid)
        manager.update_configuration(CONFIG)
        manager.fire("tick", idempotency_key="k")
        other, _ = self.manager(f"{uid}-other")
        other.update_configuration(CONFIG)
        other.fire("tick", idempotency_key="k")
        storage = manager.storage
        assert isinstance(storage, SQLAlchemyStorage)
        storage.delete()
        # A new session under the same UID starts without records.
        manager.update_configuration(CONFIG)
        assert [i.name for i in manager.fire("tick", idempotency_key="k")] == ["t_every#0"]
        assert [i.name for i in other.fire("tick", idempotency_key="k")] == ["t_every#0"]
        # ... and so does one on tables without the fire keys table.
        self._drop_fire_keys()
        storage.delete()
        assert storage.load().version is None
