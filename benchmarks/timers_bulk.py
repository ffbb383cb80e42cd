"""Pending timers written straight into a store's due index (``--bulk`` of ``benchmarks.timers``).

Building a million pending timers through the manager (one commit per session)
takes hours on a server database on this machine, so the large run of the
timer benchmark seeds its real sessions (the ones whose timers fall due in the
measured rounds) through the manager, and adds the rest of the pending timers
as index entries only: ``(session, instance, due time)`` rows in the SQL due
table, hints in the key-value layout's slots and directories, exactly as
commits file them, due *after* every measured round. A tick never reads an
entry that is not due, so what they cost it is what an index of that size
costs: its depth (SQL), its directories (key-value). What they do not model:
the session and instance tables (or documents) behind them stay small.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from triggers_core.engine.leases import DueKind
from triggers_core.runtime.storage import Storage

#: Rows per SQL insert batch.
SQL_BATCH = 10_000
#: Keys per key-value ``set_many``.
KV_BATCH = 1_000


def bulk_pending(
    storage: Storage, sessions: int, per_session: int, first_due: datetime, spread: timedelta
) -> int:
    """Add ``sessions * per_session`` pending TIMER entries of sessions that hold no
    document, due from ``first_due`` over ``spread``; returns how many."""
    count = sessions * per_session
    step = spread / max(count, 1)
    entries = (
        (f"bulk-{s}", f"t_{k}#0", first_due + step * (s * per_session + k))
        for s in range(sessions)
        for k in range(per_session)
    )
    name = storage.backend_name
    if name == "sqlalchemy":
        _sql(storage, entries)
    elif hasattr(storage, "client") and hasattr(storage, "_index"):
        _key_value(storage, entries)
    else:
        raise ValueError(f"no bulk seeding for a {name} storage")
    return count


def _sql(storage: Storage, entries: object) -> None:
    import sqlalchemy as sa  # noqa: PLC0415

    from triggers_backends.sqlalchemy._due import to_micros  # noqa: PLC0415
    from triggers_backends.sqlalchemy._tables import row_key  # noqa: PLC0415

    table = storage._tables.due  # type: ignore[attr-defined]
    # An engine of its own: the storage's watchdog would end a statement this long.
    url = storage.engine.url.render_as_string(hide_password=False)  # type: ignore[attr-defined]
    engine = sa.create_engine(url)
    rows = []
    with engine.begin() as conn:
        for uid, name, at in entries:  # type: ignore[attr-defined]
            rows.append(
                {
                    "session_key": row_key(uid),
                    "name_key": row_key(name),
                    "uid": uid,
                    "name": name,
                    "kind": DueKind.TIMER.value,
                    "due_at": to_micros(at, "due"),
                    "owner": None,
                    "claimed": False,
                }
            )
            if len(rows) >= SQL_BATCH:
                conn.execute(table.insert(), rows)
                rows = []
        if rows:
            conn.execute(table.insert(), rows)
    engine.dispose()


def _key_value(storage: Storage, entries: object) -> None:
    from triggers_backends.kv.due_index import (  # noqa: PLC0415
        SLOT_BYTES,
        Hint,
        bucket_of,
        shard_of,
    )
    from triggers_backends.kv.keys import digest  # noqa: PLC0415

    index = storage._index  # type: ignore[attr-defined]
    client = storage.client  # type: ignore[attr-defined]
    most = min(SLOT_BYTES, client.max_value_size)
    chains: dict[tuple[int, int], list[bytes]] = defaultdict(list)
    for uid, name, at in entries:  # type: ignore[attr-defined]
        hint = Hint(uid, name, DueKind.TIMER, at)
        chains[shard_of(digest(uid)), bucket_of(at)].append(hint.line())
    slots: dict[str, bytes] = {}
    listed: dict[int, list[str]] = defaultdict(list)
    for (shard, bucket), lines in sorted(chains.items()):
        number, value = 1000, b""  # past the slots commits use first (numbers from 0)
        for line in [*lines, None]:
            if line is None or (value and len(value) + len(line) > most):
                slots[index.slot_key(DueKind.TIMER, shard, bucket, number)] = value
                listed[shard].append(f"{bucket}.{number}")
                number, value = number + 1, b""
            if line is not None:
                value += line
    keys = list(slots)
    for start in range(0, len(keys), KV_BATCH):
        client.set_many({k: slots[k] for k in keys[start : start + KV_BATCH]})
    directories = {shard: index.directory(DueKind.TIMER, shard) for shard in listed}
    current = client.get_many(list(directories.values()))
    updated = {}
    for shard, directory in directories.items():
        base = current.get(directory, b",")
        base = base if base.endswith(b",") else base + b","
        updated[directory] = base + "".join(f"{e}," for e in listed[shard]).encode("ascii")
    client.set_many(updated)


def timers_in_index(storage: Storage) -> int:
    """How many TIMER entries the store's due index holds (a check of the seeding)."""
    if storage.backend_name == "sqlalchemy":
        import sqlalchemy as sa  # noqa: PLC0415

        table = storage._tables.due  # type: ignore[attr-defined]
        query = sa.select(sa.func.count()).where(table.c.kind == DueKind.TIMER.value)
        with storage.engine.connect() as conn:  # type: ignore[attr-defined]
            return int(conn.execute(query).scalar_one())
    from triggers_backends.kv.due_index import SHARDS, lines_of  # noqa: PLC0415

    index = storage._index  # type: ignore[attr-defined]
    client = storage.client  # type: ignore[attr-defined]
    total = 0
    directories = [index.directory(DueKind.TIMER, shard) for shard in range(SHARDS)]
    found = client.get_many(directories)
    for shard, directory in enumerate(directories):
        entries = [e for e in found.get(directory, b"").decode("ascii").split(",") if e]
        keys = []
        for entry in entries:
            bucket, _, number = entry.partition(".")
            keys.append(index.slot_key(DueKind.TIMER, shard, int(bucket), int(number)))
        for start in range(0, len(keys), KV_BATCH):
            values = client.get_many(keys[start : start + KV_BATCH])
            total += sum(len(lines_of(v)) for v in values.values())
    return total
