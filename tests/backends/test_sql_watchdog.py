"""The SQL watchdog wakes only for an earlier deadline, and still breaks every late call.

Issue 22: a watch whose deadline is later than the earliest one no longer wakes
the watchdog thread. These tests fail if a watch is then missed: each asserts
that the watched socket is shut down once its deadline passed (polled with a
generous bound, never timed) and that a cancelled or later watch is left alone.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from triggers_backends.sqlalchemy._timeouts import _Watchdog

#: How long a test waits for the watchdog before calling it a failure (far above the deadlines).
BOUND = 30.0


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made: list[tuple[socket.socket, socket.socket]] = []
    yield made
    for a, b in made:
        a.close()
        b.close()


def _pair(pairs: list[tuple[socket.socket, socket.socket]]) -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    pairs.append((a, b))
    return a, b


def _broken(peer: socket.socket) -> bool:
    """True once the watched end was shut down (the peer reads end of file)."""
    peer.setblocking(False)
    try:
        return peer.recv(1) == b""
    except BlockingIOError:
        return False


def _wait_broken(peer: socket.socket) -> None:
    deadline = time.monotonic() + BOUND
    while not _broken(peer):
        assert time.monotonic() < deadline, "the watchdog never broke an expired call"
        time.sleep(0.02)


def test_a_later_watch_added_without_waking_is_still_broken(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    dog = _Watchdog()
    first, first_peer = _pair(pairs)
    later, later_peer = _pair(pairs)
    dog.watch(first.fileno(), 0.2)
    dog.watch(later.fileno(), 0.5)  # not the earliest: the thread is not woken for it
    _wait_broken(first_peer)
    _wait_broken(later_peer)


def test_an_earlier_watch_wakes_the_thread_and_a_cancelled_one_is_left_alone(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    dog = _Watchdog()
    long, long_peer = _pair(pairs)
    short, short_peer = _pair(pairs)
    cancelled, cancelled_peer = _pair(pairs)
    dog.watch(long.fileno(), 3600)  # the thread now sleeps for an hour
    gone = dog.watch(cancelled.fileno(), 0.1)
    dog.cancel(gone)
    dog.watch(short.fileno(), 0.2)  # earlier than the hour: wakes it
    _wait_broken(short_peer)
    assert not _broken(long_peer)
    assert not _broken(cancelled_peer)


def test_many_threads_watching_at_once_are_each_broken(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    dog = _Watchdog()
    peers = []
    lock = threading.Lock()

    def watch(seconds: float) -> None:
        a, b = socket.socketpair()
        with lock:
            pairs.append((a, b))
            peers.append(b)
        dog.watch(a.fileno(), seconds)

    threads = [threading.Thread(target=watch, args=(0.1 + n * 0.01,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
    for peer in peers:
        _wait_broken(peer)
