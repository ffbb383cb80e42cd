"""Which storages a process opens for a message, without a broker server.

The end-to-end attacks run against a real worker in ``test_security.py``; these
are the rules themselves: names and configured references only, no schema
creation, no ``memory://`` on workers, and settings that do not show secrets.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from pathlib import Path

import pytest
from celery import Celery

from triggers_celery import (
    StorageResolutionError,
    StorageURLs,
    TaskMessage,
    bind_tasks,
    configured_storages,
    execute_message,
    open_configured_storage,
    seal_storages,
)
from triggers_core import MemoryStorage, RegistryError, SchemaMissingError


def _tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]


def test_a_message_never_creates_tables_whatever_the_configured_url_says(tmp_path: Path) -> None:
    path = tmp_path / "worker.db"
    conf = {"triggers_storages": {"main": f"sqlite:///{path}?triggers_create_schema=true"}}
    storage = open_configured_storage(conf, "main", "s1")
    with pytest.raises(SchemaMissingError):
        storage.load()
    assert _tables(path) == []
    # the application opening its own storage does what its URL says
    app_side = open_configured_storage(conf, "main", "s1", for_message=False)
    assert app_side.load().version is None
    assert sorted(_tables(path)) == [
        "triggers_due",
        "triggers_fire_keys",
        "triggers_instances",
        "triggers_latest",
        "triggers_sessions",
    ]


def test_only_configured_names_and_references_are_opened(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'main.db'}"
    conf = {"triggers_storages": {"main": url}}
    reference = open_configured_storage(conf, "main", "s1").reference()
    assert reference is not None
    assert open_configured_storage(conf, reference, "s2").uid == "s2"
    for refused in [
        f"sqlite:///{tmp_path / 'other.db'}",
        f"{reference}?triggers_prefix=x_",
        reference.replace("sqlite:///", "sqlite:////"),
        "memory://",
        "Main",
    ]:
        with pytest.raises(StorageResolutionError, match="refusing storage"):
            open_configured_storage(conf, refused, "s1")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing was created


def test_workers_refuse_memory_storages_but_applications_may_use_them() -> None:
    conf = {"triggers_storages": {"local": f"memory://trust-{uuid.uuid4().hex}"}}
    with pytest.raises(StorageResolutionError, match="lives inside one process"):
        open_configured_storage(conf, "local", "s1")
    assert isinstance(
        open_configured_storage(conf, "local", "s1", for_message=False), MemoryStorage
    )


def test_the_environment_default_is_the_only_storage_without_a_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRIGGERS_STORAGE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert configured_storages({}) == {"default": f"sqlite:///{tmp_path / 'env.db'}"}
    monkeypatch.delenv("TRIGGERS_STORAGE_URL")
    assert configured_storages({}) == {}
    with pytest.raises(StorageResolutionError, match=r"no storages are configured"):
        open_configured_storage({}, "default", "s1")


def test_sealed_settings_keep_working_and_hide_secrets_from_celery() -> None:
    app = Celery(f"trust-{uuid.uuid4().hex}", set_as_current=False)
    url = "postgresql+psycopg://app:hunter2@db/app?sslpassword=hunter3&triggers_prefix=t_"
    app.conf.update(broker_url="memory://", triggers_storages={"default": url})
    bind_tasks(app)
    sealed = app.conf.triggers_storages
    assert isinstance(sealed, StorageURLs)
    assert sealed.as_dict() == {"default": url}
    assert configured_storages(app.conf) == {"default": url}
    shown = [repr(sealed), app.conf.humanize(), repr(app.conf.table())]
    for text in shown:
        assert "hunter2" not in text
        assert "hunter3" not in text
    assert "postgresql+psycopg://app@db/app?triggers_prefix=t_" in repr(sealed)
    seal_storages(app.conf)  # idempotent
    assert app.conf.triggers_storages is sealed
    app.close()


def test_bad_storage_settings_are_refused_without_showing_urls() -> None:
    with pytest.raises(StorageResolutionError, match="must map names to storage URLs"):
        configured_storages({"triggers_storages": ["postgresql://u:hunter2@db/x"]})
    with pytest.raises(StorageResolutionError, match=r"\['a'\]: not a storage URL") as caught:
        configured_storages({"triggers_storages": {"a": "u:hunter2@db"}})
    assert "hunter2" not in str(caught.value)


def test_a_worker_that_cannot_open_its_own_storage_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Celery(f"trust-{uuid.uuid4().hex}", set_as_current=False)
    app.conf.update(broker_url="memory://", triggers_storages={"default": "nosuch://u:hunter2@x/y"})
    message = TaskMessage("default", "default", "s1", "t_a#0")
    with caplog.at_level(logging.ERROR), pytest.raises(RegistryError, match="nosuch"):
        execute_message(app, message)
    assert "t_a#0 of session 's1' cannot run here: this worker cannot open its storage" in (
        caplog.text
    )
    assert "hunter2" not in caplog.text
    app.close()
