"""Helpers for tests that need a real server.

A service test may skip when its server is missing on a developer's laptop,
but when ``CI=true`` (or ``TRIGGERS_REQUIRE_SERVICES=1``) a missing service
fails the test instead: CI never passes by skipping.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest


def services_required() -> bool:
    """True in CI: a missing service is a failure, not a skip."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"} or bool(
        os.environ.get("TRIGGERS_REQUIRE_SERVICES")
    )


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (laptop) or fail (CI) unless ``host:port`` accepts connections."""
    if port_open(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if services_required():
        pytest.fail(f"{message} (CI requires every service)")
    pytest.skip(message)


def unavailable(name: str, why: str) -> None:
    """Skip (laptop) or fail (CI) because ``name`` cannot be used: ``why``."""
    if services_required():
        pytest.fail(f"{name}: {why} (CI requires every service)")
    pytest.skip(f"{name}: {why}")


def finishes(call: Callable[[], Any], bound: float = 60.0) -> BaseException | None:
    """Run ``call`` in a thread; return what it raised (None if nothing), failing the
    test if it is still waiting after ``bound`` seconds.

    The bound only keeps a broken timeout from hanging the suite: it is far
    above the client's timeouts and is not a timing assertion.
    """
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), f"still waiting after {bound}s: the timeout did not apply"
    return outcome[0]
