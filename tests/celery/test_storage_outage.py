"""A worker whose database is briefly unreachable, with a real ``celery worker``.

The worker reaches PostgreSQL through :class:`FlakyProxy`, a small TCP
forwarder that the test switches down (every connection dropped, new ones
closed at once) and up again. The test process fires through a direct URL to
the same database, so it sees the truth while the worker is cut off.

* Down before the message arrives: nothing started, so the worker retries the
  *message* with backoff; once the proxy is up the instance finishes, once.
* Down while the task runs: the task already ran, so the message is not
  retried; the instance stays ``running`` (``get_stale_instances`` finds it) until its
  lease expires and a worker's sweeper takes it over (test_worker_deaths.py covers that).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from processes import RUN_ID, WorkerProcess, queue_for, start_worker, stop_all
from sessions import open_test_manager, recorded_effects
from worker_app import make_app

from triggers_core import Status

pytestmark = [pytest.mark.service, pytest.mark.slow]

#: Fast retries for the test: delays of 0.1-0.2 s, doubling up to 0.5-1 s.
RETRY_CONF = {
    "triggers_storage_retry_max": 60,
    "triggers_storage_retry_backoff": 0.2,
    "triggers_storage_retry_backoff_max": 1.0,
}


class FlakyProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; :meth:`down` cuts it, :meth:`up` restores it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._up = threading.Event()
        self._up.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept_loop)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._up.is_set():
                client.close()  # the server "went away": the driver sees a closed connection
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(source, sink)

    def _drop(self, *socks: socket.socket) -> None:
        for sock in socks:
            with self._lock:
                self._open.discard(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def down(self) -> None:
        """Drop every forwarded connection; refuse new ones until :meth:`up`."""
        self._up.clear()
        with self._lock:
            current = list(self._open)
        self._drop(*current)

    def up(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._closed.set()
        self.down()
        self._listener.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)


@pytest.fixture(scope="module")
def proxy(pg_url: str) -> Iterator[FlakyProxy]:
    flaky = FlakyProxy(("127.0.0.1", 5432))
    try:
        yield flaky
    finally:
        flaky.close()


@pytest.fixture(scope="module")
def outage_queue(broker: str) -> str:
    return f"{queue_for(broker)}-outage"


@pytest.fixture(scope="module")
def outage_worker(
    broker: str, pg_url: str, proxy: FlakyProxy, outage_queue: str, log_dir: Path
) -> Iterator[WorkerProcess]:
    """One worker whose ``default`` storage is PostgreSQL through the proxy."""
    assert ":5432/" in pg_url
    proxied = pg_url.replace(":5432/", f":{proxy.port}/")
    kind = outage_queue.rsplit("-", 2)[1]
    worker = start_worker(
        f"{kind}-outage-{RUN_ID}",
        broker,
        [outage_queue],
        {"default": proxied},
        log_dir,
        conf=RETRY_CONF,
    )
    try:
        yield worker.wait_ready()
    finally:
        stop_all([worker])


@pytest.fixture
def outage_sender(broker: str, pg_url: str, outage_queue: str, proxy: FlakyProxy) -> Iterator[Any]:
    """The test's app: the same storage name, but a direct URL (never through the proxy)."""
    app = make_app(broker, outage_queue, {"default": pg_url})
    proxy.up()
    try:
        yield app
    finally:
        proxy.up()
        app.close()


def _wait(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_message_is_retried_until_the_database_is_back_and_runs_once(
    outage_sender: Any,
    outage_worker: WorkerProcess,
    proxy: FlakyProxy,
    broker: str,
    record_property: Any,
) -> None:
    manager = open_test_manager(outage_sender, "outage")
    manager.update_configuration({"t_rec": {"after": ["go"], "run": "celerytest.Record"}})
    proxy.down()
    manager.fire("go")  # direct URL: scheduled, and the message is sent
    retried = f"storage unavailable before t_rec#0 of session {manager.uid!r} started"
    _wait(lambda: outage_worker.log().count(retried) >= 3, "three retries")
    assert manager.storage["t_rec#0"].status is Status.SCHEDULED
    assert recorded_effects(manager.uid) == []

    proxy.up()
    back = time.monotonic()
    _wait(lambda: manager.storage["t_rec#0"].status is Status.FINISHED, "the instance to finish")
    elapsed = time.monotonic() - back
    # The worker logs how the run ended after its commit (and cascade): the status can be
    # read before that line is written.
    _wait(lambda: "t_rec#0 ended" in outage_worker.log(), "the worker to log the outcome")

    log = outage_worker.log()
    retries = log.count(retried)
    assert [i.status for i in manager.storage.instances.values()] == [Status.FINISHED]
    assert recorded_effects(manager.uid) == [
        ("t_rec#0", outage_worker.process.pid)
    ]  # ran exactly once
    assert log.count("t_rec#0 ended finished") == 1
    # each retry re-entered the worker with the same message: one attempt more than retries
    assert log.count(f"running t_rec#0 of session {manager.uid!r}") == retries + 1
    assert "(retry 1 of 60)" in log
    record_property("proxy_up_to_finished_s", round(elapsed, 3))
    record_property("retries_while_down", retries)
    print(
        f"\n{broker.split(':', maxsplit=1)[0]}: {retries} retries while down; "
        f"finished {elapsed:.2f}s after the database came back"
    )


def test_a_failure_after_the_start_is_not_retried_and_leaves_a_stale_running_instance(
    outage_sender: Any, outage_worker: WorkerProcess, proxy: FlakyProxy
) -> None:
    manager = open_test_manager(outage_sender, "outage-late")
    manager.update_configuration(
        {"t_slow": {"after": ["sleepRequested"], "run": "celerytest.RecordThenSleep"}}
    )
    manager.fire("sleepRequested", {"seconds": 1.5})
    # the task has recorded its row, so it is running and now sleeping
    _wait(lambda: len(recorded_effects(manager.uid)) == 1, "the task to start")
    assert manager.storage["t_slow#0"].status is Status.RUNNING
    proxy.down()  # drops the worker's pooled connection too: the outcome commit fails
    outage_worker.wait_for_log(
        f"t_slow#0 of session {manager.uid!r} ran, but the storage failed before its "
        "outcome was recorded"
    )
    proxy.up()
    time.sleep(2.0)  # a retried message (at most 1 s of backoff) would have run by now

    log = outage_worker.log()
    assert f"storage unavailable before t_slow#0 of session {manager.uid!r}" not in log
    assert log.count(f"running t_slow#0 of session {manager.uid!r}") == 1
    assert recorded_effects(manager.uid) == [("t_slow#0", outage_worker.process.pid)]
    instance = manager.storage["t_slow#0"]
    assert instance.status is Status.RUNNING
    now = datetime.now(UTC)
    assert manager.storage.get_stale_instances(timedelta(minutes=5), now=now) == []
    later = now + timedelta(minutes=10)
    stale = manager.storage.get_stale_instances(timedelta(minutes=5), now=later)
    assert [i.name for i in stale] == ["t_slow#0"]
