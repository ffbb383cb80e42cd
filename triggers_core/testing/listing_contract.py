"""The session-listing contract: what ``Storage.list_sessions`` must do, as tests.

Backends that can list their sessions subclass :class:`SessionListingContract`
in their test suite (next to :class:`~triggers_core.testing.storage_contract.StorageContract`)
and provide :meth:`~SessionListingContract.make_storage` and
:meth:`~SessionListingContract.list_sessions` (on the same store)::

    class TestMyStorageListing(SessionListingContract):
        def make_storage(self, uid):
            return MyStorage(uid, self.client)

        def list_sessions(self, filter, *, page_size, cursor):
            return MyStorage.list_sessions(self.url, filter, page_size=page_size, cursor=cursor)

Each test writes its sessions through ``make_storage`` (states built by the
pure engine with a fixed clock) into a store that must start empty. Needs pytest.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from triggers_core import engine
from triggers_core.engine.scopes import Changes
from triggers_core.engine.state import SessionState, Status
from triggers_core.runtime.sessions import SessionFilter, SessionPage
from triggers_core.runtime.storage import Storage

__all__ = ["NOW", "SessionListingContract"]

#: The time every test measures staleness at.
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

_CONFIG = {
    "t_alpha": {"after": ["x"], "run": "contract_task"},
    "t_bravo": {"after": ["x", "z"], "run": "contract_task"},
}


def _configured() -> SessionState:
    return engine.update_configuration(SessionState(), _CONFIG).state


def _fire(state: SessionState, *triggers: str, at: datetime) -> SessionState:
    for trigger in triggers:
        state = engine.fire(state, trigger, now=at).state
    return state


def _finish(state: SessionState, name: str, at: datetime) -> SessionState:
    state = engine.mark_running(state, name, now=at).state
    return engine.finish(state, name, {}, now=at).state


#: How each kind of session is made, and which filters want it.
def _session(kind: str) -> SessionState:
    state = _configured()
    if kind == "configured":  # no instance at all
        return state
    if kind == "finished":  # every instance resolved
        state = _fire(state, "x", "z", at=NOW - timedelta(days=1))
        state = _finish(state, "t_alpha#0", NOW - timedelta(days=1))
        return _finish(state, "t_bravo#0", NOW - timedelta(days=1))
    if kind == "waiting":  # t_bravo#0 unstarted
        state = _fire(state, "x", at=NOW - timedelta(days=1))
        return _finish(state, "t_alpha#0", NOW - timedelta(days=1))
    if kind == "failed":
        state = _fire(state, "x", "z", at=NOW - timedelta(days=1))
        state = _finish(state, "t_alpha#0", NOW - timedelta(days=1))
        state = engine.mark_running(state, "t_bravo#0", now=NOW - timedelta(days=1)).state
        return engine.fail(
            state,
            "t_bravo#0",
            now=NOW - timedelta(days=1),
            exception_type="builtins.RuntimeError",
            exception_info="RuntimeError: boom",
        ).state
    if kind == "stuck":  # scheduled two hours ago, never ran
        return _fire(state, "x", at=NOW - timedelta(hours=2))
    if kind == "running":  # running for ten minutes
        state = _fire(state, "x", at=NOW - timedelta(minutes=10))
        return engine.mark_running(state, "t_alpha#0", now=NOW - timedelta(minutes=10)).state
    raise AssertionError(kind)


KINDS = ("configured", "finished", "waiting", "failed", "stuck", "running")


class SessionListingContract:
    """Base class of the session-listing tests (see the module docstring)."""

    # -- what subclasses provide ------------------------------------------------------

    def make_storage(self, uid: str) -> Storage:
        """A storage for session ``uid`` in the (initially empty) store being listed."""
        raise NotImplementedError("subclasses implement make_storage(uid)")

    def list_sessions(
        self, filter: SessionFilter, *, page_size: int, cursor: str | None
    ) -> SessionPage:
        """One page of the store's sessions."""
        raise NotImplementedError("subclasses implement list_sessions(filter, ...)")

    # -- helpers ----------------------------------------------------------------------

    def put(self, uid: str, state: SessionState) -> None:
        """Store ``state`` as a new session ``uid``."""
        names = frozenset(state.instances)
        self.make_storage(uid).compare_and_swap(
            None, state, Changes(instances=names, created=names, config=True)
        )

    def everything(self, filter: SessionFilter, page_size: int = 1000) -> list[str]:
        """Every UID the filter wants, following the cursors; checks each page's size."""
        uids: list[str] = []
        cursor: str | None = None
        for _ in range(10_000):
            page = self.list_sessions(filter, page_size=page_size, cursor=cursor)
            assert len(page.uids) <= page_size
            if page.cursor is not None:
                assert len(page.uids) == page_size, "only the last page may be short"
            uids.extend(page.uids)
            if page.cursor is None:
                return uids
            cursor = page.cursor
        raise AssertionError("the cursors never reached the end")

    @pytest.fixture
    def kinds(self) -> dict[str, str]:
        """One session of each kind: kind -> uid."""
        run = uuid.uuid4().hex[:8]
        uids = {kind: f"listing-{run}-{kind}" for kind in KINDS}
        for kind, uid in uids.items():
            self.put(uid, _session(kind))
        return uids

    # -- the contract -----------------------------------------------------------------

    def test_an_empty_store_lists_nothing(self) -> None:
        page = self.list_sessions(SessionFilter(), page_size=10, cursor=None)
        assert (page.uids, page.cursor) == ((), None)

    def test_every_session_once_whatever_the_page_size(self, kinds: dict[str, str]) -> None:
        for page_size in (1, 2, 5, 6, 7, 100):
            listed = self.everything(SessionFilter(), page_size)
            assert sorted(listed) == sorted(kinds.values()), page_size
            assert len(listed) == len(set(listed))

    def test_pages_come_in_a_stable_order(self, kinds: dict[str, str]) -> None:
        assert self.everything(SessionFilter(), 2) == self.everything(SessionFilter(), 4)

    def test_unresolved(self, kinds: dict[str, str]) -> None:
        listed = self.everything(SessionFilter(unresolved=True), 2)
        wanted = {"waiting", "failed", "stuck", "running"}
        assert sorted(listed) == sorted(kinds[k] for k in wanted)

    def test_failed(self, kinds: dict[str, str]) -> None:
        assert self.everything(SessionFilter(failed=True), 1) == [kinds["failed"]]

    def test_stale(self, kinds: dict[str, str]) -> None:
        hour = SessionFilter(stale_after=timedelta(hours=1), now=NOW)
        assert self.everything(hour, 1) == [kinds["stuck"]]
        minutes = SessionFilter(stale_after=timedelta(minutes=5), now=NOW)
        assert sorted(self.everything(minutes, 1)) == sorted([kinds["stuck"], kinds["running"]])
        day = SessionFilter(stale_after=timedelta(days=1), now=NOW)
        assert self.everything(day, 1) == []

    def test_expired(self, kinds: dict[str, str]) -> None:
        # ``t_w`` waited for x and z within an hour; only x fired: its window closed.
        state = engine.update_configuration(
            SessionState(),
            {"t_w": {"after": ["x", "z"], "within": "1h", "run": "contract_task"}},
        ).state
        state = engine.fire(state, "x", now=NOW - timedelta(days=1)).state
        state = engine.advance(state, NOW).state
        assert any(i.status is Status.EXPIRED for i in state.instances.values())
        uid = f"listing-{uuid.uuid4().hex[:8]}-expired"
        self.put(uid, state)
        assert self.everything(SessionFilter(expired=True), 1) == [uid]
        assert self.everything(SessionFilter(expired=True, failed=True)) == []
        assert kinds["failed"] not in self.everything(SessionFilter(expired=True))

    def test_filters_combine(self, kinds: dict[str, str]) -> None:
        both = SessionFilter(failed=True, unresolved=True)
        assert self.everything(both) == [kinds["failed"]]
        none = SessionFilter(failed=True, stale_after=timedelta(minutes=1), now=NOW)
        assert self.everything(none) == []

    def test_stale_pages_skip_fresh_candidates(self) -> None:
        # Many candidates (scheduled or running) but few stale: pages still fill up.
        run = uuid.uuid4().hex[:8]
        stale = []
        for n in range(12):
            uid = f"listing-{run}-{n:02}"
            self.put(uid, _session("stuck" if n % 3 == 0 else "running"))
            if n % 3 == 0:
                stale.append(uid)
        hour = SessionFilter(stale_after=timedelta(hours=1), now=NOW)
        for page_size in (1, 2, 3, 4, 5):
            assert sorted(self.everything(hour, page_size)) == stale

    def test_uids_come_back_exactly(self) -> None:
        uids = ["ümlaut séance", "with/slash#hash?q=1", "emoji-\U0001f600", " spaced "]
        for uid in uids:
            self.put(uid, _session("failed"))
        assert sorted(self.everything(SessionFilter(failed=True), 3)) == sorted(uids)

    def test_uid_prefix(self) -> None:
        run = uuid.uuid4().hex[:8]
        base = f"prefix-{run}-"
        inside = [
            base,
            base + "a",
            base + "a\x01",  # below a space: a padding collation must not drop it
            base + "a b",
            base + "a%_!\\",  # LIKE's and its escape's characters
            base + "\U0010ffff",
            base + "\U0010ffff\U0010ffff",
            base + "\ud7ff",
            base + "\ue000x",
        ]
        outside = [f"prefix-{run}", f"prefix-{run}.", f"Prefix-{run}-a", f"xprefix-{run}-"]
        for uid in inside + outside:
            self.put(uid, _session("failed" if uid.endswith("a") else "finished"))
        for page_size in (1, 2, 100):
            listed = self.everything(SessionFilter(uid_prefix=base), page_size)
            assert sorted(listed) == sorted(inside), page_size
        assert self.everything(SessionFilter(uid_prefix=base + "a%")) == [base + "a%_!\\"]
        assert self.everything(SessionFilter(uid_prefix=base + "a_")) == []
        assert self.everything(SessionFilter(uid_prefix=base + "A")) == []
        assert sorted(self.everything(SessionFilter(uid_prefix=base + "\U0010ffff"))) == sorted(
            [base + "\U0010ffff", base + "\U0010ffff\U0010ffff"]
        )
        failed = SessionFilter(uid_prefix=base + "a", failed=True)
        assert self.everything(failed, 1) == [base + "a"]
        everything = self.everything(SessionFilter(uid_prefix=f"prefix-{run}"), 3)
        assert sorted(everything) == sorted([*inside, f"prefix-{run}", f"prefix-{run}."])

    def test_a_bad_uid_prefix_is_refused(self) -> None:
        with pytest.raises(ValueError, match="uid_prefix"):
            SessionFilter(uid_prefix=3)
        with pytest.raises(ValueError, match="uid_prefix"):
            SessionFilter(uid_prefix="a\x00")

    def test_a_session_changes_filters_as_it_changes(self, kinds: dict[str, str]) -> None:
        storage = self.make_storage(kinds["failed"])
        snapshot = storage.load_full()
        replayed = engine.replay_failed(snapshot.state, "t_bravo#0", now=NOW)
        storage.compare_and_swap(snapshot.version, replayed.state, replayed.changes)
        assert self.everything(SessionFilter(failed=True)) == []
        clone = replayed.scheduled[0]
        assert replayed.state.instances[clone].status is Status.SCHEDULED
        assert kinds["failed"] in self.everything(SessionFilter(unresolved=True))

    def test_bad_page_sizes_and_cursors_are_refused(self, kinds: dict[str, str]) -> None:
        for size in (0, -1, 1001, True, 2.5):
            with pytest.raises(ValueError, match="page_size"):
                self.list_sessions(SessionFilter(), page_size=size, cursor=None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="cursor"):
            self.list_sessions(SessionFilter(), page_size=2, cursor=123)  # type: ignore[arg-type]

    def test_stale_needs_a_clock(self) -> None:
        with pytest.raises(ValueError, match="needs now"):
            SessionFilter(stale_after=timedelta(hours=1))
        with pytest.raises(ValueError, match="timezone-aware"):
            SessionFilter(stale_after=timedelta(hours=1), now=datetime(2024, 1, 1))
        with pytest.raises(ValueError, match="stale_after"):
            SessionFilter(stale_after=timedelta(hours=-1), now=NOW)
