"""Bounded payloads (issue 23, item 7): each stored value has a maximum encoded size.

Trigger kwargs, a task's ``withParams``, a result and each metadata mapping
are refused over the storage's ``max_value_bytes`` (1 MiB by default) with an
:class:`InvalidKwargsError` naming the path and the size, before anything is
written; a task whose outcome is too big to store ends ``failed``, saying why.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given

from triggers_core import (
    InvalidKwargsError,
    MemoryStorage,
    MemoryStore,
    Status,
    TaskContext,
    TriggerManager,
    TriggerTask,
    open_storage,
    with_context,
)
from triggers_core.engine.serialization import dumps
from triggers_core.engine.sizes import (
    DEFAULT_MAX_VALUE_BYTES,
    check_size,
    clip_text,
    encoded_size,
    parse_value_limit,
)
from triggers_core.testing.assertions import assert_instance_failed, wait_for_tasks
from triggers_core.testing.strategies import json_kwargs

MiB = 1024 * 1024


def fresh_manager(limit: int | None = None) -> TriggerManager:
    storage = MemoryStorage(f"sizes-{uuid.uuid4().hex}", MemoryStore())
    if limit is not None:
        storage.max_value_bytes = limit
    return TriggerManager(storage)


def two_mib_kwargs() -> dict[str, Any]:
    return {"document": {"id": 7, "pages": "x" * (2 * MiB)}}


class BigResult(TriggerTask):
    name = "tests.sizes.BigResult"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {"blob": "y" * (2 * MiB)}


class BigSkip(TriggerTask):
    name = "tests.sizes.BigSkip"

    def _run(self, context: TaskContext) -> None:
        self.skip({"dump": "z" * (2 * MiB)})


class BigRetry(TriggerTask):
    name = "tests.sizes.BigRetry"
    max_retries: ClassVar[int] = 3

    def _run(self, context: TaskContext) -> None:
        self.retry(metadata={"dump": "z" * (2 * MiB)})


class HugeMessage(TriggerTask):
    name = "tests.sizes.HugeMessage"

    def _run(self, context: TaskContext) -> None:
        raise RuntimeError("m" * (3 * MiB))


class HugeContext(TriggerTask):
    name = "tests.sizes.HugeContext"

    def _run(self, context: TaskContext) -> None:
        raise with_context(ValueError("bad row"), {"rows": ["r" * 1024] * 2048})


# -- the measure --------------------------------------------------------------------------


@given(json_kwargs())
def test_the_measure_is_the_length_of_what_storages_write(value: dict[str, Any]) -> None:
    assert encoded_size(value) == len(dumps(value)) == len(dumps(value).encode("utf-8"))
    for part in value.values():  # any JSON value, not only mappings
        assert encoded_size(part) == len(json.dumps(part, separators=(",", ":")))


def test_the_default_limit_is_one_mib_on_every_storage() -> None:
    assert MiB == DEFAULT_MAX_VALUE_BYTES
    assert MemoryStorage("s", MemoryStore()).max_value_bytes == MiB


def test_the_error_names_the_deepest_part_over_the_limit_and_both_sizes() -> None:
    value = {"a": 1, "document": {"id": 7, "pages": "x" * 5000}}
    with pytest.raises(InvalidKwargsError) as caught:
        check_size(value, "trigger_kwargs", 4096)
    assert caught.value.path == "trigger_kwargs.document.pages"
    assert "5,002 bytes encoded as JSON" in caught.value.problem
    assert f"all of trigger_kwargs: {encoded_size(value):,} bytes" in caught.value.problem
    assert "over the limit of 4,096 bytes" in caught.value.problem
    # No single part is over: the whole is named.
    with pytest.raises(InvalidKwargsError) as whole:
        check_size({f"k{i}": "v" * 100 for i in range(100)}, "result", 4096)
    assert whole.value.path == "result"
    assert check_size({"ok": 1}, "result", 4096) == len('{"ok":1}')


def test_clipped_text_fits_and_keeps_both_ends() -> None:
    limit = 64 * 1024
    for char in ("m", "\u00e9", "\U0001f600"):  # 1, 6 and 12 bytes encoded
        text = "START" + char * (limit * 2) + "END"
        clipped = clip_text(text, limit)
        assert encoded_size(clipped) <= limit
        assert clipped.startswith("START")
        assert clipped.endswith("END")
        assert "characters cut" in clipped
    assert clip_text("short", limit) == "short"


@pytest.mark.parametrize(
    "text", ["0", "1023", "1073741825", "-5", "1e6", "1MiB", "", "\uff11\uff10\uff12\uff14"]
)  # the last: full-width digits
def test_a_bad_limit_is_refused_naming_the_option(text: str) -> None:
    with pytest.raises(ValueError, match="triggers_max_value_bytes must be an integer"):
        parse_value_limit(text, "triggers_max_value_bytes")


# -- refused before anything is written ----------------------------------------------------


def test_a_two_mib_fire_is_refused_with_path_and_size_and_nothing_is_stored() -> None:
    manager = fresh_manager()
    manager.update_configuration({"t_x": {"after": ["go"], "run": "triggers.DevNullTask"}})
    before = manager.storage.load_full()
    with pytest.raises(InvalidKwargsError) as caught:
        manager.fire("go", two_mib_kwargs())
    assert caught.value.path == "trigger_kwargs.document.pages"
    assert "2,097,154 bytes" in str(caught.value)
    assert "over the limit of 1,048,576 bytes" in str(caught.value)
    after = manager.storage.load_full()
    assert after.version == before.version
    assert dict(after.state.instances) == {}
    assert "go" not in after.state.latest_kwargs


def test_a_value_just_under_the_limit_is_stored() -> None:
    manager = fresh_manager(limit=4096)
    manager.update_configuration({"t_x": {"after": ["go"], "run": "triggers.PassThruTask"}})
    kwargs = {"v": "x" * (4096 - len('{"v":""}'))}
    assert encoded_size(kwargs) == 4096
    manager.fire("go", kwargs)
    wait_for_tasks(manager)
    assert manager.storage["t_x#0"].kwargs == {"go": kwargs}
    with pytest.raises(InvalidKwargsError, match="4,097 bytes"):
        manager.fire("go", {"v": kwargs["v"] + "x"})


def test_a_big_with_params_is_refused_and_the_configuration_not_stored() -> None:
    manager = fresh_manager(limit=4096)
    config = {
        "t_x": {
            "after": ["go"],
            "run": "triggers.DevNullTask",
            "withParams": {"go": {"template": "t" * 5000}},
        }
    }
    with pytest.raises(InvalidKwargsError) as caught:
        manager.update_configuration(config)
    assert caught.value.path == "t_x.withParams.go.template"
    assert manager.storage.load_full().version is None


def test_operator_values_are_bounded_too() -> None:
    manager = fresh_manager(limit=4096)
    manager.update_configuration({"t_x": {"after": ["go"], "run": "triggers.FailingTask"}})
    manager.fire("go")
    wait_for_tasks(manager)
    version = manager.storage.load_full().version
    big = {"note": "n" * 5000}
    calls = [
        ("metadata.note", lambda: manager.update_instance_metadata("t_x#0", big)),
        ("replacement_kwargs.note", lambda: manager.replay_failed_instance("t_x#0", big)),
        ("result.note", lambda: manager.skip_failed_instance("t_x#0", True, big)),
        ("metadata.note", lambda: manager.update_instance_status("t_x#0", "failed", big)),
        (
            "cascade_kwargs.note",
            lambda: manager.update_instance_status("t_x#0", "finished", None, True, big),
        ),
    ]
    for path, call in calls:
        with pytest.raises(InvalidKwargsError) as caught:
            call()
        assert caught.value.path == path
    assert manager.storage.load_full().version == version


# -- outcomes: too big to store ends failed, never running ---------------------------------


def test_an_oversized_result_ends_failed_with_the_reason_and_does_not_cascade() -> None:
    manager = fresh_manager()
    manager.update_configuration(
        {
            "t_big": {"after": ["go"], "run": BigResult.name},
            "t_next": {"after": ["t_big"], "run": "triggers.DevNullTask"},
        }
    )
    manager.fire("go")
    wait_for_tasks(manager)
    failed = manager.storage["t_big#0"]
    assert failed.status is Status.FAILED
    assert failed.metadata["exceptionType"] == "triggers_core.errors.InvalidKwargsError"
    assert "result.blob: 2,097,154 bytes" in failed.metadata["exceptionInfo"]
    assert "over the limit of 1,048,576 bytes" in failed.metadata["exceptionInfo"]
    assert "t_next#0" not in manager.storage.instances or (
        manager.storage["t_next#0"].status is Status.UNSTARTED
    )
    assert "t_big" not in manager.storage.latest_kwargs


@pytest.mark.parametrize("task", [BigSkip, BigRetry])
def test_oversized_skip_or_retry_metadata_ends_failed(task: type[TriggerTask]) -> None:
    manager = fresh_manager()
    manager.update_configuration({"t_x": {"after": ["go"], "run": task.name}})
    manager.fire("go")
    wait_for_tasks(manager)
    assert_instance_failed(manager, "t_x#0", InvalidKwargsError)
    assert "metadata.dump: 2,097,154 bytes" in manager.storage["t_x#0"].metadata["exceptionInfo"]
    assert list(manager.storage.instances) == ["t_x#0"]  # no clone


def test_a_huge_exception_message_is_clipped_and_the_instance_fails() -> None:
    manager = fresh_manager()
    manager.update_configuration({"t_x": {"after": ["go"], "run": HugeMessage.name}})
    manager.fire("go")
    wait_for_tasks(manager)
    failed = manager.storage["t_x#0"]
    assert failed.status is Status.FAILED
    assert failed.metadata["exceptionType"] == "builtins.RuntimeError"
    info = failed.metadata["exceptionInfo"]
    assert encoded_size(info) <= MiB
    assert info.startswith("Traceback")
    assert "characters cut" in info


def test_oversized_with_context_data_is_dropped_and_said_so() -> None:
    manager = fresh_manager()
    manager.update_configuration({"t_x": {"after": ["go"], "run": HugeContext.name}})
    manager.fire("go")
    wait_for_tasks(manager)
    failed = manager.storage["t_x#0"]
    assert failed.metadata["exceptionType"] == "builtins.ValueError"
    assert failed.metadata.get("exceptionContext", {}) == {}
    assert (
        "its with_context() data was dropped: exception_context.rows"
        in (failed.metadata["exceptionInfo"])
    )


# -- configurable per storage --------------------------------------------------------------


def test_sqlite_url_option_sets_the_limit_and_travels_in_the_reference(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sizes.db'}?triggers_max_value_bytes=2048"
    storage = open_storage(url, "sizes-sqlite")
    assert storage.max_value_bytes == 2048
    assert "triggers_max_value_bytes=2048" in (storage.reference() or "")
    assert open_storage(storage.reference() or "", "again").max_value_bytes == 2048
    manager = TriggerManager(storage)
    manager.update_configuration({"t_x": {"after": ["go"], "run": "triggers.DevNullTask"}})
    with pytest.raises(InvalidKwargsError, match="over the limit of 2,048 bytes"):
        manager.fire("go", {"v": "x" * 3000})
    assert manager.storage.load_full().state.latest_kwargs == {}
    manager.fire("go", {"v": "x" * 1000})
    plain = open_storage(f"sqlite:///{tmp_path / 'sizes.db'}", "plain")
    assert plain.max_value_bytes == MiB
    assert "max_value_bytes" not in (plain.reference() or "")
    with pytest.raises(ValueError, match="triggers_max_value_bytes"):
        open_storage(f"sqlite:///{tmp_path / 'sizes.db'}?triggers_max_value_bytes=12", "bad")


def test_memcached_and_django_cache_url_options_set_the_limit() -> None:
    from triggers_backends.django_cache._storage import parse_url as parse_django_url
    from triggers_backends.memcached import MemcachedStorage
    from triggers_backends.memcached import parse_url as parse_memcached_url

    # Opening a memcached storage connects on first use only: no server needed here.
    storage = MemcachedStorage("sizes", "memcached://127.0.0.1:1?max_value_bytes=4096")
    assert storage.max_value_bytes == 4096
    assert storage.reference() == "memcached://127.0.0.1:1?max_value_bytes=4096"
    assert MemcachedStorage("sizes", "memcached://127.0.0.1:1").max_value_bytes == MiB
    assert parse_django_url("django-cache://triggers?max_value_bytes=8192")[1][
        "max_value_bytes"
    ] == (8192)
    for parse, url in [
        (parse_memcached_url, "memcached://127.0.0.1:1?max_value_bytes=5"),
        (parse_django_url, "django-cache://triggers?max_value_bytes=lots"),
    ]:
        with pytest.raises(ValueError, match="max_value_bytes"):
            parse(url)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    from services import require_service

    require_service("PostgreSQL", "127.0.0.1", 5432)
    import sqlalchemy as sa

    from triggers_backends.sqlalchemy import metadata_for

    prefix = f"sizes_{uuid.uuid4().hex[:8]}_"
    base = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    yield f"{base}?triggers_prefix={prefix}&triggers_create_schema=true"
    engine = sa.create_engine(base)
    try:
        metadata_for(prefix).drop_all(engine)
    finally:
        engine.dispose()


@pytest.mark.service
def test_a_two_mib_fire_on_postgresql_is_refused_before_any_write(postgres_url: str) -> None:
    manager = TriggerManager(postgres_url, uid="sizes-pg")
    manager.update_configuration({"t_x": {"after": ["go"], "run": "triggers.DevNullTask"}})
    version = manager.storage.load_full().version
    with pytest.raises(InvalidKwargsError) as caught:
        manager.fire("go", two_mib_kwargs())
    assert caught.value.path == "trigger_kwargs.document.pages"
    stored = manager.storage.load_full()
    assert stored.version == version
    assert dict(stored.state.instances) == {}
    assert json.dumps(dict(stored.state.latest_kwargs)) == "{}"
