"""PostgreSQL: a connection used moments ago is not pinged, and that never costs a wrong state.

The fast path (issue 22): the engine pings a pooled connection only when it sat
idle for ``PING_AFTER_IDLE`` seconds or more. A connection that died sooner
(here: the server ends it) must still never record a wrong state: a load runs
again on a new connection, a compare-and-swap fails without writing anything,
and the next operation works. Needs PostgreSQL on 127.0.0.1:5432, database ``test``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from services import require_service

from triggers_backends.sqlalchemy import SQLAlchemyStorage, _timeouts, create_schema, drop_schema
from triggers_backends.sqlalchemy._engines import shared_engine
from triggers_core import StorageError, TriggerManager
from triggers_core.engine.scopes import Changes
from triggers_core.testing.storage_contract import RecordingRunner

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CONFIG = {"t_a": {"after": ["go"], "andEvery": "go", "run": "noop"}}

pytestmark = pytest.mark.service


@pytest.fixture
def setup() -> Iterator[tuple[str, str, sa.Engine]]:
    """(storage URL with its own application_name and table prefix, that name, admin engine)."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"idle-ping-{uuid.uuid4().hex[:10]}"
    prefix = f"p{uuid.uuid4().hex[:8]}_"
    admin = sa.create_engine(URL)
    create_schema(admin, prefix)
    url = f"{URL}?application_name={name}&triggers_prefix={prefix}"
    yield url, name, admin
    shared_engine(f"{URL}?application_name={name}").dispose()
    drop_schema(admin, prefix)
    admin.dispose()


def _kill(admin: sa.Engine, name: str) -> int:
    """End every server session of the storage's pool; how many there were."""
    with admin.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :name"
            ),
            {"name": name},
        ).all()
    return len(rows)


def _manager(url: str) -> TriggerManager:
    storage = SQLAlchemyStorage.from_url(url, f"s-{uuid.uuid4().hex}")
    manager = TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")
    manager.update_configuration(CONFIG)
    return manager


def test_a_load_on_a_connection_that_died_moments_ago_runs_again(
    setup: tuple[str, str, sa.Engine],
) -> None:
    url, name, admin = setup
    manager = _manager(url)
    manager.fire("go", {"n": 1})
    assert _kill(admin, name) >= 1
    snapshot = manager.storage.load_full()  # within PING_AFTER_IDLE: not pinged
    assert snapshot.state.latest_kwargs["go"] == {"n": 1}
    assert sorted(snapshot.state.instances) == ["t_a#0"]


def test_a_write_on_a_connection_that_died_moments_ago_writes_nothing(
    setup: tuple[str, str, sa.Engine],
) -> None:
    url, name, admin = setup
    manager = _manager(url)
    manager.fire("go", {"n": 1})
    storage = manager.storage
    before = storage.load_full()
    assert _kill(admin, name) >= 1
    with pytest.raises(StorageError):
        storage.compare_and_swap(before.version, before.state, Changes())
    after = storage.load_full()
    assert after.version == before.version
    assert after.state.latest_kwargs["go"] == {"n": 1}
    manager.fire("go", {"n": 3})  # and the next operation works
    final = storage.load_full()
    assert final.version == before.version + 1
    assert final.state.latest_kwargs["go"] == {"n": 3}
    assert sorted(final.state.instances) == ["t_a#0", "t_a#1"]


def test_a_connection_idle_for_longer_is_pinged_first(
    setup: tuple[str, str, sa.Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, name, admin = setup
    manager = _manager(url)
    manager.fire("go", {"n": 1})
    monkeypatch.setattr(_timeouts, "PING_AFTER_IDLE", 0.0)
    assert _kill(admin, name) >= 1
    before = manager.storage.load_full()
    # the ping finds the dead connection and the pool opens a new one: the write succeeds
    manager.storage.compare_and_swap(before.version, before.state, Changes())
    assert manager.storage.load_full().version == before.version + 1
