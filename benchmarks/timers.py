"""The store's clock against the number of pending timers (issue 24).

A store holds ``sessions`` sessions, each with ``per_session`` unstarted
instances whose ``within`` windows are open (one pending timer each); the
deadlines are spread so that each round of the clock finds exactly ``due``
timers due (those of ``due / per_session`` sessions). A round is one
:func:`~triggers_core.runtime.clock.tick_store` that expires them (each expiry
is a commit). The time of a round with many pending timers is compared with
one with few: a tick reads the due index, so its cost follows what is due,
not what is pending.

Run: ``python -m benchmarks.timers [--sessions N] [--small N] [--backends memory,sqlite]``;
backends ``memory``, ``sqlite``, ``postgresql`` (``TRIGGERS_BENCH_POSTGRES_URL``) and
``django-redis-cache`` (``TRIGGERS_BENCH_REDIS_URL``). ``--bulk``: the large run seeds
``--small`` sessions through the manager and writes the rest of its pending timers
straight into the due index (:mod:`benchmarks.timers_bulk`), due after every round.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks import django_cache
from benchmarks.backends import DEFAULT_URLS, URL_ENV, memory_backend, sql_backend
from benchmarks.common import RecordingRunner, StorageFactory
from triggers_core import SessionState, TriggerManager, engine
from triggers_core.engine.leases import DueKind
from triggers_core.engine.state import Status
from triggers_core.runtime.clock import tick_store
from triggers_core.runtime.storage import Storage

T0 = datetime(2030, 1, 1, tzinfo=UTC)
WITHIN = timedelta(hours=1)


def _config(per_session: int) -> dict[str, dict[str, object]]:
    return {
        f"t_{k}": {"after": ["go", f"never{k}"], "run": "bench", "within": "1h"}
        for k in range(per_session)
    }


def seed(make: StorageFactory, sessions: int, per_session: int, prefix: str) -> None:
    """``sessions`` sessions; session ``s`` fired at ``T0 + s`` seconds (its deadlines then)."""
    config = engine.update_configuration(SessionState(), _config(per_session)).state
    for s in range(sessions):
        storage = make(f"{prefix}{s}")
        snapshot = storage.load_full()
        state = engine.update_configuration(snapshot.state, config.tasks)
        fired = engine.fire(state.state, "go", {}, now=T0 + timedelta(seconds=s))
        storage.compare_and_swap(snapshot.version, fired.state, _changes(state, fired))


def _changes(configured: engine.Transition, fired: engine.Transition) -> object:
    changes = fired.changes
    return type(changes)(
        instances=changes.instances,
        created=changes.created,
        config=True,
        fire_records=changes.fire_records,
        due=changes.due,
    )


def rounds(
    make: StorageFactory, prefix: str, due: int, per_session: int, count: int
) -> Iterator[tuple[float, float]]:
    """``(find, tick)`` seconds of each round; each expires exactly ``due`` timers (checked)."""
    runner = RecordingRunner()

    def factory(storage: Storage) -> TriggerManager:
        manager = TriggerManager(storage, runners={"rec": runner}, default_runner="rec")
        manager.sweep_interval = None
        return manager

    step = due // per_session
    any_storage = make(f"{prefix}0")
    for r in range(count):
        now = T0 + WITHIN + timedelta(seconds=step * (r + 1) - 1)
        started = time.perf_counter()
        found = any_storage.due_entries(DueKind.TIMER, now, limit=10 * due)
        find = time.perf_counter() - started
        assert len(found) == due, (len(found), due)
        started = time.perf_counter()
        report = tick_store(any_storage, factory, now=now, limit=10 * due)
        tick = time.perf_counter() - started
        fired = [a for a in report.actions if a.action == "timer fired"]
        assert len(fired) == due, (len(fired), due)
        for a in fired[:1]:
            assert make(a.session).get_instance(a.instance).status is Status.EXPIRED
        yield find, tick


def measure(
    label: str,
    backend: Callable[[], AbstractContextManager[StorageFactory]],
    *,
    sessions: int,
    small: int,
    per_session: int,
    due: int,
    count: int,
    settle: Callable[[], None] | None = None,
    bulk: bool = False,
) -> str:
    """Both stores (few and many pending timers) are built first, then their rounds
    alternate, so that a change of the machine's load weighs on both alike."""
    seeded = 0.0
    with contextlib.ExitStack() as stack:
        runs = []
        for n in (small, sessions):
            make = stack.enter_context(backend())
            started = time.perf_counter()
            real = small if bulk else n
            seed(make, real, per_session, f"s{n}-")
            if real < n:
                from benchmarks.timers_bulk import bulk_pending  # noqa: PLC0415

                # Due after every round: the rounds reach T0 + WITHIN + small seconds at most.
                first = T0 + WITHIN + timedelta(seconds=small + 100)
                bulk_pending(make(f"s{n}-0"), n - real, per_session, first, timedelta(days=1))
            seeded = time.perf_counter() - started
            if bulk:
                from benchmarks.timers_bulk import timers_in_index  # noqa: PLC0415

                held = timers_in_index(make(f"s{n}-0"))
                assert held == n * per_session, (held, n * per_session)
            runs.append(rounds(make, f"s{n}-", due, per_session, count))
        gc.collect()  # the seeding's garbage is not the tick's cost
        if settle is not None:
            settle()
        measured: list[list[tuple[float, float]]] = [[], []]
        for _ in range(count):
            for k, run in enumerate(runs):
                measured[k].append(next(run))
    (f_few, t_few), (f_many, t_many) = (
        (statistics.median(f for f, _ in m), statistics.median(t for _, t in m)) for m in measured
    )
    few, many = small * per_session, sessions * per_session
    return (
        f"| {label} | {few:,} | {f_few * 1000:.2f} | {t_few * 1000:.1f} | {many:,} | "
        f"{f_many * 1000:.2f} | {t_many * 1000:.1f} | {f_many / f_few:.2f} | "
        f"{t_many / t_few:.2f} | {seeded:.0f} s |"
    )


