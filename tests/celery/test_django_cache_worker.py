"""A real ``celery worker`` that configured Django runs instances of a session stored in a
Django cache (``django-cache://<alias>``), opening the alias from its own settings.

The worker gets the test run's Django settings the way an application's worker
does: ``DJANGO_SETTINGS_MODULE`` (Celery's Django fixup then calls
``django.setup()``). Its ``triggers_storages`` names the Django Redis cache; a
message carries that name, or the storage's reference, which the worker accepts
only because its own configuration has a storage with the same reference.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django_env
import pytest
import workflow
from processes import BROKERS, HERE, RUN_ID, WorkerProcess, start_worker, stop_all
from services import require_service
from sessions import session_uid
from worker_app import CeleryTestManager, make_app

from triggers_backends.django_cache import CacheStorageBackend
from triggers_celery import CeleryTaskRunner, open_manager
from triggers_celery.storages import message_storage
from triggers_core import Status

pytestmark = [pytest.mark.service, pytest.mark.slow]

CONFIG = {
    "t_first": {"after": ["go"], "run": "triggers.PassThruTask"},
    "t_second": {"after": ["t_first"], "run": "triggers.PassThruTask"},
}


@pytest.fixture(scope="module")
def broker() -> str:
    label, host, port, url = BROKERS["redis"]
    require_service(label, host, port)
    return url


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"tc{uuid.uuid4().hex[:8]}:"


@pytest.fixture(scope="module")
def storages(prefix: str) -> dict[str, str]:
    """The workers' and the named sender's ``triggers_storages``: one Django cache."""
    return {"dj": f"django-cache://{django_env.REDIS}?prefix={prefix}"}


@pytest.fixture(scope="module")
def queue() -> str:
    return f"tc-{RUN_ID}-django"


@pytest.fixture(scope="module")
def worker(
    broker: str,
    queue: str,
    storages: dict[str, str],
    django_settings: dict[str, Any],
    log_dir: Path,
) -> Iterator[WorkerProcess]:
    require_service("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)
    tests_dir = str(Path(django_env.__file__).resolve().parent)
    path = [str(HERE), str(HERE.parents[1]), tests_dir, os.environ.get("PYTHONPATH", "")]
    env = {
        **django_env.process_environment(django_settings),
        "PYTHONPATH": os.pathsep.join(filter(None, path)),
    }
    started = start_worker(f"django-{RUN_ID}", broker, [queue], storages, log_dir, env=env)
    try:
        started.wait_ready()
        yield started
    finally:
        stop_all([started])


def _check(manager: CeleryTestManager, worker: WorkerProcess) -> None:
    manager.update_configuration(CONFIG)
    manager.fire("go", {"n": 1})
    workflow.settle(manager.storage)
    instances = manager.storage.instances
    assert {n: i.status for n, i in instances.items()} == {
        "t_first#0": Status.FINISHED,
        "t_second#0": Status.FINISHED,
    }, worker.log()[-4000:]
    assert instances["t_first#0"].metadata["result"] == {"kwargs": {"go": {"n": 1}}}


def test_a_worker_runs_a_session_named_by_its_configured_name(
    broker: str, queue: str, storages: dict[str, str], worker: WorkerProcess
) -> None:
    sender = make_app(broker, queue, storages)
    try:
        manager = open_manager(
            session_uid("django-named"),
            "dj",
            app=sender,
            manager=CeleryTestManager.registry_key,
            runners={"celery": CeleryTaskRunner(sender)},
        )
        assert isinstance(manager, CeleryTestManager)
        assert isinstance(manager.storage, CacheStorageBackend)
        assert message_storage(manager.storage, sender.conf) == "dj"
        _check(manager, worker)
    finally:
        sender.close()


def test_a_worker_reopens_a_session_named_by_its_reference(
    broker: str, queue: str, prefix: str, worker: WorkerProcess
) -> None:
    # A sender without triggers_storages: the message carries django-cache://<alias>...
    sender = make_app(broker, queue)
    try:
        storage = CacheStorageBackend(
            session_uid("django-reference"), django_env.REDIS, prefix=prefix
        )
        reference = storage.reference()
        assert reference == f"django-cache://{django_env.REDIS}?prefix={prefix.replace(':', '%3A')}"
        assert message_storage(storage, sender.conf) == reference
        manager = CeleryTestManager(storage, runners={"celery": CeleryTaskRunner(sender)})
        _check(manager, worker)
    finally:
        sender.close()
