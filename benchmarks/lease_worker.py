"""The app of :mod:`benchmarks.leases_celery`'s worker (``celery -A benchmarks.lease_worker``).

Configured from the environment: ``TRIGGERS_LEASE_BENCH_BROKER`` (broker URL),
``TRIGGERS_LEASE_BENCH_QUEUE`` (its queue) and ``TRIGGERS_LEASE_BENCH_STORAGES``
(JSON ``{name: url}``, the ``triggers_storages`` setting). Its trigger tasks are
the sample tasks (``triggers.DevNullTask``). None in a process without them.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celery import Celery

import triggers_core.testing  # noqa: F401 - registers triggers.DevNullTask
from triggers_celery import bind_tasks

BROKER_ENV = "TRIGGERS_LEASE_BENCH_BROKER"
QUEUE_ENV = "TRIGGERS_LEASE_BENCH_QUEUE"
STORAGES_ENV = "TRIGGERS_LEASE_BENCH_STORAGES"


def make_app(broker: str, queue: str, storages: dict[str, str]) -> Celery:
    """An app on ``broker`` whose tasks go to ``queue``; the trigger tasks bound."""
    app = Celery(f"triggers-lease-bench-{queue}", set_as_current=False)
    app.conf.update(
        broker_url=broker,
        broker_connection_retry_on_startup=True,
        task_default_queue=queue,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=True,
        triggers_storages=storages,
    )
    bind_tasks(app)
    return app


def _from_env() -> Any:
    broker = os.environ.get(BROKER_ENV)
    if not broker:
        return None
    return make_app(broker, os.environ[QUEUE_ENV], json.loads(os.environ.get(STORAGES_ENV) or "{}"))


#: The worker's app; None in the benchmark's own process.
app = _from_env()
