"""PostgreSQL: a compare-and-swap is one statement, all or nothing (issue 22).

The fast path writes the version, the instances, the fire records and the due
index of an existing session in one statement in autocommit mode. These tests
make each part of it fail or lose and assert that nothing at all was written
(and that the commit loop then ends in the right state). The counter-lowered
corruption case is in the shared SQL cases (``_sql_cases.py``). Needs
PostgreSQL on 127.0.0.1:5432, database ``test``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from services import require_service
from sqlalchemy import event

from triggers_backends.sqlalchemy import (
    SQLAlchemyStorage,
    create_schema,
    drop_schema,
    metadata_for,
)
from triggers_backends.sqlalchemy._tables import row_key
from triggers_core import ConflictError, TriggerManager
from triggers_core.engine.idempotency import fire_key
from triggers_core.engine.scopes import Changes
from triggers_core.testing.storage_contract import RecordingRunner

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CONFIG = {"t_a": {"after": ["go"], "andEvery": "go", "run": "noop"}}

pytestmark = pytest.mark.service

_PREFIXES: dict[sa.Engine, str] = {}


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    prefix = f"o{uuid.uuid4().hex[:8]}_"
    engine = sa.create_engine(URL)
    create_schema(engine, prefix)
    _PREFIXES[engine] = prefix
    yield engine
    drop_schema(engine, prefix)
    del _PREFIXES[engine]
    engine.dispose()


def _manager(engine: sa.Engine, uid: str) -> TriggerManager:
    storage = SQLAlchemyStorage(uid, engine, table_prefix=_PREFIXES[engine])
    return TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")


def _rows(engine: sa.Engine, table: str) -> list[dict[str, Any]]:
    found = metadata_for(_PREFIXES[engine]).tables[f"{_PREFIXES[engine]}{table}"]
    with engine.connect() as conn:
        return sorted((dict(r) for r in conn.execute(sa.select(found)).mappings()), key=repr)


def test_a_compare_and_swap_is_one_statement_without_begin(engine: sa.Engine) -> None:
    manager = _manager(engine, f"s-{uuid.uuid4().hex}")
    manager.update_configuration(CONFIG)
    manager.fire("go", {"n": 1})
    storage = manager.storage
    before = storage.load_full()
    sent: list[str] = []
    begun: list[bool] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement.split(maxsplit=1)[0].upper())

    def began(conn: Any) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            begun.append(True)

    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "begin", began)
    try:
        storage.compare_and_swap(before.version, before.state, Changes(instances={"t_a#0"}))
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine, "begin", began)
    assert sent == ["WITH"]
    assert not begun
    assert storage.load_full().version == before.version + 1


def test_a_lost_race_writes_nothing(engine: sa.Engine) -> None:
    uid = f"s-{uuid.uuid4().hex}"
    first, second = _manager(engine, uid), _manager(engine, uid)
    first.update_configuration(CONFIG)
    first.fire("go", {"n": 1})
    seen = second.storage.load_full()
    first.fire("go", {"n": 2})  # the version moves on
    sessions, instances = _rows(engine, "sessions"), _rows(engine, "instances")
    changed = seen.state.instances["t_a#0"]
    with pytest.raises(ConflictError):
        second.storage.compare_and_swap(
            seen.version,
            seen.state,
            Changes(instances={changed.name}),
        )
    assert _rows(engine, "sessions") == sessions
    assert _rows(engine, "instances") == instances


def test_a_fire_record_stored_meanwhile_is_a_conflict_and_nothing_is_written(
    engine: sa.Engine,
) -> None:
    uid = f"s-{uuid.uuid4().hex}"
    manager = _manager(engine, uid)
    manager.update_configuration(CONFIG)
    manager.fire("go", {"n": 1})
    sessions, instances = _rows(engine, "sessions"), _rows(engine, "instances")
    fire_keys = metadata_for(_PREFIXES[engine]).tables[f"{_PREFIXES[engine]}fire_keys"]
    inserted: list[bool] = []

    def insert_the_record_first(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if inserted or not statement.lstrip().upper().startswith("WITH"):
            return
        inserted.append(True)
        with engine.begin() as other:  # another writer's record, committed
            other.execute(
                sa.insert(fire_keys).values(
                    session_key=row_key(uid),
                    key_hash=fire_key("go", "k1").digest,
                    trigger_name="go",
                    scheduled=json.dumps(["t_a#0"]),
                    created_at=datetime.now(UTC),
                )
            )

    event.listen(engine, "before_cursor_execute", insert_the_record_first)
    try:
        result = manager.fire_result("go", {"n": 2}, idempotency_key="k1")
    finally:
        event.remove(engine, "before_cursor_execute", insert_the_record_first)
    assert inserted
    # the one statement failed as a whole; the retry found the record: a duplicate
    assert result.duplicate
    assert [i.name for i in result.scheduled] == ["t_a#0"]
    assert _rows(engine, "sessions") == sessions
    assert _rows(engine, "instances") == instances
