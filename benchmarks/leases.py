"""What leases cost: a no-op task end to end with and without them, a renewal, and a sweep.

Usage: ``python -m benchmarks.leases [--quick] [--backends memory,sqlite,...]`` from the
repository root (``nox -s bench`` runs it after ``benchmarks.run``). Prints a Markdown
report; nothing asserts a timing, every run asserts its outcome.

* **No-op task end to end**: ``fire`` then ``run_instance`` (mark ``running`` under a
  lease, run ``triggers.DevNullTask``, finish), one instance per fire, on a session
  whose storage keeps leases and on one whose ``check_leases`` is switched off (runs
  without a lease, as on a storage that keeps none), taking turns instance by
  instance; median per instance.
  A no-op body ends long before its first renewal (a third of the 30 s lease), so the
  difference is taking and dropping the lease; a renewal's own cost is measured apart
  (``renew_lease`` on a running instance), and its share of a body's time is one
  renewal per 10 s.
* **Sweep over N sessions with 10 due**: N sessions each with one instance ``running``
  under a lease that is still good, 10 more whose lease expired; written straight
  through ``compare_and_swap`` (what N fires and starts would leave; on SQL, copies of
  the first session's rows), a store of its own for N = 100 and for N = 100,000. Timed:
  a dry-run ``sweep_store`` (it reads the due index and each due instance, and changes
  nothing) from a new storage object (a cold cache, as a worker's sweeper), the two
  stores taking turns; median of repeats. Then one real sweep of each, which must take
  over exactly the 10.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import sqlalchemy as sa

import triggers_core.testing  # noqa: F401 - registers triggers.DevNullTask
from benchmarks.backends import backends
from benchmarks.common import Backend, RecordingRunner, StorageFactory, uid
from triggers_core import SessionState, Status, TriggerManager, engine
from triggers_core.engine.leases import Due, DueKind
from triggers_core.engine.scopes import Changes
from triggers_core.engine.state import TaskInstance
from triggers_core.errors import UnsupportedOperationError
from triggers_core.runtime.recovery import sweep_store
from triggers_core.runtime.storage import Storage

NOOP_CONFIG = {"t_noop": {"after": ["tick"], "andEvery": "tick", "run": "triggers.DevNullTask"}}
SWEEP_CONFIG = {"t_a": {"after": ["go"], "run": "triggers.DevNullTask"}}
DUE = 10
RENEWAL_PERIOD = 10.0  # seconds between renewals at the default 30 s lease
NOOP_TARGET = 1.05
SWEEP_TARGET = 1.5
DEFAULT_BACKENDS = ("memory", "sqlite", "postgresql", "memcached")


def _no_leases(storage: Storage) -> Storage:
    def refuse() -> None:
        raise UnsupportedOperationError("leases", storage.backend_name, "switched off here")

    storage.check_leases = refuse  # type: ignore[method-assign]
    return storage


def _manager(storage: Storage) -> TriggerManager:
    manager = TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")
    manager.update_configuration(NOOP_CONFIG)
    return manager


def noop_end_to_end(make: StorageFactory, fires: int, rounds: int) -> tuple[float, float]:
    """Median ms per no-op instance (fire, start, run, finish): (with leases, without).

    The two sessions take turns instance by instance (the order swapped every
    time), so a machine whose load drifts weighs on both alike.
    """
    leased = _manager(make(uid("noop-leased")))
    bare = _manager(_no_leases(make(uid("noop-bare"))))
    samples: dict[bool, list[float]] = {True: [], False: []}
    for n in range(fires * rounds):
        for with_leases in (True, False) if n % 2 else (False, True):
            manager = leased if with_leases else bare
            began = time.perf_counter()
            (scheduled,) = manager.fire("tick", {"n": n})
            done = manager.run_instance(scheduled.name)
            samples[with_leases].append(time.perf_counter() - began)
            assert done is not None
            assert done.status is Status.FINISHED, done
            assert ("owner" in done.metadata) is with_leases, done.metadata
    return statistics.median(samples[True]) * 1000, statistics.median(samples[False]) * 1000


def renewal_ms(make: StorageFactory, repeats: int) -> float:
    """Median ms of one ``renew_lease`` on a running instance."""
    storage = make(uid("renew"))
    owner = "bench-run"
    now = datetime.now(UTC)
    _seed_running(storage, SessionState(), now + timedelta(seconds=30), owner)
    samples = []
    for n in range(repeats):
        expires = now + timedelta(seconds=31 + n)
        began = time.perf_counter()
        renewed = storage.renew_lease("t_a#0", owner, expires)
        samples.append(time.perf_counter() - began)
        assert renewed
    return statistics.median(samples) * 1000


def _seed_running(
    storage: Storage, tasks_state: SessionState, expires: datetime, owner: str
) -> None:
    """One session with ``t_a#0`` running under a lease of ``owner`` expiring at ``expires``."""
    tasks = (
        tasks_state.tasks or engine.update_configuration(SessionState(), SWEEP_CONFIG).state.tasks
    )
    started = (expires - timedelta(seconds=30)).isoformat()
    instance = TaskInstance(
        name="t_a#0",
        task_name="t_a",
        status=Status.RUNNING,
        kwargs={"go": {}},
        metadata={
            "created": started,
            "timestamps": {"running": started},
            "owner": owner,
            "worker": {"host": "bench", "pid": 0},
            "leaseExpires": expires.isoformat(),
            "leaseSeconds": 30,
        },
    )
    state = SessionState(tasks=tasks, instances={"t_a#0": instance}, counters={"t_a": 1})
    names = frozenset({"t_a#0"})
    due = {"t_a#0": Due(DueKind.LEASE, expires, owner)}
    storage.compare_and_swap(
        None, state, Changes(instances=names, created=names, config=True, due=due)
    )


