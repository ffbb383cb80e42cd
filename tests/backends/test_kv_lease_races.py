"""Renewals racing claims from OS processes on real stores: memcached, and the Django
caches shared between processes (Redis, memcached, PostgreSQL). One winner per lease.

Each lease is ``t_a#0`` of its own session, running under run ``run-1`` whose lease
expired (``kv_lease_race.SEEN``); process 0 renews them all, seven processes claim
them all, each in its own order. The records are compare-and-swapped: per lease,
exactly one of the eight succeeds, and the record says which.
"""

from __future__ import annotations

import uuid
from typing import Any

import django_env
import pytest
from kv_lease_race import RENEWED, SEEN, T0, claimed_until, run_lease_race
from memcached_server import MemcachedServer
from services import require_service

from triggers_backends.django_cache import CacheStorageBackend
from triggers_backends.memcached import MemcachedStorage, close_clients
from triggers_core import engine
from triggers_core.engine.leases import Lease
from triggers_core.engine.state import SessionState
from triggers_core.engine.transition import Transition
from triggers_core.runtime.storage import Storage

pytestmark = [pytest.mark.service, pytest.mark.slow]

CONFIG = {"t_a": {"after": ["go"], "run": "contract_task"}}
LEASES = 24
PROCESSES = 8


def _commit(storage: Storage, step: Any) -> None:
    snapshot = storage.load_full()
    transition: Transition = step(snapshot.state)
    storage.compare_and_swap(snapshot.version, transition.state, transition.changes)


def _running(storage: Storage) -> None:
    _commit(storage, lambda s: engine.update_configuration(s, CONFIG))
    _commit(storage, lambda s: engine.fire(s, "go", now=T0))
    lease = Lease("run-1", SEEN, 30, {"host": "race"})

    def start(state: SessionState) -> Transition:
        return engine.mark_running(state, "t_a#0", now=T0, lease=lease)

    _commit(storage, start)


def _check(storages: list[Storage], winners: dict[str, list[int]]) -> None:
    assert {uid: len(won) for uid, won in winners.items()} == {s.uid: 1 for s in storages}
    for storage in storages:
        [winner] = winners[storage.uid]
        lease = storage.get_lease("t_a#0")
        assert lease is not None
        if winner == 0:
            assert (lease.at, lease.claimed) == (RENEWED, False)
        else:
            assert (lease.at, lease.claimed) == (claimed_until(winner), True)


def test_memcached_renewals_and_claims_one_winner(memcached: MemcachedServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    url = f"memcached://{memcached.address}?prefix={prefix}&timeout=10"
    try:
        storages: list[Storage] = [
            MemcachedStorage(f"race-{uuid.uuid4().hex}", url) for _ in range(LEASES)
        ]
        for storage in storages:
            _running(storage)
        winners = run_lease_race(url, [s.uid for s in storages], processes=PROCESSES, timeout=240)
        _check(storages, winners)
    finally:
        close_clients()


@pytest.mark.parametrize(
    ("alias", "service"),
    [
        (django_env.REDIS, ("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)),
        (django_env.MEMCACHED, None),
        (django_env.DB_POSTGRES, ("PostgreSQL", "127.0.0.1", 5432)),
    ],
)
def test_django_cache_renewals_and_claims_one_winner(
    alias: str,
    service: tuple[str, str, int] | None,
    django_settings: dict[str, Any],
    memcached: MemcachedServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if service is not None:
        require_service(*service)
    for name, value in django_env.process_environment(django_settings).items():
        monkeypatch.setenv(name, value)  # the spawned racers configure Django from it
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    storages: list[Storage] = [
        CacheStorageBackend(f"race-{uuid.uuid4().hex}", alias, prefix=prefix) for _ in range(LEASES)
    ]
    for storage in storages:
        _running(storage)
    reference = storages[0].reference()
    assert reference is not None
    winners = run_lease_race(reference, [s.uid for s in storages], processes=PROCESSES, timeout=240)
    _check(storages, winners)
    for storage in storages:
        storage.close()
