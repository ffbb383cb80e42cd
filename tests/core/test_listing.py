"""Session listing in the core: filters, the URL entry point, and backends that cannot list."""

from __future__ import annotations

import pickle
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triggers_core import MemoryStorage, MemoryStore, RegistryError, SessionState, Storage
from triggers_core.engine.scopes import HEADER_ONLY, Changes, Scope, Selector
from triggers_core.engine.state import Status, TaskInstance
from triggers_core.errors import UnsupportedOperationError
from triggers_core.runtime.sessions import (
    SessionFilter,
    SessionPage,
    is_stale,
    prefix_upper_bound,
)
from triggers_core.runtime.storage import Snapshot, Version
from triggers_core.tools.listing import iter_sessions, list_sessions

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class KeyValueOnly(Storage):
    """A backend like memcached: one key per session, no way to enumerate them."""

    backend_name = "kv-only"

    def load(self, scope: Scope | Selector = HEADER_ONLY) -> Snapshot:
        return Snapshot(SessionState(), None)

    def load_full(self) -> Snapshot:
        return Snapshot(SessionState(), None)

    def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        return 1


def instance(status: Status, since: datetime | None) -> TaskInstance:
    stamps = {} if since is None else {status.value: since.isoformat()}
    return TaskInstance("t#0", "t", status, metadata={"timestamps": stamps})


def test_a_backend_without_an_index_refuses_clearly() -> None:
    with pytest.raises(UnsupportedOperationError) as caught:
        KeyValueOnly.list_sessions("kv://x", SessionFilter(), page_size=10, cursor=None)
    error = caught.value
    assert isinstance(error, NotImplementedError)
    assert str(error) == (
        "listing sessions is not supported by this backend (kv-only): "
        "it keeps no index of the sessions it stores"
    )
    assert pickle.loads(pickle.dumps(error)).backend == "kv-only"


def test_stale_means_scheduled_or_running_since_before_the_cutoff() -> None:
    hour = timedelta(hours=1)
    assert is_stale(instance(Status.SCHEDULED, NOW - 2 * hour), hour, now=NOW)
    assert is_stale(instance(Status.RUNNING, NOW - hour), hour, now=NOW)  # exactly: stale
    assert not is_stale(instance(Status.RUNNING, NOW - hour / 2), hour, now=NOW)
    assert not is_stale(instance(Status.FAILED, NOW - 2 * hour), hour, now=NOW)
    assert not is_stale(instance(Status.SCHEDULED, None), hour, now=NOW)  # no timestamp


def test_filters_look_at_unresolved_instances_only() -> None:
    failed = instance(Status.FAILED, NOW)
    stuck = instance(Status.SCHEDULED, NOW - timedelta(days=1))
    assert SessionFilter().matches([])
    assert not SessionFilter(unresolved=True).matches([])
    assert SessionFilter(unresolved=True, failed=True).matches([failed])
    assert not SessionFilter(failed=True).matches([stuck])
    stale = SessionFilter(stale_after=timedelta(hours=1), now=NOW)
    assert stale.matches([failed, stuck])
    assert not stale.matches([failed])
    assert [sorted(s.value for s in group) for group in stale.statuses] == [
        ["running", "scheduled"]
    ]


def test_the_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"listing-{uuid.uuid4().hex}"
    MemoryStorage("s-1", store_name=name).compare_and_swap(None, SessionState(), Changes())
    monkeypatch.setenv("TRIGGERS_STORAGE_URL", f"memory://{name}")
    assert list_sessions(None) == SessionPage(("s-1",))
    assert list(iter_sessions(None)) == ["s-1"]


def test_no_url_at_all_is_an_error_not_a_private_memory_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRIGGERS_STORAGE_URL", raising=False)
    with pytest.raises(RegistryError, match="no storage URL given and TRIGGERS_STORAGE_URL"):
        list_sessions(None)


def test_unknown_schemes_and_non_urls_are_registry_errors() -> None:
    with pytest.raises(RegistryError, match="no storage named 'nosuch'") as caught:
        list_sessions("nosuch://user:hunter2@host/db")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(RegistryError, match="not a storage URL"):
        list_sessions("survey-42")


def test_a_key_value_store_refuses_a_foreign_cursor_before_connecting() -> None:
    # memcached lists through its session index; a cursor it did not make is refused
    # before any connection (nothing listens on port 1).
    for cursor in ("abc", "16.0.x", "1.2.3.4", "0.0.bad-epoch", "0.99999999999999.a"):
        with pytest.raises(ValueError, match="cursor"):
            list_sessions("memcached://127.0.0.1:1?prefix=x", cursor=cursor)


_TEXT = st.text(
    alphabet=st.sampled_from(["a", "b", " ", "\x01", "\ud7ff", "\ue000", "\U0010ffff"]),
    max_size=4,
)


@given(prefix=_TEXT, uid=_TEXT)
def test_the_prefix_range_holds_exactly_the_uids_that_start_with_the_prefix(
    prefix: str, uid: str
) -> None:
    bound = prefix_upper_bound(prefix)
    in_range = prefix <= uid and (bound is None or uid < bound)
    assert in_range == uid.startswith(prefix)
    assert SessionFilter(uid_prefix=prefix).wants_uid(uid) == uid.startswith(prefix)


def test_the_prefix_bound_skips_surrogates_and_the_last_code_point() -> None:
    assert prefix_upper_bound("ab") == "ac"
    assert prefix_upper_bound("a\ud7ff") == "a\ue000"
    assert prefix_upper_bound("a\U0010ffff") == "b"
    assert prefix_upper_bound("\U0010ffff") is None
    assert prefix_upper_bound("") is None


def test_a_uid_prefix_on_the_memory_store_reads_only_its_range() -> None:
    store = MemoryStore()
    for uid in ("a-1", "b-1", "b-2", "c-1"):
        MemoryStorage(uid, store).compare_and_swap(None, SessionState(), Changes())
    page = store.list_sessions(SessionFilter(uid_prefix="b-"), page_size=1)
    assert page.uids == ("b-1",)
    rest = store.list_sessions(SessionFilter(uid_prefix="b-"), page_size=1, cursor=page.cursor)
    assert rest == SessionPage(("b-2",), None)