def _copy_sql_session(template: Any, uids: list[str]) -> None:
    """Copies of ``template``'s session (its rows in every table), one per uid."""
    tables = template._tables
    key = hashlib.sha256(template.uid.encode()).hexdigest()
    with template.engine.begin() as conn:
        rows = {
            table: [
                dict(r._mapping)
                for r in conn.execute(sa.select(table).where(table.c.session_key == key))
            ]
            for table in (tables.sessions, tables.instances, tables.due)
        }
    assert all(rows.values()), rows
    for start in range(0, len(uids), 5_000):
        batch = uids[start : start + 5_000]
        with template.engine.begin() as conn:
            for table, originals in rows.items():
                copies = []
                for uid_ in batch:
                    for original in originals:
                        copy = {
                            **original,
                            "session_key": hashlib.sha256(uid_.encode()).hexdigest(),
                        }
                        if "uid" in copy:
                            copy["uid"] = uid_
                        copies.append(copy)
                conn.execute(table.insert(), copies)


@attrs.frozen
class SweptStore:
    """A store seeded for the sweep benchmark: ``sessions`` good runs and 10 lost ones."""

    make: StorageFactory
    prefix: str
    now: datetime
    seeding: float  # seconds


def seed_store(make: StorageFactory, sessions: int) -> SweptStore:
    """``sessions`` sessions running under a good lease, and 10 whose lease expired."""
    tasks = engine.update_configuration(SessionState(), SWEEP_CONFIG).state
    now = datetime.now(UTC)
    prefix = uid(f"sweep{sessions}")
    seeding = time.perf_counter()
    later = now + timedelta(hours=1)
    _seed_running(make(f"{prefix}-ok-0"), tasks, later, "ok-0")
    template = make(f"{prefix}-ok-0")
    if hasattr(template, "_tables"):  # SQL: copy the first session's rows, 5,000 a statement
        _copy_sql_session(template, [f"{prefix}-ok-{n}" for n in range(1, sessions)])
    else:
        with ThreadPoolExecutor(8) as pool:  # a network store: keep several round trips going
            list(
                pool.map(
                    lambda n: _seed_running(make(f"{prefix}-ok-{n}"), tasks, later, f"ok-{n}"),
                    range(1, sessions),
                )
            )
    for n in range(DUE):
        _seed_running(make(f"{prefix}-lost-{n}"), tasks, now - timedelta(seconds=n + 1), f"x{n}")
    return SweptStore(make, prefix, now, time.perf_counter() - seeding)


def _factory(storage: Storage) -> TriggerManager:
    return TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")


