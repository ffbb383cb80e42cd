"""Mixed into the SQL test cases: the latest kwargs live in the ``latest`` table, one row per
trigger, written only for the triggers an operation set and read only where it needs them.
Costs are counted in bytes of stored documents read and bytes sent, never timed (the times are
in ``benchmarks/payloads.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
import sqlalchemy as sa

from triggers_backends.sqlalchemy import SQLAlchemyStorage, metadata_for
from triggers_backends.sqlalchemy._schema import note_latest_table
from triggers_backends.sqlalchemy_upgrade import needs_upgrade, upgrade_schema
from triggers_core import ConflictError, SerializationError, TriggerManager
from triggers_core.engine.latest import LatestKwargs
from triggers_core.engine.serialization import (
    SPLIT_HEADER_VERSION,
    dumps,
    header_from_json,
    header_to_json,
    loads,
)
from triggers_core.engine.state import SessionState
from triggers_core.engine.task_table import TaskTable
from triggers_core.testing.storage_contract import RecordingRunner

CONFIG = {
    "t_every": {"after": ["tick", "ready"], "andEvery": "tick", "run": "triggers.DevNullTask"}
}
HUGE = 2 * 1024 * 1024


class CountingSQL(SQLAlchemyStorage):
    """Counts the bytes of the stored documents it reads (header, instances, latest kwargs)."""

    read = 0
    latest_rows = 0

    def _decode_header(
        self, uid: str, config_id: str, config: str | None, header: str
    ) -> tuple[SessionState, tuple[str, ...] | None]:
        self.read += len(header) + len(config or "")
        return super()._decode_header(uid, config_id, config, header)

    def _latest_value(self, trigger: str, text: str) -> Mapping[str, Any]:
        self.read += len(text)
        self.latest_rows += 1
        return super()._latest_value(trigger, text)

    def _decode_instances(self, rows: Any, *, cache: bool) -> Any:
        self.read += sum(len(row.doc) for row in rows)
        return super()._decode_instances(rows, cache=cache)


class SentBytes:
    """Counts the bytes of the string parameters sent to ``engine`` (what is written)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.sent = 0

    def _count(self, value: Any) -> int:
        if isinstance(value, str | bytes):
            return len(value)
        if isinstance(value, Mapping):
            return sum(self._count(v) for v in value.values())
        if isinstance(value, list | tuple):
            return sum(self._count(v) for v in value)
        return 0

    def __call__(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        self.sent += self._count(params)

    def __enter__(self) -> SentBytes:
        sa.event.listen(self.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *_: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self)


def manager_on(storage: SQLAlchemyStorage) -> TriggerManager:
    storage.max_value_bytes = 64 * 1024 * 1024
    return TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")


def fires(manager: TriggerManager, first: int, count: int) -> None:
    for n in range(first, first + count):
        scheduled = manager.fire("tick", {"n": n})
        assert [i.name for i in scheduled] == [f"t_every#{n}"]


def huge_fire_costs(engine: sa.Engine, prefix: str, uid: str) -> None:
    """Five fires after a huge fire of an unused trigger read and send what five did before."""
    storage = CountingSQL(uid, engine, table_prefix=prefix)
    manager = manager_on(storage)
    manager.update_configuration(CONFIG)
    manager.fire("ready", {"ok": True})
    fires(manager, 0, 3)
    with SentBytes(engine) as sent:
        storage.read = storage.latest_rows = 0
        fires(manager, 3, 5)
        before = (storage.read, sent.sent, storage.latest_rows)
        sent.sent = 0
        manager.fire("unused", {"blob": "x" * HUGE})
        assert sent.sent > HUGE  # stored once
        storage.read = storage.latest_rows = sent.sent = 0
        fires(manager, 8, 5)
        after = (storage.read, sent.sent, storage.latest_rows)
    # Five fires read and write what five fires did before (the version's digits and a few
    # more instances aside): nothing of the 2 MB. Each read one row: "ready", to seed its
    # instance ("tick" is set, never read).
    assert after[0] <= before[0] * 1.25 + 4096, (before, after)
    assert after[1] <= before[1] * 1.25 + 4096, (before, after)
    assert after[2] == before[2] == 5, (before, after)
    assert manager.storage.latest_kwargs["unused"] == {"blob": "x" * HUGE}  # still there


class SQLLatestCases:
    """The ``latest`` table (mixed into ``SQLAlchemyCases``)."""

    engine: sa.Engine
    prefix: str

    def _table(self, name: str) -> sa.Table:
        return metadata_for(self.prefix).tables[f"{self.prefix}{name}"]

    def _header(self, uid: str) -> str:
        sessions = self._table("sessions")
        with self.engine.connect() as conn:
            text: str = conn.execute(
                sa.select(sessions.c.header).where(sessions.c.uid == uid)
            ).scalar_one()
        return text

    def _latest_rows(self) -> dict[str, str]:
        latest = self._table("latest")
        with self.engine.connect() as conn:
            return {r.trigger: r.value for r in conn.execute(sa.select(latest))}

    def test_a_huge_fire_costs_later_fires_nothing(self, uid: str) -> None:
        huge_fire_costs(self.engine, self.prefix, uid)
        assert len(self._header(uid)) < 4096  # the header names the trigger only
        assert json.loads(self._latest_rows()["unused"]) == {"blob": "x" * HUGE}

    def test_only_the_triggers_set_are_written(self, uid: str) -> None:
        manager = manager_on(SQLAlchemyStorage(uid, self.engine, table_prefix=self.prefix))
        manager.update_configuration(CONFIG)
        manager.fire("ready", {"ok": 1})
        manager.fire("other", {"v": 1})
        latest = self._table("latest")
        with self.engine.connect() as conn:
            versions = dict(conn.execute(sa.select(latest.c.trigger, latest.c.version)).all())
        manager.fire("tick", {"n": 0})
        with self.engine.connect() as conn:
            now = dict(conn.execute(sa.select(latest.c.trigger, latest.c.version)).all())
        assert {t: now[t] for t in versions} == versions  # untouched rows keep their version
        assert now["tick"] > max(versions.values())
        header = json.loads(self._header(uid))
        assert header["schemaVersion"] == SPLIT_HEADER_VERSION == 4
        assert header["latestTriggers"] == ["other", "ready", "tick"]
        assert "latestKwargs" not in header

    def test_an_older_reader_refuses_a_split_header(self, uid: str) -> None:
        manager = manager_on(SQLAlchemyStorage(uid, self.engine, table_prefix=self.prefix))
        manager.update_configuration(CONFIG)
        manager.fire("ready", {"ok": 1})
        # What a process that knows only schema version 2 does with the header:
        with pytest.raises(SerializationError, match="newer than this library understands"):
            header_from_json(loads(self._header(uid)), tasks=TaskTable({}))

    def test_a_value_rewritten_after_the_load_is_a_conflict(self, uid: str) -> None:
        storage = SQLAlchemyStorage(uid, self.engine, table_prefix=self.prefix)
        manager = manager_on(storage)
        manager.update_configuration(CONFIG)
        manager.fire("ready", {"ok": 1})
        snapshot = storage.load()
        latest = snapshot.state.latest_kwargs
        assert isinstance(latest, LatestKwargs)
        assert "ready" in latest
        assert not latest.read  # nothing read yet
        manager.fire("ready", {"ok": 2})
        with pytest.raises(ConflictError):
            latest["ready"]
        assert storage.load().state.latest_kwargs["ready"] == {"ok": 2}
        assert storage.load_full().state.latest_kwargs == {"ready": {"ok": 2}}

    def test_an_older_header_is_read_and_moved_on_its_next_write(self, uid: str) -> None:
        storage = SQLAlchemyStorage(uid, self.engine, table_prefix=self.prefix)
        manager = manager_on(storage)
        manager.update_configuration(CONFIG)
        manager.fire("ready", {"ok": 1})
        manager.fire("other", {"v": "old"})
        state = storage.load_full().state
        # Rewrite it as an older version did: the latest kwargs inside the header, no rows.
        sessions, latest = self._table("sessions"), self._table("latest")
        with self.engine.begin() as conn:
            conn.execute(sa.update(sessions).values(header=dumps(header_to_json(state))))
            conn.execute(sa.delete(latest))
        assert "latestKwargs" in self._header(uid)
        fresh = SQLAlchemyStorage(uid, self.engine, table_prefix=self.prefix)
        assert dict(fresh.load().state.latest_kwargs) == {"ready": {"ok": 1}, "other": {"v": "old"}}
        scheduled = manager_on(fresh).fire("tick", {"n": 0})
        assert [i.kwargs for i in scheduled] == [{"ready": {"ok": 1}, "tick": {"n": 0}}]
        header = json.loads(self._header(uid))
        assert header["latestTriggers"] == ["other", "ready", "tick"]
        assert {t: json.loads(v) for t, v in self._latest_rows().items()} == {
            "ready": {"ok": 1},
            "other": {"v": "old"},
            "tick": {"n": 0},
        }

    def test_tables_without_it_keep_the_latest_kwargs_in_the_header(self, uid: str) -> None:
        self._table("latest").drop(self.engine)
        note_latest_table(self.engine, self.prefix, exists=False)
        assert needs_upgrade(self.engine, self.prefix)
        storage = SQLAlchemyStorage(uid, self.engine, table_prefix=self.prefix)
        manager = manager_on(storage)
        manager.update_configuration(CONFIG)
        manager.fire("ready", {"ok": 1})
        assert json.loads(self._header(uid))["latestKwargs"] == {"ready": {"ok": 1}}
        upgrade_schema(self.engine, self.prefix)  # adds the table (and tells this process)
        assert not needs_upgrade(self.engine, self.prefix)
        scheduled = manager.fire("tick", {"n": 0})
        assert [i.kwargs for i in scheduled] == [{"ready": {"ok": 1}, "tick": {"n": 0}}]
        assert "latestKwargs" not in json.loads(self._header(uid))
        assert set(self._latest_rows()) == {"ready", "tick"}

    def test_delete_removes_the_rows(self, uid: str) -> None:
        storage = SQLAlchemyStorage(uid, self.engine, table_prefix=self.prefix)
        manager = manager_on(storage)
        manager.update_configuration(CONFIG)
        manager.fire("ready", {"ok": 1})
        other = SQLAlchemyStorage(f"{uid}-other", self.engine, table_prefix=self.prefix)
        manager_on(other).fire("ready", {"ok": 2})
        storage.delete()
        latest = self._table("latest")
        with self.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(latest)).scalar_one() == 1
        assert other.load().state.latest_kwargs["ready"] == {"ok": 2}

    def test_a_row_of_another_trigger_or_not_an_object_is_refused(self, uid: str) -> None:
        storage = SQLAlchemyStorage(uid, self.engine, table_prefix=self.prefix)
        manager_on(storage).fire("ready", {"ok": 1})
        latest = self._table("latest")
        with self.engine.begin() as conn:
            conn.execute(sa.update(latest).values(trigger="other"))
        with pytest.raises(SerializationError, match="names the trigger 'other'"):
            storage.load().state.latest_kwargs["ready"]
        with self.engine.begin() as conn:
            conn.execute(sa.update(latest).values(trigger="ready", value="[1]"))
        with pytest.raises(SerializationError, match="latest kwargs of 'ready'"):
            storage.load().state.latest_kwargs["ready"]
