"""Moving off the original framework: converting its sessions and importing them.

``data/original_session.json`` is a realistic export of one session (the original's
``debug_repr()`` dumped with ``json.dump(..., default=str)``): six tasks, instances
in every status (a replayed one and its clone, a failed one with an exception, an
``andEvery`` task with five instances, an instance that recorded one of its two
``unless`` triggers), and latest kwargs.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import pickle
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from triggers_backends.original import (
    OriginalSessionError,
    PickleNotAllowedError,
    SessionExistsError,
    convert_session,
    import_session,
    load_export,
    original_cache_keys,
    read_original_session,
)
from triggers_core import MemoryStorage, MemoryStore, Status, Storage, TriggerManager
from triggers_core.engine.serialization import instance_to_json
from triggers_core.testing.storage_contract import RecordingRunner

EXPORT = Path(__file__).parent / "data" / "original_session.json"
StorageFactory = Callable[[str], Storage]


def export() -> dict[str, Any]:
    content: dict[str, Any] = json.loads(EXPORT.read_text(encoding="utf-8"))
    return content


def manager_for(storage: Storage) -> tuple[TriggerManager, RecordingRunner]:
    runner = RecordingRunner()
    return TriggerManager(storage, runners={"rec": runner}, default_runner="rec"), runner


# -- conversion -----------------------------------------------------------------------


def test_the_export_converts_field_by_field() -> None:
    state = convert_session(export())

    page = state.tasks["t_page"]
    assert page.and_every == "page"
    assert page.after == ("t_start",)  # the original had added andEvery to after
    assert dict(page.with_params) == {"page": {"format": "pdf"}}
    assert state.tasks["t_audit"].unless == ("closed", "optout")
    assert state.tasks["t_start"].unless == ()
    assert state.tasks["t_start"].using is None
    assert dict(state.tasks["t_fetch"].extras) == {"owner": "data-team"}

    assert {i.status for i in state.instances.values()} == set(Status) - {Status.EXPIRED}
    assert dict(state.counters) == {
        "t_audit": 1,
        "t_fetch": 2,
        "t_legacy": 1,
        "t_notify": 1,
        "t_page": 5,
        "t_start": 1,
    }
    assert dict(state.latest_kwargs) == export()["metas"]["latest_kwargs"]

    start = state.instances["t_start#0"]
    assert start.metadata["created"] == "2019-03-04T10:11:12.123456+00:00"
    assert start.metadata["lastModified"] == "2019-03-04T10:11:14.000001+00:00"
    assert start.metadata["timestamps"] == {
        "scheduled": "2019-03-04T10:11:12.123456+00:00",
        "running": "2019-03-04T10:11:13.500000+00:00",
        "finished": "2019-03-04T10:11:14.000001+00:00",
    }
    assert start.metadata["result"] == {"applicant": 42, "ok": True}

    replayed, clone = state.instances["t_fetch#0"], state.instances["t_fetch#1"]
    assert replayed.status is Status.REPLAYED
    assert replayed.log_level == logging.ERROR
    assert not replayed.logs_resolved
    assert replayed.metadata["exceptionType"] == "requests.exceptions.ConnectionError"
    assert (clone.metadata["parent"], clone.metadata["depth"]) == ("t_fetch#0", 1)
    assert clone.metadata["timestamps"] == {"finished": "2019-03-04T11:00:05+00:00"}

    audit = state.instances["t_audit#0"]
    assert audit.unless_fired == frozenset({"closed"})
    assert dict(audit.kwargs) == {"t_fetch": {"score": 710}}
    assert state.instances["t_page#1"].metadata["skippedBecause"] == "duplicate page"
    assert state.instances["t_legacy#0"].unless_fired == frozenset({"y"})


def test_every_problem_is_listed_with_its_path() -> None:
    content = export()
    content["extra"] = {}
    content["tasks"]["t_broken"] = {"after": ["a"], "andEvery": None}  # no run
    instances = content["instances"]
    instances["t_page#1"]["status"] = "paused"
    instances["t_page#2"]["task"] = "t_start"
    instances["t_page#3"]["kwargs"] = {"page": [1, 2]}
    instances["t_page#4"]["metadata"]["timestamps"]["scheduled"] = "yesterday"
    instances["t_page#4"]["colour"] = "blue"
    instances["t_ghost#0"] = {"task": "t_ghost", "status": "unstarted", "kwargs": {}}
    instances["t_start#x"] = {"task": "t_start", "status": "unstarted"}
    instances["t_start#0"]["metadata"]["logLevel"] = "ERROR"
    instances["t_start#0"]["metadata"]["result"] = {"ratio": float("nan")}
    content["metas"]["locks"] = {}
    content["metas"]["latest_kwargs"]["start"] = "not a mapping"

    with pytest.raises(OriginalSessionError) as caught:
        convert_session(content)
    problems = caught.value.problems
    expected = [
        "extra: unknown part",
        "tasks.t_broken.run: required",
        "instances.t_page#1.status: unknown status 'paused'",
        "instances.t_page#2.task: 't_start' does not match the instance name",
        "instances.t_page#3.kwargs.page: expected a mapping, got list",
        "instances.t_page#4.metadata.timestamps.scheduled: not an ISO 8601 date and time",
        "instances.t_page#4.colour: unknown field",
        "instances.t_ghost#0.task: no task 't_ghost' in the configuration",
        "instances.t_start#x: instance names are '<task>#<number>'",
        "instances.t_start#0.metadata.logLevel: expected a logging level number",
        "instances.t_start#0.metadata.result.ratio: nan is not representable in JSON",
        "metas.locks: unknown session metadata",
        "metas.latest_kwargs.start: expected a mapping, got str",
    ]
    for fragment in expected:
        assert any(fragment in problem for problem in problems), (fragment, problems)
    assert f"({len(problems)} problems)" in str(caught.value)
    assert pickle.loads(pickle.dumps(caught.value)).problems == problems


@pytest.mark.parametrize(
    "content",
    [None, [], "tasks", {"tasks": {}}, {"instances": {}}, {"tasks": [], "instances": {}}],
)
def test_content_of_the_wrong_shape_is_refused(content: Any) -> None:
    with pytest.raises(OriginalSessionError):
        convert_session(content)


def test_an_empty_session_converts() -> None:
    state = convert_session({"tasks": {}, "instances": {}, "metas": {"latest_kwargs": {}}})
    assert dict(state.tasks) == {}
    assert dict(state.instances) == {}


# -- import ---------------------------------------------------------------------------


def test_imported_session_fires_as_the_original_would_have(
    storage_factory: StorageFactory, session_uid: str
) -> None:
    storage = storage_factory(session_uid)
    report = import_session(storage, export())
    assert report.tasks == 6
    assert report.instances == {
        "finished": 3,
        "replayed": 1,
        "unstarted": 2,
        "skipped": 1,
        "failed": 1,
        "running": 1,
        "scheduled": 1,
        "abandoned": 1,
    }
    assert "11 instances" in str(report)
    converted = convert_session(export())
    stored = storage_factory(session_uid).load_full().state
    assert {n: instance_to_json(i) for n, i in stored.instances.items()} == {
        n: instance_to_json(i) for n, i in converted.instances.items()
    }

    manager, runner = manager_for(storage_factory(session_uid))
    # andEvery: a new instance numbered after the imported ones, seeded with latest kwargs.
    scheduled = manager.fire("page", {"n": 6})
    assert [i.name for i in scheduled] == ["t_page#5"]
    assert dict(scheduled[0].kwargs) == {"page": {"n": 6}, "t_start": {"applicant": 42, "ok": True}}
    # An imported unstarted instance completes with its recorded kwargs.
    scheduled = manager.fire("confirm", {"by": "ops"})
    assert [i.name for i in scheduled] == ["t_notify#0"]
    assert dict(scheduled[0].kwargs) == {"t_fetch": {"score": 710}, "confirm": {"by": "ops"}}
    # The second of t_audit's unless triggers abandons it (the first came from the import).
    assert manager.fire("optout") == []
    assert manager.storage["t_audit#0"].status is Status.ABANDONED
    assert manager.storage["t_notify#0"].status is Status.SCHEDULED
    # Replaying an imported failed instance continues its numbering and lineage.
    manager.replay_failed_instance("t_page#2")
    clone = manager.storage["t_page#6"]
    assert (clone.metadata["parent"], clone.metadata["depth"]) == ("t_page#2", 1)
    assert manager.storage["t_page#2"].status is Status.REPLAYED
    assert runner.dispatched == ["t_page#5", "t_notify#0", "t_page#6"]
    # History is untouched.
    assert instance_to_json(manager.storage["t_fetch#0"]) == instance_to_json(
        converted.instances["t_fetch#0"]
    )


def test_an_existing_session_is_never_overwritten(
    storage_factory: StorageFactory, session_uid: str
) -> None:
    storage = storage_factory(session_uid)
    manager, _ = manager_for(storage)
    manager.update_configuration({"t_mine": {"after": ["a"], "run": "x"}})
    before = storage.load_full()
    with pytest.raises(SessionExistsError, match="never overwrites") as caught:
        import_session(storage, export())
    assert caught.value.uid == session_uid
    after = storage.load_full()
    assert after.version == before.version
    assert set(after.state.tasks) == {"t_mine"}


def test_an_invalid_export_writes_nothing(session_uid: str) -> None:
    storage = MemoryStorage(session_uid, MemoryStore())
    content = export()
    content["instances"]["t_page#1"]["status"] = "paused"
    with pytest.raises(OriginalSessionError):
        import_session(storage, content)
    assert storage.load().version is None


def test_load_export_reads_a_file_or_a_stream(tmp_path: Path) -> None:
    assert load_export(EXPORT) == export()
    assert load_export(io.StringIO(EXPORT.read_text())) == export()
    with pytest.raises(OriginalSessionError, match="not valid JSON"):
        load_export(io.StringIO("{'tasks': {}}"))
    with pytest.raises(OriginalSessionError, match="'status' appears twice"):
        load_export(io.StringIO('{"instances": {"t#0": {"status": "a", "status": "b"}}}'))
    with pytest.raises(OriginalSessionError, match="cannot read"):
        load_export(tmp_path / "missing.json")


def test_command_line_import(tmp_path: Path, session_uid: str) -> None:
    url = f"sqlite:///{tmp_path / 'triggers.db'}"
    command = [sys.executable, "-m", "triggers_backends.original", "import", str(EXPORT)]
    command += ["--storage", url, "--uid", session_uid]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"imported session {session_uid!r}" in done.stdout
    from triggers_core import open_storage

    storage = open_storage(url, session_uid)
    try:
        assert len(storage) == 11
    finally:
        storage.close()
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 1
    assert "already has a session" in again.stderr


# -- from the original's Django cache entries -----------------------------------------


UNPICKLED: list[str] = []


def _unpickled(what: str) -> str:
    UNPICKLED.append(what)
    return what


class Tripwire:
    """Records when it is unpickled."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unpickled, ("tripwire",))