def sweep_ms(stores: list[SweptStore], repeats: int) -> list[float]:
    """Median ms of a dry-run sweep of each store, the stores taking turns (load drifts
    weigh on all alike); then one real sweep of each, which must take over its 10."""
    samples: list[list[float]] = [[] for _ in stores]
    for _ in range(repeats):
        for index, store in enumerate(stores):
            sweeper = store.make(f"{store.prefix}-sweeper")  # its own object: a cold cache
            began = time.perf_counter()
            report = sweep_store(sweeper, _factory, now=store.now, dry_run=True)
            samples[index].append(time.perf_counter() - began)
            assert len(report.acted) == DUE, report
            with contextlib.suppress(Exception):
                sweeper.close()
    for store in stores:
        report = sweep_store(store.make(f"{store.prefix}-sweeper"), _factory, now=store.now)
        expected = sorted(f"{store.prefix}-lost-{n}" for n in range(DUE))
        assert sorted(a.session for a in report.acted) == expected, report
        assert store.make(f"{store.prefix}-lost-0")["t_a#0"].status is Status.REPLAYED
        assert store.make(f"{store.prefix}-ok-0")["t_a#0"].status is Status.RUNNING
    return [statistics.median(s) * 1000 for s in samples]


def run(chosen: list[Backend], quick: bool) -> list[str]:
    fires, rounds = (5, 1) if quick else (200, 3)
    sizes = (10, 50) if quick else (100, 100_000)
    sweeps = 3 if quick else 25
    noop_rows, renew_rows, sweep_rows, checks = [], [], [], []
    for backend in chosen:
        print(f"  {backend.label}: leases ...", file=sys.stderr, flush=True)
        with backend.open() as make:
            leased, bare = noop_end_to_end(make, fires, rounds)
            renew = renewal_ms(make, 10 if quick else 100)
        with contextlib.ExitStack() as stack:  # a store of its own for each size
            stores = [seed_store(stack.enter_context(backend.open()), n) for n in sizes]
            swept = sweep_ms(stores, sweeps)
        cost = [(ms, store.seeding) for ms, store in zip(swept, stores, strict=True)]
        ratio = leased / bare
        share = renew / (RENEWAL_PERIOD * 1000) * 100
        noop_rows.append([backend.label, f"{bare:.3f}", f"{leased:.3f}", f"{ratio:.3f}"])
        renew_rows.append([backend.label, f"{renew:.3f}", f"{share:.4f}%"])
        sweep_ratio = cost[-1][0] / cost[0][0]
        sweep_rows.append(
            [
                backend.label,
                *(f"{ms:.2f}" for ms, _ in cost),
                f"{sweep_ratio:.2f}",
                f"{cost[-1][1]:.0f}",
            ]
        )
        checks.append((backend.label, ratio, sweep_ratio))
    lines = [
        "",
        "### Leases: a no-op task end to end, with and without a lease "
        f"(median ms per instance, {rounds} x {fires} per variant)",
        "",
        *_table(["backend", "no lease", "lease", "lease / no lease"], noop_rows),
        "",
        "### A lease renewal (median ms of one `renew_lease`; share of a running body's time "
        f"at the default lease: one renewal per {RENEWAL_PERIOD:g} s)",
        "",
        *_table(["backend", "renewal ms", "share"], renew_rows),
        "",
        f"### A sweep over N sessions with {DUE} lost runs (median ms of {sweeps} dry-run "
        "sweeps from a cold storage object, the two stores taking turns)",
        "",
        *_table(
            [
                "backend",
                *(f"N={n:,}" for n in sizes),
                f"{sizes[-1]:,}/{sizes[0]:,}",
                "seeding s",
            ],
            sweep_rows,
        ),
        "",
        "Targets:",
        "",
    ]
    worst_noop = max(checks, key=lambda c: c[1])
    worst_sweep = max(checks, key=lambda c: c[2])
    lines += [
        f"- leases add <= {NOOP_TARGET - 1:.0%} to a no-op task end to end: worst "
        f"{worst_noop[1]:.3f} ({worst_noop[0]}) "
        + ("**met**" if worst_noop[1] <= NOOP_TARGET else "**NOT met**"),
        f"- sweep over {sizes[-1]:,} vs {sizes[0]:,} sessions, {DUE} due, ratio <= "
        f"{SWEEP_TARGET}: worst {worst_sweep[2]:.2f} ({worst_sweep[0]}) "
        + ("**met**" if worst_sweep[2] <= SWEEP_TARGET else "**NOT met**"),
    ]
    return lines


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def row(cells: list[Any]) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    return [row(header), row(["---"] * len(header)), *(row(r) for r in rows)]


@contextlib.contextmanager
def _tmp() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield tmp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS))
    args = parser.parse_args(argv)
    logging.getLogger("triggers_core.recovery").setLevel(logging.ERROR)  # one line per take-over
    wanted = set(args.backends.split(","))
    with _tmp() as tmp:
        chosen = [b for b in backends(tmp, wanted) if b.label in wanted]
        lines = run(chosen, args.quick)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
