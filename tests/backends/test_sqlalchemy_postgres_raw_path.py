"""PostgreSQL on psycopg 3: the scoped load and the one-statement swap on the driver connection.

``triggers_backends.sqlalchemy._raw`` runs those two operations on the pooled
psycopg connection without SQLAlchemy's ``Connection`` (issue 22). These tests
check that it stores and reads exactly what the SQLAlchemy path does, that an
engine with cursor-execute listeners keeps seeing every statement, and that a
connection the server dropped is replaced as before. Needs PostgreSQL on
127.0.0.1:5432, database ``test``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from services import require_service
from sqlalchemy import event

from triggers_backends.sqlalchemy import SQLAlchemyStorage, _raw, create_schema, drop_schema
from triggers_core import TriggerManager
from triggers_core.engine.scopes import Scope
from triggers_core.engine.state import Status, TaskInstance
from triggers_core.testing.sample_tasks import PassThruTask
from triggers_core.testing.storage_contract import RecordingRunner

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CONFIG = {
    "t_createApplicant": {
        "after": ["startSession", "observationsReceived"],
        "run": PassThruTask.name,
    },
    "t_computeScore": {
        "after": ["t_createApplicant", "sessionFinalized"],
        "run": PassThruTask.name,
    },
    "t_page": {"after": ["startSession"], "andEvery": "pageReceived", "run": PassThruTask.name},
}
FIRES = ["pageReceived", "startSession", "pageReceived", "observationsReceived", "sessionFinalized"]

pytestmark = pytest.mark.service


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    application = f"raw-{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(URL, connect_args={"application_name": application})
    engine.info = {"prefix": f"r{uuid.uuid4().hex[:8]}_", "application": application}  # type: ignore[misc]
    create_schema(engine, engine.info["prefix"])  # type: ignore[attr-defined]
    yield engine
    drop_schema(engine, engine.info["prefix"])  # type: ignore[attr-defined]
    engine.dispose()


def _storage(engine: sa.Engine, uid: str, *, raw: bool) -> SQLAlchemyStorage:
    storage = SQLAlchemyStorage(uid, engine, table_prefix=engine.info["prefix"])  # type: ignore[attr-defined]
    if not raw:
        storage.__dict__["_raw_engine"] = None
    return storage


def _run_workflow(engine: sa.Engine, uid: str, *, raw: bool) -> None:
    """The seed workflow, as producers and workers run it: a fresh storage per step."""
    runner = RecordingRunner()

    def manager() -> TriggerManager:
        return TriggerManager(
            _storage(engine, uid, raw=raw), runners={"r": runner}, default_runner="r"
        )

    manager().update_configuration(CONFIG)
    for number, trigger in enumerate(FIRES):
        manager().fire(trigger, {"n": number, "text": "é\u2028'\"%s%%"})
        manager().fire(trigger, {"n": number}, idempotency_key=f"k{number}")
        while runner.dispatched:
            manager().run_instance(runner.dispatched.pop(0), guard_cascade=True)


def _stored(engine: sa.Engine, uid: str) -> dict[str, Any]:
    """What a full load (always the SQLAlchemy path: a snapshot transaction) finds."""
    state = _storage(engine, uid, raw=False).load_full().state

    def instance(found: TaskInstance) -> tuple[Any, ...]:
        return (found.name, found.status, repr(found.kwargs), found.retries)

    return {
        "instances": sorted(instance(i) for i in state.instances.values()),
        "counters": dict(state.counters),
        "latest": {k: dict(v) for k, v in state.latest_kwargs.items()},
    }


def test_the_raw_path_is_taken_and_stores_what_the_sqlalchemy_path_stores(
    engine: sa.Engine,
) -> None:
    assert _storage(engine, "probe", raw=True)._raw_autocommit is not None
    seen: list[str] = []
    original = _raw.RawConnection.execute

    def counted(self: Any, statement: Any, params: Any = None) -> Any:
        seen.append(type(statement).__name__)
        return original(self, statement, params)

    _raw.RawConnection.execute = counted  # type: ignore[method-assign]
    try:
        _run_workflow(engine, "raw-a", raw=True)
    finally:
        _raw.RawConnection.execute = original  # type: ignore[method-assign]
    assert len(seen) >= 2 * len(FIRES)  # at least a load and a swap per fire
    _run_workflow(engine, "raw-b", raw=False)
    raw, core = _stored(engine, "raw-a"), _stored(engine, "raw-b")
    assert raw == core
    assert len(raw["instances"]) >= 5
    assert {status for _, status, _, _ in raw["instances"]} == {Status.FINISHED}
    # Scoped loads of both sessions, raw and not, read the same thing.
    for uid in ("raw-a", "raw-b"):
        for name in ("t_page#1", "t_computeScore#0"):
            by_raw = _storage(engine, uid, raw=True).load(Scope(names={name}))
            by_core = _storage(engine, uid, raw=False).load(Scope(names={name}))
            assert by_raw.version == by_core.version
            assert by_raw.state.instances == by_core.state.instances


def test_cursor_listeners_see_every_statement(engine: sa.Engine) -> None:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        storage = _storage(engine, "listened", raw=True)
        assert storage._raw_autocommit is None
        runner = RecordingRunner()
        TriggerManager(storage, runners={"r": runner}, default_runner="r").update_configuration(
            CONFIG
        )
        before = len(statements)
        TriggerManager(
            _storage(engine, "listened", raw=True), runners={"r": runner}, default_runner="r"
        ).fire("startSession")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(statements) - before >= 2  # the load and the swap, seen
    assert _storage(engine, "listened", raw=True)._raw_autocommit is not None


def test_a_connection_the_server_dropped_is_replaced(engine: sa.Engine) -> None:
    runner = RecordingRunner()
    TriggerManager(
        _storage(engine, "dropped", raw=True), runners={"r": runner}, default_runner="r"
    ).update_configuration(CONFIG)
    TriggerManager(
        _storage(engine, "dropped", raw=True), runners={"r": runner}, default_runner="r"
    ).fire("startSession")  # pools a connection
    admin_engine = sa.create_engine(URL, poolclass=sa.pool.NullPool)
    with admin_engine.connect() as admin:
        killed = admin.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name"
            ),
            {"name": engine.info["application"]},  # type: ignore[attr-defined]
        ).scalar_one()
    assert killed >= 1
    # The pooled connection is dead; the load notices, drops it and reads again.
    TriggerManager(
        _storage(engine, "dropped", raw=True), runners={"r": runner}, default_runner="r"
    ).fire("observationsReceived")
    assert runner.dispatched == ["t_createApplicant#0"]
    loaded = _storage(engine, "dropped", raw=True).load(Scope(names={"t_createApplicant#0"}))
    assert loaded.state.instances["t_createApplicant#0"].status is Status.SCHEDULED


@pytest.mark.parametrize(
    "names",
    [["t_page#0"], ["t_page#0", "t_computeScore#0", "absent"], []],
)
def test_in_and_not_in_lists_read_what_sqlalchemy_reads(
    engine: sa.Engine, names: list[str]
) -> None:
    from triggers_backends.sqlalchemy import metadata_for
    from triggers_backends.sqlalchemy._tables import row_key

    _run_workflow(engine, "lists", raw=False)
    prefix = engine.info["prefix"]  # type: ignore[attr-defined]
    table = metadata_for(prefix).tables[f"{prefix}instances"]
    keys = sa.bindparam("b_keys", expanding=True)
    where = table.c.session_key == sa.bindparam("b_key")
    statements = [
        sa.select(table.c.name).where(where, table.c.name_key.in_(keys)).order_by(table.c.name),
        sa.select(table.c.name).where(where, table.c.name_key.not_in(keys)).order_by(table.c.name),
        sa.select(table.c.name, table.c.status)
        .where(where, table.c.status.in_(["finished", "running"]))
        .order_by(table.c.name),
    ]
    params = {"b_key": row_key("lists"), "b_keys": [row_key(n) for n in names]}
    raw_engine = _storage(engine, "lists", raw=True)._raw_autocommit
    assert raw_engine is not None
    for statement in statements:
        with engine.connect() as conn:
            expected = [tuple(row) for row in conn.execute(statement, params)]
        with raw_engine.connect() as raw:
            found = [tuple(row) for row in raw.execute(statement, params)]
        assert found == expected
        assert expected or statement is statements[0]
        assert _raw._COMPILED[id(statement)].text is not None  # it did not go through SQLAlchemy