def with_datetimes(content: dict[str, Any]) -> dict[str, Any]:
    """The export as the original kept it in memory: naive UTC datetimes, sets."""
    content = copy.deepcopy(content)
    for instance in content["instances"].values():
        stamps = instance["metadata"].get("timestamps", {})
        for key, text in stamps.items():
            stamps[key] = datetime.fromisoformat(text)
        instance["abandonState"] = set(instance["abandonState"])
    return content


@pytest.fixture
def cache_alias(django_settings: dict[str, Any]) -> str:
    import django_env

    return django_env.LOCMEM


def test_reading_the_cache_without_allowing_pickle_unpickles_nothing(
    cache_alias: str, session_uid: str
) -> None:
    from django.core.cache import caches

    caches[cache_alias].set(original_cache_keys(session_uid)[0], Tripwire(), None)
    UNPICKLED.clear()
    with pytest.raises(PickleNotAllowedError, match="allow_pickle=True"):
        read_original_session(session_uid, cache_alias)
    assert UNPICKLED == []


@pytest.mark.parametrize("layout", ["one key", "three keys"])
def test_reading_either_layout_from_the_cache(
    django_settings: dict[str, Any], layout: str, session_uid: str
) -> None:
    import django_env
    from django.core.cache import caches

    alias = django_env.LOCMEM if layout == "one key" else django_env.REDIS
    if alias == django_env.REDIS:
        from services import require_service

        require_service("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)
    cache = caches[alias]
    original = with_datetimes(export())
    late, config, status, meta = original_cache_keys(session_uid)
    if layout == "one key":
        cache.set(late, original, None)
    else:
        cache.set(config, original["tasks"], None)
        cache.set(status, original["instances"], None)
        cache.set(meta, original["metas"], None)
    content = read_original_session(session_uid, alias, allow_pickle=True)
    assert convert_session(content) == convert_session(export())

    storage = MemoryStorage(session_uid, MemoryStore())
    import_session(storage, content)
    assert len(storage) == 11


def test_reading_a_missing_or_doubled_session_is_an_error(
    cache_alias: str, session_uid: str
) -> None:
    from django.core.cache import caches

    with pytest.raises(OriginalSessionError, match="no session"):
        read_original_session(session_uid, cache_alias, allow_pickle=True)
    late, config, *_ = original_cache_keys(session_uid)
    caches[cache_alias].set(late, export(), None)
    caches[cache_alias].set(config, export()["tasks"], None)
    with pytest.raises(OriginalSessionError, match="both of the original's layouts"):
        read_original_session(session_uid, cache_alias, allow_pickle=True)


def test_values_json_cannot_hold_are_listed(cache_alias: str, session_uid: str) -> None:
    from django.core.cache import caches

    content = export()
    content["instances"]["t_start#0"]["metadata"]["result"] = {"when": 1j, 3: "x"}
    caches[cache_alias].set(original_cache_keys(session_uid)[0], content, None)
    with pytest.raises(OriginalSessionError) as caught:
        read_original_session(session_uid, cache_alias, allow_pickle=True)
    problems = caught.value.problems
    assert any("result.when: complex cannot be represented" in p for p in problems), problems
    assert any("result[3]: keys must be strings" in p for p in problems), problems


def test_command_line_export(
    cache_alias: str, session_uid: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from django.core.cache import caches

    from triggers_backends.original.__main__ import main

    caches[cache_alias].set(original_cache_keys(session_uid)[0], with_datetimes(export()), None)
    assert main(["export", session_uid, "--cache", cache_alias]) == 1
    assert "allow_pickle=True" in capsys.readouterr().err
    out = tmp_path / "session.json"
    assert (
        main(["export", session_uid, "--cache", cache_alias, "--allow-pickle", "-o", str(out)]) == 0
    )
    assert convert_session(load_export(out)) == convert_session(export())
