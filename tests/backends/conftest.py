"""Fixtures of the backend tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def django_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Django configured for the Django-cache tests (see ``django_env``); yields the
    settings dict, which spawned processes apply to themselves with ``configure``."""
    import django_env

    # The memcached cache needs the session's server; without the binary only the
    # memcached tests fail (or skip on a laptop), through the fixture they request.
    address = request.getfixturevalue("memcached").address if shutil.which("memcached") else None
    spec = django_env.build_settings(
        django_env.new_run_id(), tmp_path_factory.mktemp("dj"), address
    )
    django_env.configure(spec)
    pg_available = django_env.port_open(django_env.PG["PORT"])
    django_env.create_cache_tables(pg_available)
    yield spec
    if pg_available:
        django_env.drop_pg_cache_table()
    if django_env.port_open(django_env.REDIS_PORT):
        django_env.delete_redis_keys(spec)
