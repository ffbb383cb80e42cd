"""Listing the sessions with a lost run (running under an expired lease), by URL.

Memory and SQLite here; the key-value stores in tests/backends/test_kv_listing.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from triggers_core import TriggerManager, open_storage
from triggers_core.cli import cli
from triggers_core.runtime.sessions import SessionFilter
from triggers_core.testing.lost_runs import start_run
from triggers_core.testing.storage_contract import RecordingRunner
from triggers_core.tools.listing import iter_sessions, list_sessions

CONFIG = {"t_a": {"after": ["x"], "run": "contract_task"}}


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://lost-{uuid.uuid4().hex[:8]}"
    return f"sqlite:///{tmp_path / 'lost.db'}"


def scheduled(url: str, uid: str) -> None:
    storage = open_storage(url, uid)
    manager = TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")
    manager.sweep_interval = None
    manager.update_configuration(CONFIG)
    manager.fire("x")


def make_store(url: str) -> None:
    for uid in ("lost-1", "lost-2", "live", "waiting", "other-lost"):
        scheduled(url, uid)
    for uid in ("lost-1", "lost-2", "other-lost"):
        start_run(open_storage(url, uid), "t_a#0", expires_in=-5)
    start_run(open_storage(url, "live"), "t_a#0", expires_in=600)


def test_only_sessions_with_a_run_under_an_expired_lease_are_lost(url: str) -> None:
    make_store(url)
    now = datetime.now(UTC)
    lost = list(iter_sessions(url, SessionFilter(lost=True, now=now), page_size=1))
    assert lost == ["lost-1", "lost-2", "other-lost"]
    # with the other filters: all must hold
    prefixed = SessionFilter(lost=True, now=now, uid_prefix="lost-")
    assert list(iter_sessions(url, prefixed)) == ["lost-1", "lost-2"]
    assert list(iter_sessions(url, SessionFilter(lost=True, now=now, failed=True))) == []
    # an hour later the live run's lease has expired too
    later = SessionFilter(lost=True, now=now + timedelta(hours=1))
    assert sorted(iter_sessions(url, later)) == ["live", "lost-1", "lost-2", "other-lost"]
    # a run taken over is no longer lost
    open_storage(url, "lost-2")  # (still there)
    manager = TriggerManager(open_storage(url, "lost-2"), runners={"rec": RecordingRunner()})
    manager.default_runner = "rec"
    manager.sweep_interval = None
    manager.recover()
    assert list(iter_sessions(url, SessionFilter(lost=True, now=datetime.now(UTC)))) == [
        "lost-1",
        "other-lost",
    ]


def test_pages_and_cursors(url: str) -> None:
    make_store(url)
    now = datetime.now(UTC)
    first = list_sessions(url, SessionFilter(lost=True, now=now), page_size=2)
    assert first.uids == ("lost-1", "lost-2")
    assert first.cursor is not None
    second = list_sessions(url, SessionFilter(lost=True, now=now), page_size=2, cursor=first.cursor)
    assert second.uids == ("other-lost",)
    assert second.cursor is None
    with pytest.raises(ValueError, match="not a cursor of a listing of lost sessions"):
        list_sessions(url, SessionFilter(lost=True, now=now), cursor="garbage")


def test_lost_needs_now() -> None:
    with pytest.raises(ValueError, match="lost needs now"):
        SessionFilter(lost=True)


def test_the_cli_lists_lost_sessions(url: str) -> None:
    make_store(url)
    done = CliRunner().invoke(cli, ["sessions", url, "--lost"])
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == ["lost-1", "lost-2", "other-lost"]


def test_the_cli_lists_expired_sessions(url: str) -> None:
    from triggers_core import engine
    from triggers_core.engine.scopes import Changes
    from triggers_core.engine.state import SessionState

    now = datetime.now(UTC)
    state = engine.update_configuration(
        SessionState(), {"t_w": {"after": ["x", "z"], "within": "1h", "run": "contract_task"}}
    ).state
    state = engine.fire(state, "x", now=now - timedelta(hours=3)).state
    state = engine.advance(state, now).state
    names = frozenset(state.instances)
    open_storage(url, "late").compare_and_swap(
        None, state, Changes(instances=names, created=names, config=True)
    )
    scheduled(url, "on-time")
    done = CliRunner().invoke(cli, ["sessions", url, "--expired"])
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == ["late"]
