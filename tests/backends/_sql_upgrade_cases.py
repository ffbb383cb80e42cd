"""Mixed into the SQL test cases: tables of the version-1 layout are refused, then upgraded."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from triggers_backends.sqlalchemy import SQLAlchemyStorage, create_schema, drop_schema
from triggers_backends.sqlalchemy_upgrade import needs_upgrade, upgrade_schema
from triggers_core import SchemaMissingError, SessionState, Status, TriggerManager
from triggers_core import engine as pure
from triggers_core.engine.leases import DueKind
from triggers_core.engine.serialization import config_to_json, dumps, instance_to_json
from triggers_core.testing.storage_contract import RecordingRunner

# -- the layout of Triggers before schema version 2 ----------------------------------


def _old_tables(prefix: str) -> sa.MetaData:
    """The DDL of the version-1 layout, as it was shipped (for the upgrade test)."""
    meta = sa.MetaData()
    document = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
    sa.Table(
        f"{prefix}sessions",
        meta,
        sa.Column("session_key", sa.String(64), primary_key=True),
        sa.Column("uid", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("header", document, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    sa.Table(
        f"{prefix}instances",
        meta,
        sa.Column("session_key", sa.String(64), primary_key=True),
        sa.Column("name_key", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("resolved", sa.Boolean(), nullable=False),
        sa.Column("doc", document, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index(f"{prefix}instances_unresolved", "session_key", "resolved"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    return meta


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


OLD_CONFIG = {
    "t_every": {"after": ["never"], "andEvery": "tick", "run": "contract_task"},
    "t_late": {"after": ["x"], "andEvery": "e", "run": "contract_task"},
}


def _old_session() -> SessionState:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    state = pure.update_configuration(SessionState(), OLD_CONFIG).state
    for n in range(3):  # t_every#0..2 wait for "never"
        state = pure.fire(state, "tick", {"n": n}, now=now).state
    state = pure.update_status(state, "t_every#0", Status.FINISHED, now=now).state
    return pure.fire(state, "x", {"x": 1}, now=now).state  # t_late#0 lacks "e": unsettled


class SQLUpgradeCases:
    """Mixed into SQLAlchemyCases: version-1 tables are refused, then upgraded in place."""

    engine: sa.Engine
    prefix: str

    def _write_old_layout(self, uid: str, state: SessionState, prefix: str) -> None:
        old = _old_tables(prefix)
        old.create_all(self.engine)
        header = {
            "schemaVersion": 1,
            "tasks": config_to_json(state.tasks)["tasks"],
            "latestKwargs": dict(state.latest_kwargs),
            "counters": dict(state.counters),
        }
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(
                old.tables[f"{prefix}sessions"]
                .insert()
                .values(
                    session_key=_sha(uid), uid=uid, version=7, header=dumps(header), updated_at=now
                )
            )
            conn.execute(
                old.tables[f"{prefix}instances"].insert(),
                [
                    {
                        "session_key": _sha(uid),
                        "name_key": _sha(name),
                        "name": name,
                        "resolved": instance.is_resolved,
                        "doc": dumps({**instance_to_json(instance), "schemaVersion": 1}),
                        "updated_at": now,
                    }
                    for name, instance in state.instances.items()
                ],
            )

    def test_old_tables_are_refused_with_the_fix_then_upgraded(self, uid: str) -> None:
        prefix = f"{self.prefix}v1_"
        try:
            self._check_upgrade(uid, prefix)
        finally:
            drop_schema(self.engine, prefix)

    def _check_upgrade(self, uid: str, prefix: str) -> None:
        state = _old_session()
        self._write_old_layout(uid, state, prefix)
        storage = SQLAlchemyStorage(uid, self.engine, table_prefix=prefix)
        assert needs_upgrade(self.engine, prefix)
        with pytest.raises(SchemaMissingError) as caught:
            storage.load()
        assert "upgrade_schema(engine" in str(caught.value)
        assert "older Triggers version" in str(caught.value)
        create_schema(self.engine, prefix)  # does not hide the old layout
        assert needs_upgrade(self.engine, prefix)

        assert upgrade_schema(self.engine, prefix) is True

        assert not needs_upgrade(self.engine, prefix)
        assert upgrade_schema(self.engine, prefix) is False  # idempotent
        storage = SQLAlchemyStorage(uid, self.engine, table_prefix=prefix)
        storage.check_leases()  # the due table came with the upgrade
        loaded = storage.load_full()
        assert loaded.version == 7
        assert loaded.state == state  # tasks, counters, latest kwargs, unsettled, instances
        assert loaded.state.unsettled == {"t_late": frozenset({"t_late#0"})}
        rows = _rows(self.engine, prefix)
        assert rows["t_every#1"]["status"] == "unstarted"
        assert rows["t_every#0"]["task_key"] == _sha("t_every")
        # It works like any other session now: e completes t_late#0 (found as unsettled).
        runner = RecordingRunner()
        manager = TriggerManager(storage, runners={"rec": runner}, default_runner="rec")
        manager.fire("e", {"e": 1})
        manager.fire("tick", {"n": 3})
        assert runner.dispatched == ["t_late#0"]
        due = storage.due_entries(DueKind.DISPATCH, datetime.now(UTC), limit=10)
        assert [(ref.session, ref.instance) for ref in due] == [(uid, "t_late#0")]
        assert storage["t_every#3"].status is Status.UNSTARTED
        with self.engine.connect() as conn:
            columns = sa.inspect(conn).get_columns(f"{prefix}instances")
        nullable = {c["name"]: c["nullable"] for c in columns}
        if self.engine.dialect.name != "sqlite":
            assert nullable["task_key"] is False
            assert nullable["status"] is False


def _rows(engine: sa.Engine, prefix: str) -> dict[str, dict[str, Any]]:
    table = sa.Table(f"{prefix}instances", sa.MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        return {r["name"]: dict(r) for r in conn.execute(sa.select(table)).mappings()}
