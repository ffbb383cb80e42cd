"""Bounded waits on PostgreSQL and MariaDB: URL options, a frozen server, a held lock.

A :class:`~tcp_proxy.FreezingProxy` started by each test stands between the storage
and the server; ``freeze()`` makes it stop forwarding without closing anything,
as a hung server or a broken network does (TCP stays up, so keepalives see
nothing wrong). Every call must then end with a :class:`StorageError` within its
bound, and nothing may be half-written or left locked. The test threads are
joined with a generous limit only so that a regression fails instead of hanging.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from tcp_proxy import FreezingProxy

from triggers_backends.sqlalchemy import (
    SQLAlchemyStorage,
    create_schema,
    dispose_engines,
    drop_schema,
    metadata_for,
)
from triggers_backends.sqlalchemy import _writes as sql_writes
from triggers_core import ConflictError, StorageError, TriggerManager, open_storage
from triggers_core.testing.storage_contract import RecordingRunner

EVERY = {"t_every": {"after": ["tick"], "andEvery": "tick", "run": "contract_task"}}
#: How long a call may take before the test calls it hung (far above every bound used).
HUNG = 60.0


def call_in_thread(call: Callable[[], Any]) -> BaseException | None:
    """Run ``call``; return what it raised (None if it returned). Fails if it hangs."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HUNG)
    assert outcome, f"the call was still waiting after {HUNG}s: the bound did not hold"
    return outcome[0]


