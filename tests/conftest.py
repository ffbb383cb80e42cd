"""Shared fixtures. ``storage_factory`` is parametrized over storage backends so the
end-to-end behaviour suite runs unchanged on each (see STORAGE_KINDS)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from triggers_core import MemoryStorage, MemoryStore, Storage

#: Storage kinds the behaviour suite runs on. Backends add themselves here.
STORAGE_KINDS = ["memory", "sqlite"]

StorageFactory = Callable[[str], Storage]


@pytest.fixture
def session_uid() -> str:
    """A fresh session UID per test."""
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def sqlite_storage_factory(tmp_path: Path) -> Iterator[StorageFactory]:
    """``make(uid)`` on a SQLite file (WAL) in ``tmp_path``, tables created."""
    import sqlalchemy as sa

    from triggers_backends.sqlalchemy import SQLAlchemyStorage, create_schema

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'triggers.db'}")
    create_schema(engine)
    yield lambda uid: SQLAlchemyStorage(uid, engine)
    engine.dispose()


@pytest.fixture(params=STORAGE_KINDS)
def storage_factory(request: pytest.FixtureRequest) -> Iterator[StorageFactory]:
    """Returns ``make(uid) -> Storage`` on the parametrized backend."""
    kind = request.param
    if kind == "memory":
        store = MemoryStore()
        yield lambda uid: MemoryStorage(uid, store)
        return
    factory = request.getfixturevalue(f"{kind}_storage_factory")
    yield factory
