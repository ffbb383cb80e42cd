"""A process reuses one root storage per configured URL (issue 22): never at a session's cost.

``open_configured_storage`` opens later sessions of a URL through the root's
``session()``, sharing the client, its pool and the decoded-document cache.
Each test fails if a reused storage records a wrong state: another session's
data, a lost option (``max_value_bytes``), a mixed-up store, or a stale root
in a forked process.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import ClassVar

import pytest
from memcached_server import MemcachedServer

from triggers_celery import storages as storages_module
from triggers_celery.storages import message_storage, open_configured_storage, open_manager
from triggers_core import MemoryStorage, TriggerManager
from triggers_core.errors import InvalidKwargsError, UnsupportedOperationError
from triggers_core.runtime.registry import storages


def _config() -> dict[str, object]:
    return {"t_a": {"after": ["go"], "run": "noop"}, "t_b": {"after": ["t_a"], "run": "noop"}}


def _sessions_stay_apart(conf: dict[str, object]) -> None:
    first, second = f"s-{uuid.uuid4().hex}", f"s-{uuid.uuid4().hex}"
    one = TriggerManager(open_configured_storage(conf, "main", first, for_message=False))
    one.update_configuration(_config())
    one.fire("go", {"n": 1})
    # the second session, opened through the root the first open left behind
    two_storage = open_configured_storage(conf, "main", second, for_message=False)
    assert two_storage.uid == second
    assert two_storage.load().version is None  # nothing of the first session shows
    two = TriggerManager(two_storage)
    two.update_configuration(_config())
    two.fire("go", {"n": 2})
    # each session reads back exactly what was written to it, through fresh opens
    for uid, n in ((first, 1), (second, 2)):
        state = open_configured_storage(conf, "main", uid).load_full().state
        assert state.latest_kwargs["go"] == {"n": n}
        assert sorted(state.instances) == ["t_a#0"]
    assert message_storage(two_storage, conf) == "main"


def test_sqlite_sessions_opened_through_the_root_stay_apart(tmp_path: Path) -> None:
    conf = {"triggers_storages": {"main": f"sqlite:///{tmp_path / 'reuse.db'}"}}
    _sessions_stay_apart(conf)


def test_memcached_sessions_opened_through_the_root_stay_apart(
    memcached: MemcachedServer,
) -> None:
    prefix = f"r{uuid.uuid4().hex[:10]}:"
    conf = {"triggers_storages": {"main": f"memcached://{memcached.address}?prefix={prefix}"}}
    _sessions_stay_apart(conf)


def test_a_reused_storage_keeps_the_url_options(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'limits.db'}?triggers_max_value_bytes=2048"
    conf = {"triggers_storages": {"main": url}}
    for _ in range(3):  # the first open, then the root's sessions
        storage = open_configured_storage(conf, "main", f"s-{uuid.uuid4().hex}", for_message=False)
        assert storage.max_value_bytes == 2048
        manager = TriggerManager(storage)
        manager.update_configuration(_config())
        with pytest.raises(InvalidKwargsError, match="2,048"):
            manager.fire("go", {"big": "x" * 4096})
        assert storage.load().state.instances == {}


def test_different_urls_never_share_a_root(tmp_path: Path) -> None:
    conf = {
        "triggers_storages": {
            "one": f"sqlite:///{tmp_path / 'one.db'}",
            "two": f"sqlite:///{tmp_path / 'two.db'}",
        }
    }
    uid = f"s-{uuid.uuid4().hex}"
    for _ in range(2):
        open_manager(uid, "one", app=_App(conf)).fire("go")
    manager = open_manager(uid, "two", app=_App(conf))
    assert manager.storage.load().version is None  # "one"'s session is not in "two"
    assert message_storage(manager.storage, conf) == "two"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_process_opens_its_own_root(tmp_path: Path) -> None:
    conf = {"triggers_storages": {"main": f"sqlite:///{tmp_path / 'fork.db'}"}}
    open_configured_storage(conf, "main", "parent", for_message=False)
    parent_roots = {key for key in storages_module._ROOTS if key[0] == os.getpid()}
    assert parent_roots
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        ok = b"0"
        try:
            open_configured_storage(conf, "main", "child", for_message=False)
            mine = {key for key in storages_module._ROOTS if key[0] == os.getpid()}
            ok = b"1" if mine and all(k[1] for k in mine) else b"0"
        finally:
            os.write(write, ok)
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.close(read)
    os.waitpid(pid, 0)


class _App:
    def __init__(self, conf: dict[str, object]) -> None:
        self.conf = conf


class _Solitary(MemoryStorage):
    """A storage that cannot open sibling sessions; counts its opens from a URL."""

    opened: ClassVar[list[str]] = []

    @classmethod
    def from_url(cls, url: str, uid: str) -> MemoryStorage:
        cls.opened.append(uid)
        return super().from_url(url, uid)

    def session(self, uid: str) -> MemoryStorage:
        raise UnsupportedOperationError("opening another session of its store", "solitary", "test")


def _roots_of(url: str) -> list[object]:
    return [root for (pid, key), root in storages_module._ROOTS.items() if key == url]


def test_a_storage_without_sibling_sessions_is_opened_from_its_url_each_time() -> None:
    storages.register("solitary-test", _Solitary)
    url = f"solitary-test://reuse-{uuid.uuid4().hex}"
    conf = {"triggers_storages": {"main": url}}
    uids = [f"s-{n}" for n in range(3)]
    opened = [open_configured_storage(conf, "main", uid, for_message=False) for uid in uids]
    assert [storage.uid for storage in opened] == uids
    assert all(type(storage) is _Solitary for storage in opened)
    assert _Solitary.opened == uids  # never through a root
    assert _roots_of(url) == [None]  # remembered as "no sibling sessions"


def test_memory_storages_are_opened_from_their_url_each_time() -> None:
    url = f"memory://reuse-{uuid.uuid4().hex}"
    conf = {"triggers_storages": {"main": url}}
    first = open_configured_storage(conf, "main", "s-1", for_message=False)
    TriggerManager(first).update_configuration(_config())
    again = open_configured_storage(conf, "main", "s-1", for_message=False)
    assert again is not first
    assert sorted(again.load().state.tasks) == ["t_a", "t_b"]  # the named store, shared
    assert _roots_of(url) == []  # a memory:// storage never becomes a root