def lateness(sessions: int) -> str:
    """Real time, in-process: ``sessions`` delayed instances due at once, ticked by the
    store's own clock thread (every second); lateness = scheduled - delayedUntil."""
    from triggers_core.engine.leases import parse_time  # noqa: PLC0415
    from triggers_core.runtime.memory import MemoryStorage, MemoryStore  # noqa: PLC0415
    from triggers_core.runtime.recovery import StoreSweeper  # noqa: PLC0415
    from triggers_core.testing import sample_tasks  # noqa: F401, PLC0415 - registers DevNullTask

    store, runner = MemoryStore(), RecordingRunner()
    managers = []
    for s in range(sessions):
        manager = TriggerManager(MemoryStorage(f"late-{s}", store), runners={"threading": runner})
        manager.update_configuration(
            {"t_x": {"after": ["go"], "run": "triggers.DevNullTask", "delay": "2s"}}
        )
        managers.append(manager)
    for manager in managers:
        manager.fire("go")
    deadline = time.monotonic() + 60
    waiting = list(managers)
    while waiting:  # the clock thread's managers dispatch (not to this runner): poll
        assert time.monotonic() < deadline, len(waiting)
        waiting = [m for m in waiting if m.storage.get_instance("t_x#0").status is Status.UNSTARTED]
        time.sleep(0.05)
    late = []
    for manager in managers:
        instance = manager.storage.get_instance("t_x#0")
        scheduled = parse_time(instance.metadata["timestamps"]["scheduled"])
        due = parse_time(instance.metadata["delayedUntil"])
        assert scheduled is not None
        assert due is not None
        late.append((scheduled - due).total_seconds())
    sweeper = StoreSweeper.for_store(managers[0].storage, TriggerManager)
    if sweeper is not None:
        sweeper.stop()
    late.sort()
    p50, p99 = late[len(late) // 2], late[min(len(late) - 1, int(len(late) * 0.99))]
    return (
        f"| memory, in-process clock thread | {sessions} | {p50 * 1000:.0f} | "
        f"{p99 * 1000:.0f} | {late[-1] * 1000:.0f} |"
    )


def chosen_lateness() -> dict[
    str, tuple[Callable[[], AbstractContextManager[StorageFactory]], bool]
]:
    """Backend label -> (factory, shared by processes) for the sustained lateness runs."""
    redis_label = "django-redis-cache"
    return {
        "memory": (memory_backend, False),
        redis_label: (lambda: django_cache.django_backend(redis_label, {redis_label}), True),
    }


def sustained(args: argparse.Namespace, chosen: dict[str, Any]) -> str:
    """Lateness at ``--rate`` due timers/s for ``--duration`` s (``timers_lateness``)."""
    from benchmarks import timers_lateness  # noqa: PLC0415

    lines = [
        f"### Timer lateness at {args.rate} due timers/s for {args.duration:g} s "
        f"(load average {os.getloadavg()[0]:.1f} at the start)",
        "",
        *timers_lateness.HEADER,
    ]
    for name in args.backends.split(","):
        backend, shared = chosen[name]
        for mode in args.clocks.split(","):
            row = timers_lateness.run(
                name,
                backend,
                rate=args.rate,
                duration=args.duration,
                mode=mode,
                shared=shared,
                tick_workers=args.tick_workers,
            )
            print(row, flush=True)
            lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--per-session", type=int, default=10)
    parser.add_argument("--due", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", default="memory,sqlite")
    parser.add_argument("--lateness", type=int, default=0, help="also measure lateness")
    parser.add_argument(
        "--rate", type=int, default=0, help="sustained lateness: due timers per second"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of --rate")
    parser.add_argument(
        "--tick-workers", type=int, default=None, help="override the storages' tick_workers"
    )
    parser.add_argument(
        "--clocks", default="thread,race", help="who ticks at --rate: thread, race (2 tickers)"
    )
    parser.add_argument(
        "--bulk", action="store_true", help="write the large run's extra timers into the index"
    )
    args = parser.parse_args(argv)
    if args.rate:  # the sustained lateness runs only
        report = sustained(args, chosen_lateness())
        print(report)
        return report
    lines = [
        f"### A tick finding {args.due} due timers (median ms of {args.rounds} rounds)",
        "",
        "| backend | pending (few) | find ms | tick ms | pending (many) | find ms | tick ms "
        "| find ratio | tick ratio | seeding |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/timers.db"
        postgres = os.environ.get(URL_ENV["postgresql"], DEFAULT_URLS["postgresql"])
        redis_label = "django-redis-cache"
        chosen = {
            "memory": memory_backend,
            "sqlite": lambda: sql_backend(url),
            "postgresql": lambda: sql_backend(postgres),
            redis_label: lambda: django_cache.django_backend(redis_label, {redis_label}),
        }

        def checkpoint() -> None:  # the seeding's write-ahead log is not the tick's cost
            import sqlalchemy as sa  # noqa: PLC0415 - only for the SQLite run

            engine = sa.create_engine(url)
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            engine.dispose()

        for name in args.backends.split(","):
            lines.append(
                measure(
                    name,
                    chosen[name],
                    settle=checkpoint if name == "sqlite" else None,
                    sessions=args.sessions,
                    small=args.small,
                    per_session=args.per_session,
                    due=args.due,
                    count=args.rounds,
                    bulk=args.bulk,
                )
            )
    if args.lateness:
        lines += [
            "",
            "### Timer lateness, real time (ms after the due time)",
            "",
            "| clock | timers due at once | p50 | p99 | max |",
            "|---|---|---|---|---|",
            lateness(args.lateness),
        ]
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
