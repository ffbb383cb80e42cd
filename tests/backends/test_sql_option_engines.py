"""Storages of one engine share its option engines (issue 22), and each keeps its own options.

Opening a storage per message or per fire no longer builds new engine proxies;
these tests fail if a storage got another storage's options (SQLite's
``synchronous`` level, the isolation levels) or if an engine were kept alive.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import sqlalchemy as sa

from triggers_backends.sqlalchemy import SQLAlchemyStorage, create_schema
from triggers_core import TriggerManager
from triggers_core.testing.storage_contract import RecordingRunner


def test_storages_of_one_engine_share_its_option_engines_per_options(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'options.db'}")
    create_schema(engine)
    full_a = SQLAlchemyStorage("a", engine)
    full_b = SQLAlchemyStorage("b", engine)
    normal = SQLAlchemyStorage("c", engine, sqlite_synchronous="normal")
    assert full_a._writer is full_b._writer
    assert normal._writer is not full_a._writer
    assert full_a._writer.get_execution_options()["triggers_synchronous"] == "full"
    assert normal._writer.get_execution_options()["triggers_synchronous"] == "normal"
    for storage in (full_a, normal, full_b):
        manager = TriggerManager(storage, runners={"r": RecordingRunner()}, default_runner="r")
        manager.update_configuration({"t": {"after": ["go"], "run": "noop"}})
        manager.fire("go")
        assert [i.name for i in storage.load_full().state.instances.values()] == ["t#0"]
    engine.dispose()


def test_an_engine_is_not_kept_alive_by_its_option_engines(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'gone.db'}")
    create_schema(engine)
    storage = SQLAlchemyStorage("a", engine)
    assert storage._writer is not engine
    engine.dispose()
    gone = weakref.ref(engine)
    del storage, engine
    gc.collect()
    assert gone() is None
