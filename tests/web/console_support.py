"""What the console tests share: a store with applicant sessions, the console, a live server.

Sessions live in a ``memory://`` store with a name of its own per test (the
console and the test share the process). The clock ticks a fixed step per
call, so times and durations on the pages are the same on every run.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import web_workflow as workflow

from triggers_core import MemoryStorage, ThreadingTaskRunner, TriggerManager
from triggers_core.web.console import Console, WebRequest, WebResponse

#: Where the runs start, on the ticking clock.
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Ticker:
    """A clock that moves ``step`` on at every reading (thread-safe)."""

    def __init__(self, start: datetime = START, step: timedelta = timedelta(seconds=1.5)) -> None:
        self.now = start
        self.step = step
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self.now += self.step
            return self.now


class Store:
    """A named memory store and helpers to fill it."""

    def __init__(self) -> None:
        self.name = f"web-{uuid.uuid4().hex[:10]}"
        self.url = f"memory://{self.name}"
        self.clock = Ticker()
        self.runner = ThreadingTaskRunner()

    def manager(self, uid: str) -> TriggerManager:
        storage = MemoryStorage(uid, store_name=self.name)
        return TriggerManager(storage, runners={"threading": self.runner}, clock=self.clock)

    def failed_session(self, uid: str, **page: Any) -> TriggerManager:
        """``t_collect#0`` finished, ``t_score#0`` failed, ``t_report`` waiting."""
        manager = self.manager(uid)
        workflow.make_failed_session(manager, **page)
        self.runner.join_all(30)
        return manager

    def finished_session(self, uid: str) -> TriggerManager:
        manager = self.manager(uid)
        workflow.make_failed_session(manager, ok=True)
        self.runner.join_all(30)
        return manager

    def console(self, **options: Any) -> Console:
        options.setdefault("runner", "threading")
        return Console(self.url, clock=self.clock, **options)


def get(console: Console, path: str, actor: str | None = None, **query: str) -> WebResponse:
    """A GET of the console's ``path`` (no framework in between)."""
    return console.handle(WebRequest("GET", path, query, actor=actor, csrf_field=("csrf", "x")))


def post(
    console: Console,
    path: str,
    form: dict[str, str],
    *,
    actor: str | None = "web:tester",
    csrf_ok: bool = True,
    **query: str,
) -> WebResponse:
    """A POST of the console's ``path`` (the adapter's CSRF verdict given as ``csrf_ok``)."""
    request = WebRequest("POST", path, query, form, actor=actor, csrf_ok=csrf_ok)
    return console.handle(request)


def text(response: WebResponse) -> str:
    return response.body.decode("utf-8")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """An ASGI app served by uvicorn on a free loopback port, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
