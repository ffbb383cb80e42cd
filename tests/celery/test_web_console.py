"""The web console replays a failed instance on a real Celery worker (issue 26).

The console dispatches through the Celery runner (never in its own
process); the clone runs on a worker and finishes. The storage URL carries a
password, which no page shows.
"""

from __future__ import annotations

import time
from typing import Any

from processes import PG_PASSWORD, WorkerProcess
from sessions import open_test_manager
from worker_app import CeleryTestManager

from triggers_celery import CeleryTaskRunner
from triggers_core import Status
from triggers_core.web.console import Console, WebRequest

CONFIG = {"t_divide": {"after": ["divideRequested"], "run": "celerytest.Divide"}}


def wait_for(storage: Any, name: str, status: Status, bound: float = 60.0) -> None:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if name in storage.instances and storage[name].status is status:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} did not become {status} within {bound} s")


def test_replay_from_the_console_runs_on_a_worker(
    sender: Any, workers: list[WorkerProcess], storages: dict[str, str]
) -> None:
    manager = open_test_manager(sender, "web-console")
    manager.update_configuration(CONFIG)
    manager.fire("divideRequested", {"numerator": 1, "denominator": 0})
    wait_for(manager.storage, "t_divide#0", Status.FAILED)
    console = Console(
        storages["default"],
        runner="celery",
        manager_class=CeleryTestManager,
        runners={"celery": CeleryTaskRunner(sender)},
    )
    page = console.handle(WebRequest("GET", "/session", {"uid": manager.uid}))
    assert page.status == 200
    assert PG_PASSWORD not in page.body.decode()
    assert b"ZeroDivisionError" in page.body
    replay = WebRequest(
        "POST",
        "/act/replay",
        {"uid": manager.uid, "name": "t_divide#0"},
        {"kwargs": '{"divideRequested": {"numerator": 1, "denominator": 4}}'},
        actor="web:ops",
        csrf_ok=True,
    )
    done = console.handle(replay)
    assert done.status == 200, done.body.decode()
    assert b"replayed t_divide#0 as t_divide#1" in done.body
    wait_for(manager.storage, "t_divide#1", Status.FINISHED)
    assert manager.storage["t_divide#1"].metadata["result"] == {"quotient": 0.25}
    assert manager.storage["t_divide#0"].metadata["actor"] == "web:ops"
