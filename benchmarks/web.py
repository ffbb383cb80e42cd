"""The web console on big sessions and big stores (issue 26): server-side time per page.

``python -m benchmarks.web [--quick]`` prints a Markdown report:

* a session of 10,000 instances (9,900 finished, 100 failed, each with its
  times), in memory and in SQLite: the session page (read the session, sort
  its instances, draw the timeline and the table of one page), and the
  instance page; target: a session page under 1 s;
* a store of 100,000 sessions, in memory and in SQLite: the first page of the
  session list, a page deep in the list (by its cursor), a UID-prefix search
  and the failed filter; each page reads one page of the listing API (never
  the whole store) plus one session header per row.

Times are medians of repeated requests through :meth:`Console.handle` (the
view layer, no HTTP). Nothing here asserts a timing; the runs do check that
every page answered 200 with what it should show.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import sqlalchemy as sa

from triggers_backends.sqlalchemy import SQLAlchemyStorage
from triggers_backends.sqlalchemy._tables import row_key, tables_for
from triggers_core import SessionState, Storage, engine
from triggers_core.engine.scopes import Changes
from triggers_core.runtime.memory import MemoryStorage, named_store
from triggers_core.tools.listing import list_sessions
from triggers_core.web.console import Console, WebRequest

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
CONFIG = {
    "t_page": {"after": ["start"], "andEvery": "page", "run": "bench.page"},
    "t_done": {"after": ["finished"], "run": "bench.done"},
}


def big_session(instances: int) -> SessionState:
    """A session with ``instances`` resolved instances of ``t_page``, one in a hundred failed.

    The engine makes the first few; the rest are copies with their own names,
    kwargs and times (making 10,000 one fire at a time would take minutes).
    """
    state = engine.update_configuration(SessionState(), CONFIG).state
    state = engine.fire_checked(state, "start", {}, now=T0).state
    samples = {}
    for n, fail in ((0, False), (1, True)):
        fired = engine.fire_checked(state, "page", {"n": n}, now=T0)
        state = fired.state
        (name,) = fired.scheduled
        state = engine.mark_running(state, name, now=T0 + timedelta(seconds=0.2)).state
        done = T0 + timedelta(seconds=0.7)
        if fail:
            state = engine.fail(
                state,
                name,
                now=done,
                exception_type="builtins.ValueError",
                exception_info="Traceback (most recent call last):\nValueError: page",
            ).state
        else:
            state = engine.finish(state, name, {"score": n}, now=done).state
        samples[fail] = state.instances[name]
    made = {}
    for n in range(instances):
        sample = samples[n % 100 == 99]
        shift = timedelta(seconds=n)
        stamps = {
            status: (datetime.fromisoformat(stamp) + shift).isoformat()
            for status, stamp in sample.metadata["timestamps"].items()
        }
        name = f"t_page#{n}"
        made[name] = attrs.evolve(
            sample,
            name=name,
            kwargs={"start": {}, "page": {"n": n, "text": "x" * 40}},
            metadata={**sample.metadata, "created": stamps["unstarted"], "timestamps": stamps},
        )
    return attrs.evolve(state, instances=made, counters={**state.counters, "t_page": instances})


def store_session(storage: Storage, state: SessionState) -> None:
    names = frozenset(state.instances)
    storage.compare_and_swap(None, state, Changes(instances=names, created=names, config=True))


def median_ms(call: Callable[[], Any], runs: int) -> float:
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def get(console: Console, path: str, expect: str, **query: str) -> Callable[[], None]:
    request = WebRequest("GET", path, query)

    def call() -> None:
        response = console.handle(request)
        assert response.status == 200, response.body[:500]
        assert expect.encode() in response.body, expect

    return call


def session_pages(url: str, make: Callable[[str], Storage], size: int, runs: int) -> list[str]:
    uid = f"big-{size}"
    store_session(make(uid), big_session(size))
    console = Console(url, clock=lambda: T0 + timedelta(days=1))
    rows = []
    for label, call in (
        ("session page", get(console, "/session", f"{size} instances", uid=uid)),
        (
            "session page, failed only",
            get(console, "/session", "t_page#99", uid=uid, status="failed"),
        ),
        ("instance page", get(console, "/instance", "t_page#5", uid=uid, name="t_page#5")),
    ):
        call()  # warm
        rows.append(f"| {label} | {size:,} | {median_ms(call, runs):.0f} |")
    return rows


def fill_memory_store(name: str, sessions: int) -> None:
    state = engine.update_configuration(SessionState(), CONFIG).state
    failed = big_session(100)
    for n in range(sessions):
        store_session(
            MemoryStorage(f"s-{n:07d}", store_name=name), failed if n % 1000 == 7 else state
        )


def fill_sqlite(url: str, sessions: int) -> None:
    """One session written by the storage, then copied row by row (with its instances)."""
    state = engine.update_configuration(SessionState(), CONFIG).state
    store_session(SQLAlchemyStorage.from_url(url, "template"), state)
    store_session(SQLAlchemyStorage.from_url(url, "failed-template"), big_session(100))
    tables = tables_for("triggers_")
    db = sa.create_engine(url)
    with db.begin() as conn:
        template = (
            conn.execute(sa.select(tables.sessions).where(tables.sessions.c.uid == "template"))
            .mappings()
            .one()
        )
        failed = (
            conn.execute(
                sa.select(tables.sessions).where(tables.sessions.c.uid == "failed-template")
            )
            .mappings()
            .one()
        )
        failed_rows = (
            conn.execute(
                sa.select(tables.instances).where(
                    tables.instances.c.session_key == failed["session_key"]
                )
            )
            .mappings()
            .all()
        )
        batch: list[dict[str, Any]] = []
        instance_rows: list[dict[str, Any]] = []
        for n in range(sessions):
            uid = f"s-{n:07d}"
            source = failed if n % 1000 == 7 else template
            batch.append({**source, "uid": uid, "session_key": row_key(uid)})
            if source is failed:
                instance_rows.extend({**r, "session_key": row_key(uid)} for r in failed_rows)
            if len(batch) == 5000:
                conn.execute(tables.sessions.insert(), batch)
                batch = []
        if batch:
            conn.execute(tables.sessions.insert(), batch)
        conn.execute(tables.instances.insert(), instance_rows)
    db.dispose()


def listing_pages(url: str, sessions: int, runs: int) -> list[str]:
    console = Console(url, clock=lambda: T0 + timedelta(days=1))
    first = console.handle(WebRequest("GET", "/", {}))
    assert first.status == 200
    # A page deep in the list: follow the cursors of the listing API itself.
    cursor = None
    for _ in range(sessions // 2000):  # half-way down the list
        cursor = list_sessions(url, page_size=1000, cursor=cursor).cursor
    rows = []
    for label, call in (
        ("first page", get(console, "/", "next page")),
        ("a page half-way down", get(console, "/", "next page", cursor=cursor or "")),
        ("UID prefix search", get(console, "/", "s-0012345", prefix="s-0012345")),
        ("failed filter", get(console, "/", "s-", failed="1")),
    ):
        call()
        rows.append(f"| {label} | {sessions:,} | {median_ms(call, runs):.0f} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    args = parser.parse_args(argv)
    instances, sessions, runs = (200, 2_000, 2) if args.quick else (10_000, 100_000, 5)
    lines = [
        "## Web console: server-side time per page (median ms)",
        "",
        "| page | instances | memory | SQLite |",
        "|---|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        memory_url = f"memory://bench-web-{time.time_ns()}"
        memory = session_pages(
            memory_url, lambda uid: MemoryStorage(uid, store_name=memory_url[9:]), instances, runs
        )
        sqlite_url = f"sqlite:///{Path(tmp) / 'web.db'}"
        sqlite = session_pages(
            sqlite_url, lambda uid: SQLAlchemyStorage.from_url(sqlite_url, uid), instances, runs
        )
        for mem, sql in zip(memory, sqlite, strict=True):
            lines.append(
                mem.rsplit(" |", 1)[0] + " | " + sql.rsplit("| ", 1)[1].rstrip(" |") + " |"
            )
        lines += [
            "",
            "| session list | sessions in the store | memory | SQLite |",
            "|---|---:|---:|---:|",
        ]
        list_url = f"memory://bench-list-{time.time_ns()}"
        fill_memory_store(list_url[9:], sessions)
        memory_rows = listing_pages(list_url, sessions, runs)
        list_sqlite = f"sqlite:///{Path(tmp) / 'list.db'}"
        fill_sqlite(list_sqlite, sessions)
        sqlite_rows = listing_pages(list_sqlite, sessions, runs)
        for mem, sql in zip(memory_rows, sqlite_rows, strict=True):
            lines.append(
                mem.rsplit(" |", 1)[0] + " | " + sql.rsplit("| ", 1)[1].rstrip(" |") + " |"
            )
        named_store(memory_url[9:]).clear()
        named_store(list_url[9:]).clear()
    lines.append("")
    lines.append("Target: a session page of 10,000 instances under 1,000 ms.")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
