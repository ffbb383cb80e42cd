"""Fixtures of the backend tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def django_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Django configured for the Django-cache tests (see ``django_env``); yields the
    settings dict, which spawned processes apply to themselves with ``configure``."""
    pytest.importorskip("django")
    import django_env

    workdir = tmp_path_factory.mktemp("django")
    with django_env.memcached_server() as port:
        spec = django_env.build_settings(django_env.new_run_id(), workdir, port)
        django_env.configure(spec)
        pg_available = django_env.port_open(django_env.PG["PORT"])
        django_env.create_cache_tables(pg_available)
        yield spec
        if pg_available:
            django_env.drop_pg_cache_table()
        if django_env.port_open(django_env.REDIS_PORT):
            django_env.delete_redis_keys(spec)