class FrozenServerCases:
    """Mixed into the PostgreSQL and MariaDB test modules."""

    #: The server's URL without Triggers options, and its port (the proxy replaces it).
    direct_url: ClassVar[str]
    port: ClassVar[int]

    def settings(self, conn: sa.Connection) -> dict[str, float]:
        """The server-side timeouts of a session, in seconds: lock, statement, idle."""
        raise NotImplementedError

    def hold_row_lock(self, conn: sa.Connection, table: sa.Table, uid_key: str) -> None:
        """Lock the session's row from another connection (inside its open transaction)."""
        conn.execute(
            sa.select(table.c.version).where(table.c.session_key == uid_key).with_for_update()
        )

    @pytest.fixture(autouse=True)
    def _setup(self, sql_engine: sa.Engine) -> Iterator[None]:
        self.engine = sql_engine
        self.prefix = f"t{uuid.uuid4().hex[:12]}_"
        self.uid = f"frozen-{uuid.uuid4().hex}"
        create_schema(sql_engine, self.prefix)
        self.proxy = FreezingProxy(("127.0.0.1", self.port))
        try:
            yield
        finally:
            self.proxy.close()
            dispose_engines()
            drop_schema(sql_engine, self.prefix)

    def url(self, *, proxied: bool = False, **options: str) -> str:
        base = self.direct_url
        if proxied:
            assert f":{self.port}/" in base
            base = base.replace(f":{self.port}/", f":{self.proxy.port}/")
        query = "&".join(f"{k}={v}" for k, v in {"triggers_prefix": self.prefix, **options}.items())
        return f"{base}{'&' if '?' in base else '?'}{query}"

    def manager(self, url: str) -> TriggerManager:
        return TriggerManager(
            url, uid=self.uid, runners={"rec": RecordingRunner()}, default_runner="rec"
        )

    def direct(self) -> SQLAlchemyStorage:
        return SQLAlchemyStorage(self.uid, self.engine, table_prefix=self.prefix)

    # -- options ------------------------------------------------------------------------

    def test_defaults_are_applied_to_engines_created_from_urls(self) -> None:
        storage = open_storage(self.url(), self.uid)
        assert isinstance(storage, SQLAlchemyStorage)
        engine = storage.engine
        assert not any(k.startswith("triggers_") for k in engine.url.query)
        assert storage.reference() == self.direct().reference()  # defaults are not repeated
        with engine.connect() as conn:
            assert self.settings(conn) == {"lock": 5, "statement": 30, "idle": 30}

    def test_url_options_set_the_bounds_and_travel_in_the_reference(self) -> None:
        url = self.url(
            triggers_connect_timeout="4", triggers_lock_timeout="3", triggers_statement_timeout="11"
        )
        storage = open_storage(url, self.uid)
        assert isinstance(storage, SQLAlchemyStorage)
        assert not any(
            k.startswith("triggers_") and k != "triggers_prefix" for k in storage.engine.url.query
        )
        with storage.engine.connect() as conn:
            assert self.settings(conn) == {"lock": 3, "statement": 11, "idle": 11}
        reference = storage.reference()
        for option in (
            "triggers_connect_timeout=4",
            "triggers_lock_timeout=3",
            "triggers_statement_timeout=11",
        ):
            assert option in reference
        reopened = open_storage(reference, self.uid)
        assert reopened.reference() == reference  # type: ignore[union-attr]

    @pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon", "86401"])
    def test_a_bad_timeout_option_is_refused_naming_it(self, value: str) -> None:
        with pytest.raises(
            ValueError, match=f"triggers_statement_timeout must be a number of seconds.*{value!r}"
        ):
            open_storage(self.url(triggers_statement_timeout=value), self.uid)

    # -- faults -------------------------------------------------------------------------

    def test_a_frozen_server_is_a_storage_error_and_nothing_is_written(self) -> None:
        manager = self.manager(
            self.url(
                proxied=True,
                triggers_statement_timeout="1",
                triggers_connect_timeout="1",
                triggers_lock_timeout="1",
            )
        )
        manager.update_configuration(EVERY)
        manager.fire("tick", {"n": 0})  # the pool now holds a working connection
        before = self.direct().load_full()

        self.proxy.freeze()
        for _ in range(2):  # the pooled connection, then a new one
            raised = call_in_thread(lambda: manager.fire("tick", {"n": 1}))
            assert isinstance(raised, StorageError), raised
            assert not isinstance(raised, ConflictError)
            assert "_timeout=" in str(raised)
            assert self.uid in str(raised)
        after = self.direct().load_full()
        assert after.version == before.version
        assert set(after.state.instances) == {"t_every#0"}

        self.proxy.thaw()
        assert [i.name for i in manager.fire("tick", {"n": 2})] == ["t_every#1"]

    @pytest.mark.parametrize("in_one", [False, True], ids=["transaction", "one-statement"])
    def test_a_server_frozen_mid_write_leaves_nothing_half_written_and_no_lock(
        self, in_one: bool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        if not in_one:  # PostgreSQL: a commit too large for one statement (others: always)
            monkeypatch.setattr(sql_writes, "MAX_IN_ONE", -1)
        manager = self.manager(
            self.url(proxied=True, triggers_statement_timeout="1", triggers_connect_timeout="1")
        )
        manager.update_configuration(EVERY)
        manager.fire("tick", {"n": 0})
        before = self.direct().load_full()
        engine = manager.storage.engine  # type: ignore[attr-defined]
        instances = metadata_for(self.prefix).tables[f"{self.prefix}instances"].name

        def freeze_before_the_instance_rows(
            _conn: Any, _cursor: Any, statement: str, *_args: Any
        ) -> None:
            if "INSERT" in statement.upper() and instances in statement:
                # the session row is updated and locked by now (in a transaction), or
                # the one statement that writes everything is about to be sent
                self.proxy.freeze()

        event.listen(engine, "before_cursor_execute", freeze_before_the_instance_rows)
        try:
            raised = call_in_thread(lambda: manager.fire("tick", {"n": 1}))
        finally:
            event.remove(engine, "before_cursor_execute", freeze_before_the_instance_rows)
        assert isinstance(raised, StorageError), raised
        assert "triggers_statement_timeout=1" in str(raised), raised

        # Readers see the last commit; the half-done write never becomes visible.
        after = self.direct().load_full()
        assert after.version == before.version
        assert set(after.state.instances) == {"t_every#0"}
        # The server ends the frozen client's transaction (idle timeout): a direct
        # writer gets the row lock and commits.
        direct = TriggerManager(
            self.direct(), runners={"rec": RecordingRunner()}, default_runner="rec"
        )
        assert call_in_thread(lambda: direct.fire("tick", {"n": 2})) is None
        assert set(self.direct().load_full().state.instances) == {"t_every#0", "t_every#1"}

    def test_a_held_row_lock_is_a_storage_error_not_a_retried_conflict(self) -> None:
        manager = self.manager(self.url(triggers_lock_timeout="1"))
        manager.update_configuration(EVERY)
        before = self.direct().load_full()
        sessions = metadata_for(self.prefix).tables[f"{self.prefix}sessions"]
        key = self.direct()._key
        with self.engine.connect() as holder, holder.begin():
            self.hold_row_lock(holder, sessions, key)
            raised = call_in_thread(lambda: manager.fire("tick"))
        assert isinstance(raised, StorageError), raised
        assert not isinstance(raised, ConflictError)  # a conflict would be retried, waiting again
        assert "row lock for longer than 1s (triggers_lock_timeout=1" in str(raised)
        assert self.direct().load_full().version == before.version
        assert [i.name for i in manager.fire("tick")] == ["t_every#0"]

    def test_a_server_that_never_answers_the_handshake_is_a_storage_error(self) -> None:
        self.proxy.freeze()
        storage = open_storage(
            self.url(proxied=True, triggers_connect_timeout="1", triggers_statement_timeout="1"),
            self.uid,
        )
        raised = call_in_thread(storage.load)
        assert isinstance(raised, StorageError), raised
        assert "_timeout=" in str(raised)
