"""Fixtures of the console tests (the helpers are in ``console_support.py``)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from console_support import LiveServer, Store


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def token() -> str:
    return "test-token-" + uuid.uuid4().hex


@pytest.fixture
def live(store: Store, token: str) -> Iterator[LiveServer]:
    """The stand-alone console (as ``triggers web`` serves it on loopback) for ``store``."""
    from triggers_core.web.asgi import LOOPBACK_HOSTS, create_app

    app = create_app(store.url, console=store.console(), token=token, allowed_hosts=LOOPBACK_HOSTS)
    with LiveServer(app) as server:
        yield server
