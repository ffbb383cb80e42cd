"""PostgreSQL: a scoped load reads without a transaction, and never a mixed state (issue 22).

The fast path reads the header, then the fire records and the instances, each
statement in its own snapshot, and checks the session row's version and
configuration id that the last statement carries. These tests commit to the
session *between* the statements (from another connection, at the moment the
instances' statement is about to run) and assert that the load still returns
one state: the header and the instances of the same version. Without the check
the load would return the old header with the new instances. Needs PostgreSQL
on 127.0.0.1:5432, database ``test``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from services import require_service
from sqlalchemy import event

from triggers_backends.sqlalchemy import SQLAlchemyStorage, create_schema, drop_schema
from triggers_core import TriggerManager
from triggers_core.engine.idempotency import FireKey, fire_key
from triggers_core.engine.scopes import Fixed, Scope, fire_scope, instance_scope
from triggers_core.testing.storage_contract import RecordingRunner

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CONFIG = {
    "t_a": {"after": ["go"], "andEvery": "go", "run": "noop"},
    "t_b": {"after": ["t_a"], "run": "noop"},
}

pytestmark = pytest.mark.service


_PREFIXES: dict[sa.Engine, str] = {}


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    prefix = f"u{uuid.uuid4().hex[:8]}_"
    engine = sa.create_engine(URL)
    create_schema(engine, prefix)
    _PREFIXES[engine] = prefix
    yield engine
    drop_schema(engine, prefix)
    del _PREFIXES[engine]
    engine.dispose()


def _open(engine: sa.Engine, uid: str) -> SQLAlchemyStorage:
    return SQLAlchemyStorage(uid, engine, table_prefix=_PREFIXES[engine])


def _manager(storage: SQLAlchemyStorage) -> TriggerManager:
    return TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")


def _between(engine: sa.Engine, write: Callable[[], None]) -> tuple[Callable[[], None], list[bool]]:
    """Run ``write`` once, just before the next statement that reads instances at a version
    (a load that reads everything in its first statement has no such moment); return how
    to stop, and a list that holds True once ``write`` ran."""
    done: list[bool] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not done and "session_version" in statement:
            done.append(True)
            write()

    event.listen(engine, "before_cursor_execute", before)
    return (lambda: event.remove(engine, "before_cursor_execute", before)), done


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        pytest.param(lambda: fire_scope("go"), [], id="fire"),
        pytest.param(lambda: instance_scope("t_a#0", cascade=True), ["t_a#0"], id="finish"),
        pytest.param(
            lambda: instance_scope("t_a#0", cascade=True, guard=FireKey("t_a", "x")),
            ["t_a#0"],
            id="guarded-finish",
        ),
        pytest.param(lambda: Scope(unresolved=True), ["t_a#0", "t_a#1"], id="unresolved"),
    ],
)
def test_a_commit_between_the_statements_is_never_mixed_in(
    engine: sa.Engine, scope: Callable[[], Any], expected: list[str]
) -> None:
    uid = f"s-{uuid.uuid4().hex}"
    writer = _manager(_open(engine, uid))
    writer.update_configuration(CONFIG)
    writer.fire("go", {"n": 1})
    reader = _open(engine, uid)
    before = reader.load(scope())
    stop, wrote = _between(engine, lambda: writer.fire("go", {"n": 2}))  # creates t_a#1
    try:
        snapshot = reader.load(scope())
    finally:
        stop()
    if not wrote:  # read in one statement: nothing can come between; commit after it
        writer.fire("go", {"n": 2})
        assert snapshot.version == before.version
        snapshot = reader.load(scope())
    full = reader.load_full()
    assert snapshot.version == full.version == before.version + 1
    assert snapshot.state.latest_kwargs["go"] == {"n": 2}
    assert snapshot.state.counters == full.state.counters
    assert sorted(snapshot.state.instances) == expected
    for name, instance in snapshot.state.instances.items():
        assert instance == full.state.instances[name]


def test_a_session_deleted_and_created_again_between_the_statements_is_never_mixed_in(
    engine: sa.Engine,
) -> None:
    uid = f"s-{uuid.uuid4().hex}"
    first = _manager(_open(engine, uid))
    first.update_configuration(CONFIG)
    first.fire("go", {"n": 1})  # version 2: configured, then fired
    reader = _open(engine, uid)

    def recreate() -> None:
        _open(engine, uid).delete()
        again = _manager(_open(engine, uid))
        again.update_configuration(CONFIG)  # version 1 again: a new configuration id
        again.fire("go", {"n": 7})  # version 2 again, other instances

    stop, _ = _between(engine, recreate)
    try:
        snapshot = reader.load(Scope(unresolved=True))
    finally:
        stop()
    full = reader.load_full()
    assert snapshot.version == full.version
    assert snapshot.state.latest_kwargs["go"] == {"n": 7}
    assert snapshot.state.instances == {
        n: i for n, i in full.state.instances.items() if not i.is_resolved
    }


@pytest.mark.parametrize(
    ("scope", "expected", "sent"),
    [
        # the instance it names comes with the header: one statement
        pytest.param(
            lambda: instance_scope("t_a#0", cascade=False), ["t_a#0"], ["SELECT"], id="named"
        ),
        # what it needs is decided by the header: the header, then the instances
        pytest.param(
            lambda: Scope(unresolved=True), ["t_a#0"], ["SELECT", "SELECT"], id="unresolved"
        ),
        # a guarded finish whose cascade needs no other instance (t_b waits for no
        # instance of t_a: t_a is settled for it): the instance and the fire record
        # come with the header, one statement
        pytest.param(
            lambda: instance_scope("t_a#0", cascade=True, guard=fire_key("t_a", "x")),
            ["t_a#0"],
            ["SELECT"],
            id="guarded-finish",
        ),
    ],
)
def test_loads_without_a_transaction_send_no_begin(
    engine: sa.Engine, scope: Callable[[], Any], expected: list[str], sent: list[str]
) -> None:
    uid = f"s-{uuid.uuid4().hex}"
    manager = _manager(_open(engine, uid))
    manager.update_configuration(CONFIG)
    manager.fire("go", {"n": 1})
    reader = _open(engine, uid)
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement.split(maxsplit=1)[0].upper())

    event.listen(engine, "before_cursor_execute", before)
    try:
        snapshot = reader.load(scope())
    finally:
        event.remove(engine, "before_cursor_execute", before)
    assert sorted(snapshot.state.instances) == expected
    assert seen == sent


def test_the_instances_named_with_the_header_are_exactly_what_the_scope_names(
    engine: sa.Engine,
) -> None:
    uid = f"s-{uuid.uuid4().hex}"
    manager = _manager(_open(engine, uid))
    manager.update_configuration(CONFIG)
    manager.fire("go", {"n": 1})
    manager.fire("go", {"n": 2})  # t_a#0 and t_a#1
    reader = _open(engine, uid)
    full = reader.load_full().state.instances
    # a fixed scope (what instance_scope(..., cascade=False) is) and a plain one
    one = Fixed(Scope(names=frozenset({"t_a#1"})))
    assert reader.load(one).state.instances == {"t_a#1": full["t_a#1"]}
    with_missing = Scope(names=frozenset({"t_a#0", "t_a#7"}))
    assert reader.load(with_missing).state.instances == {"t_a#0": full["t_a#0"]}
    # a scope that needs more than its names reads the rest at the header's version
    more = Scope(names=frozenset({"t_a#0"}), unresolved=True)
    assert reader.load(more).state.instances == {n: full[n] for n in ("t_a#0", "t_a#1")}
    # the one statement reads one snapshot: the header's counters and the instances agree
    assert reader.load(one).version == reader.load_full().version


def test_a_fire_record_committed_between_the_statements_is_never_mixed_in(
    engine: sa.Engine,
) -> None:
    """The fire records come in the instances' statement: a keyed fire committed
    between the header and that statement makes the load read again in one
    snapshot, never the old header with the new record (or the record missing
    from a state that already holds what its fire scheduled)."""
    uid = f"s-{uuid.uuid4().hex}"
    writer = _manager(_open(engine, uid))
    writer.update_configuration(CONFIG)
    writer.fire("go", {"n": 1})
    key = fire_key("go", "k-1")
    reader = _open(engine, uid)
    before = reader.load(fire_scope("go", key))
    assert key not in before.state.fire_records
    stop, wrote = _between(engine, lambda: writer.fire("go", {"n": 2}, idempotency_key="k-1"))
    try:
        snapshot = reader.load(fire_scope("go", key))
    finally:
        stop()
    assert wrote
    full = reader.load_full()
    assert snapshot.version == full.version == before.version + 1
    assert snapshot.state.fire_records[key] == ("t_a#1",)
    assert snapshot.state.latest_kwargs["go"] == {"n": 2}
    assert snapshot.state.counters == full.state.counters
    # and the records the scope names, as stored, when nothing comes between
    again = reader.load(fire_scope("go", key))
    assert again.version == snapshot.version
    assert again.state.fire_records == {key: ("t_a#1",)}
    other = fire_key("go", "k-2")
    assert reader.load(fire_scope("go", other)).state.fire_records == {}


def test_a_guarded_finish_whose_cascade_needs_more_reads_it_in_a_second_statement(
    engine: sa.Engine,
) -> None:
    """The instance and its fire record come with the header; the unstarted instances
    the cascade needs (decided by the header) in a second statement, which also reads
    the record again at the version it checks: never a mix of two versions."""
    uid = f"s-{uuid.uuid4().hex}"
    writer = _manager(_open(engine, uid))
    writer.update_configuration(
        {
            "t_a": {"after": ["go"], "run": "noop"},
            "t_b": {"after": ["t_a", "x"], "run": "noop"},
        }
    )
    writer.fire("go", {"n": 1})  # t_a#0
    writer.fire("x", {"n": 1})  # t_b#0, unstarted, waiting for t_a
    key = fire_key("t_a", "g")
    reader = _open(engine, uid)
    scope = instance_scope("t_a#0", cascade=True, guard=key)
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        snapshot = reader.load(scope)
    finally:
        event.remove(engine, "before_cursor_execute", before)
    assert sorted(snapshot.state.instances) == ["t_a#0", "t_b#0"]
    assert len(seen) == 2
    assert all("fire_keys" in s for s in seen)
    # a commit between the two statements (one that records the key) is never mixed in
    stop, wrote = _between(
        engine, lambda: writer.fire("t_a", {"n": 2}, idempotency_key="g")
    )  # completes t_b#0
    try:
        mixed = reader.load(scope)
    finally:
        stop()
    assert wrote
    full = reader.load_full()
    assert mixed.version == full.version == snapshot.version + 1
    assert mixed.state.fire_records == {key: ("t_b#0",)}
    # t_b#0 is scheduled now: at this version the cascade needs no instance of t_b
    assert sorted(mixed.state.instances) == ["t_a#0"]
    assert mixed.state.instances["t_a#0"] == full.state.instances["t_a#0"]
    assert mixed.state.counters == full.state.counters
