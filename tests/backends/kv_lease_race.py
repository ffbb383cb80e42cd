"""OS processes racing renewals against claims on the same leases (spawned workers).

Process 0 renews every lease, as the run's lease keeper would; the others claim
every lease, as sweepers that all saw it expired would, each in its own order.
Of the renewal and the claims on one lease exactly one may succeed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from triggers_core.runtime.registry import open_storage
from triggers_core.testing._contract_support import race_processes, report_to

T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
#: The expiry every racer saw; renewals move it to RENEWED; claim ``i`` to ``T0 + 2000 + i``.
SEEN = T0 + timedelta(seconds=30)
RENEWED = T0 + timedelta(seconds=1000)


def claimed_until(index: int) -> datetime:
    return T0 + timedelta(seconds=2000 + index)


def run_lease_race(
    url: str, uids: Sequence[str], *, processes: int, timeout: float
) -> dict[str, list[int]]:
    """Race the leases of ``t_a#0`` (run ``run-1``) in sessions ``uids``; returns, per
    session, the indexes of the processes whose renewal or claim succeeded."""
    payloads = race_processes(
        _lease_worker,
        processes=processes,
        timeout=timeout,
        what="lease race",
        url=url,
        uids=list(uids),
    )
    winners: dict[str, list[int]] = {uid: [] for uid in uids}
    for index, won in payloads:
        for uid in won:
            winners[uid].append(index)
    return winners


def _lease_worker(*, url: str, uids: list[str], index: int, start: Any, results: Any) -> None:
    def work() -> tuple[int, list[str]]:
        storages = [open_storage(url, uid) for uid in uids]
        order = list(range(len(uids)))
        random.Random(index).shuffle(order)
        start.wait(60)
        won = []
        for n in order:
            storage = storages[n]
            if index == 0:
                ok = storage.renew_lease("t_a#0", "run-1", RENEWED)
            else:
                ok = storage.claim_lease("t_a#0", "run-1", SEEN, claimed_until(index))
            if ok:
                won.append(uids[n])
        for storage in storages:
            storage.close()
        return index, won

    report_to(results, index, work)
