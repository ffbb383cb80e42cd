"""The async storage registry: memory shared with the sync face, refusals that say why."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from triggers_core import (
    AsyncMemoryStorage,
    AsyncTriggerManager,
    RegistryError,
    TriggerManager,
    async_storages,
    open_async_storage,
)
from triggers_core.runtime.registry import sync_twin_url


def test_memory_is_built_in_and_shares_the_named_store_with_the_sync_face() -> None:
    uid = f"areg-{uuid.uuid4().hex[:12]}"
    storage = open_async_storage(f"memory://areg-{uid}", uid)
    assert isinstance(storage, AsyncMemoryStorage)
    assert storage.reference() == f"memory://areg-{uid}"
    sync = TriggerManager(f"memory://areg-{uid}", uid)
    sync.update_configuration({"t": {"after": ["go"], "run": "triggers.DevNullTask"}})

    async def read() -> list[str]:
        return list((await storage.load_full()).state.tasks)

    assert asyncio.run(read()) == ["t"]


def test_the_sql_schemes_name_the_async_adapter() -> None:
    for scheme in (
        "sqlite+aiosqlite",
        "postgresql+asyncpg",
        "postgresql+psycopg",
        "mysql+aiomysql",
        "mariadb+aiomysql",
    ):
        assert scheme in async_storages.names()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("memcached://127.0.0.1:11211", "memcached's compare-and-swap adapter is blocking"),
        ("django-cache://default", "Django's cache API has no compare-and-swap"),
        ("sqlite:///x.db", "use sqlite+aiosqlite://"),
        ("postgresql://u:secret@h/db", "use postgresql+asyncpg:// or postgresql+psycopg://"),
        ("mysql+pymysql://u@h/db", "pymysql is blocking; use mysql+aiomysql://"),
        ("mysql+mysqldb://u@h/db", "this scheme has no async adapter"),
    ],
)
def test_schemes_without_an_async_adapter_are_refused_saying_why(url: str, why: str) -> None:
    with pytest.raises(RegistryError) as raised:
        AsyncTriggerManager(url, "s")
    message = str(raised.value)
    assert "cannot be opened by the async manager" in message
    assert why in message
    assert "secret" not in message
    assert "memory" in message  # the async schemes are listed


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(RegistryError, match="cannot be opened by the async manager"):
        open_async_storage("nosuch://x", "s")
    with pytest.raises(RegistryError, match="not a storage URL"):
        open_async_storage("no-scheme", "s")


def test_sync_twin_urls() -> None:
    assert sync_twin_url("postgresql+asyncpg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert sync_twin_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert sync_twin_url("sqlite+aiosqlite:///x.db") == "sqlite:///x.db"
    assert sync_twin_url("memory://n") == "memory://n"
    assert sync_twin_url("mariadb+aiomysql://u@h/db") == "mariadb+pymysql://u@h/db"
    with pytest.raises(RegistryError):
        sync_twin_url("memcached://h")


def test_the_manager_checks_its_arguments() -> None:
    storage = AsyncMemoryStorage("one")
    with pytest.raises(ValueError, match="uid 'two' given with a storage for session 'one'"):
        AsyncTriggerManager(storage, "two")
    with pytest.raises(ValueError, match="a session uid is required"):
        AsyncTriggerManager("memory://")


def test_each_manager_refuses_the_other_face_s_storage() -> None:
    """A synchronous storage given to the async manager (or the reverse) is named as
    the wrong kind, not taken for a URL."""
    from triggers_core import TriggerManager
    from triggers_core.runtime.memory import MemoryStorage

    with pytest.raises(
        TypeError, match="of AsyncStorage, a storage URL or None, got MemoryStorage"
    ):
        AsyncTriggerManager(MemoryStorage("sync-one"))  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match="of Storage, a storage URL or None, got AsyncMemoryStorage"
    ):
        TriggerManager(AsyncMemoryStorage("async-one"))  # type: ignore[arg-type]
