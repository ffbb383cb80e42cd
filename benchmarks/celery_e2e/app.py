"""The benchmark's Celery app, manager class and process settings (all from the environment).

Every process of a run (workers, producers, the orchestrator) builds its app
with :func:`make_app` from the same :class:`Settings`, which travel in
environment variables, like an application's settings module on each host.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
from celery import Celery

import benchmarks.celery_e2e.tasks  # noqa: F401 - registers the trigger tasks
from benchmarks.celery_e2e import floor
from triggers_celery import bind_tasks
from triggers_core import TriggerManager, managers

SETTINGS_ENV = "TRIGGERS_BENCH_E2E_SETTINGS"
#: The worker node's name (``node-1``, ``node-2``), set by the benchmark for each worker.
NODE_ENV = "TRIGGERS_BENCH_E2E_NODE"
#: The storage name messages carry (a key of ``triggers_storages``).
STORAGE_NAME = "bench"


class E2EManager(TriggerManager):
    """The manager producers fire with; workers rebuild it from ``registry_key``."""

    registry_key: ClassVar[str] = "bench-e2e"
    default_runner = "celery"


managers.register(E2EManager.registry_key, E2EManager)


@attrs.frozen
class Settings:
    """What every process of one variant's run needs to know."""

    broker: str
    queue: str
    #: The storage URL behind :data:`STORAGE_NAME` (``""`` on the floor: no storage).
    storage: str
    #: Where workers write their counters, profiles and ready files.
    out_dir: str
    #: What :mod:`benchmarks.celery_e2e.instrument` counts (see ``instrument.install``).
    counting: Mapping[str, Any] = attrs.field(factory=dict)
    #: ``""``: no profile; ``"wall"`` / ``"cpu"``: cProfile in the pool processes of the
    #: first node, with that clock (see :mod:`benchmarks.celery_e2e.profiling`).
    profile: str = ""

    def to_env(self) -> dict[str, str]:
        return {SETTINGS_ENV: json.dumps(attrs.asdict(self))}

    @classmethod
    def from_env(cls) -> Settings | None:
        raw = os.environ.get(SETTINGS_ENV)
        return cls(**json.loads(raw)) if raw else None

    @property
    def out_path(self) -> Path:
        return Path(self.out_dir)


def make_app(settings: Settings, name: str = "triggers-bench-e2e") -> Celery:
    """A Celery app on the run's broker and queue, the trigger tasks and the floor's bound.

    The worker settings are the issue's: ``worker_prefetch_multiplier=1``; no
    results, no remote control, no events (a production worker that needs them
    pays for them too, but they are no part of Triggers' cost).
    """
    app = Celery(name, set_as_current=False)
    app.conf.update(
        broker_url=settings.broker,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=10,
        task_default_queue=settings.queue,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=True,
        triggers_storages={STORAGE_NAME: settings.storage} if settings.storage else {},
    )
    bind_tasks(app)
    floor.register(app)
    return app


def setup_django() -> None:
    """Configure Django when the run's settings module is set (the ``django-cache`` variant)."""
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        import django  # noqa: PLC0415 - only for the Django variant

        django.setup()


def drop_queue(app: Celery, queue: str) -> None:
    """Delete a run's queue, its messages and its exchange on the app's broker (best effort).

    On kombu's Redis transport ``queue_delete`` removes only what the deleting
    channel itself declared, so the messages are purged and the binding keys
    deleted by name too.
    """
    import contextlib  # noqa: PLC0415

    with contextlib.suppress(Exception), app.connection_for_write() as conn:
        channel = conn.default_channel
        channel.queue_purge(queue)
        channel.queue_delete(queue)
        channel.exchange_delete(queue)
        prefixes = ("keyprefix_queue", "keyprefix_binding_permanent")
        for prefix in filter(None, (getattr(channel, name, None) for name in prefixes)):
            channel.client.delete(prefix % (queue,))
