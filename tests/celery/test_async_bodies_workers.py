"""``async def`` task bodies on a real ``celery worker --pool=prefork`` (Redis and RabbitMQ).

The node sweeps every second, so a lease nobody renewed (2 s) would be taken
over while a body sleeps 4 s; PostgreSQL is the storage. Each body runs on its
pool process's own event loop (``triggers_core.runtime.body_loop``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import BROKERS, RUN_ID, WorkerProcess, start_worker, stop_all
from services import require_service
from sessions import session_uid
from worker_app import CeleryTestManager, make_app

from triggers_celery import CeleryTaskRunner, open_manager
from triggers_core import Status, TriggerManager

pytestmark = [pytest.mark.service, pytest.mark.slow]

#: Celery settings of the node: sweep every second, dispatch lease 3 s.
CONF = {"triggers_sweep_interval": 1, "triggers_dispatch_lease": 3}


@pytest.fixture(scope="module", params=sorted(BROKERS))
def broker(request: pytest.FixtureRequest) -> str:
    label, host, port, url = BROKERS[request.param]
    require_service(label, host, port)
    return url


def _queue(broker: str) -> str:
    kind = "amqp" if broker.startswith("amqp") else "redis"
    return f"tc-{RUN_ID}-{kind}-async"


@pytest.fixture(scope="module")
def node(broker: str, pg_url: str, log_dir: Path) -> Iterator[WorkerProcess]:
    """One prefork node (two pool processes) for the async bodies."""
    kind = "amqp" if broker.startswith("amqp") else "redis"
    worker = start_worker(
        f"async-{kind}-{RUN_ID}",
        broker,
        [_queue(broker)],
        {"pg": pg_url},
        log_dir,
        conf=CONF,
        pool="prefork",
        concurrency=2,
    )
    try:
        yield worker.wait_ready()
    finally:
        stop_all([worker])


@pytest.fixture(scope="module")
def sender(broker: str, pg_url: str, node: WorkerProcess) -> Iterator[Any]:
    app = make_app(broker, _queue(broker), {"pg": pg_url})
    yield app
    app.close()


def _manager(app: Any, label: str, task: str) -> TriggerManager:
    manager = open_manager(
        session_uid(f"async-{label}"),
        "pg",
        app=app,
        manager=CeleryTestManager.registry_key,
        runners={"celery": CeleryTaskRunner(app)},
    )
    manager.update_configuration(
        {
            "t_body": {"after": ["go"], "run": task},
            "t_next": {"after": ["t_body"], "run": "triggers.PassThruTask"},
        }
    )
    return manager


def _settled(manager: TriggerManager, timeout: float = 30.0) -> dict[str, str]:
    """Wait until no instance is scheduled or running; their statuses."""
    deadline = time.monotonic() + timeout
    while True:
        instances = manager.storage.instances
        if instances and all(
            i.status not in (Status.SCHEDULED, Status.RUNNING) for i in instances.values()
        ):
            return {name: i.status.value for name, i in instances.items()}
        assert time.monotonic() < deadline, manager.storage.debug_repr()
        time.sleep(0.05)


def test_an_async_body_finishes_and_cascades(node: WorkerProcess, sender: Any) -> None:
    manager = _manager(sender, "finish", "celerytest.AsyncBody")
    manager.fire("go", {"seconds": 0.1})
    assert _settled(manager) == {"t_body#0": "finished", "t_next#0": "finished"}
    result = manager.storage["t_body#0"].metadata["result"]
    assert result["slept"] == 0.1
    assert result["pid"] != node.process.pid  # a pool process ran it
    assert manager.storage["t_next#0"].metadata["result"] == {"kwargs": {"t_body": result}}


def test_the_lease_is_renewed_while_an_async_body_sleeps(node: WorkerProcess, sender: Any) -> None:
    manager = _manager(sender, "lease", "celerytest.AsyncBody")
    manager.fire("go", {"seconds": 4})
    deadline = time.monotonic() + 20
    while manager.storage["t_body#0"].status is not Status.RUNNING:
        assert time.monotonic() < deadline, manager.storage.debug_repr()
        time.sleep(0.05)
    expires = [manager.storage.get_lease("t_body#0")]
    time.sleep(1.5)  # past a renewal (every 2/3 s)
    expires.append(manager.storage.get_lease("t_body#0"))
    # The sweeper ran every second while the body slept twice its lease: never taken over.
    assert _settled(manager) == {"t_body#0": "finished", "t_next#0": "finished"}
    first, later = expires
    assert first is not None
    assert later is not None
    assert later.at > first.at  # renewed while the body slept
    assert "t_body#1" not in manager.storage


def test_an_async_body_past_its_soft_time_limit_fails_with_it(
    node: WorkerProcess, sender: Any
) -> None:
    manager = _manager(sender, "soft", "celerytest.AsyncSoftLimit")
    started = time.monotonic()
    manager.fire("go", {"seconds": 60})
    assert _settled(manager, timeout=45) == {"t_body#0": "failed"}
    # The limit (1 s) ended it, not the 60 s sleep. (A cold pool process may spend the
    # first delivery's second importing the storage; the sweeper then sends it again.)
    assert time.monotonic() - started < 45
    failed = manager.storage["t_body#0"].metadata
    assert failed["exceptionType"] == "billiard.exceptions.SoftTimeLimitExceeded"
    info = failed["exceptionInfo"]
    assert "asyncio.exceptions.CancelledError" in info  # where the body was, as the context
    assert "in _run" in info
    assert "t_next#0" not in manager.storage
    node.wait_for_log("async body t_body#0 cancelled", timeout=10)
