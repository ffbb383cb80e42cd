"""Property: nothing that opening a storage can show contains a secret of its URL.

For generated URLs with secrets in every position (well-formed and mistyped),
open the storage as an application would, then collect every text that can
leave the process: ``str``, ``repr`` and the formatted traceback of any error
raised, ``repr(storage)``, ``storage.reference()``, ``repr(manager)``, the
broker message a Celery runner publishes for one of its instances (read back
from kombu's in-memory transport), warnings and log records. No secret, raw or
percent-encoded, may appear in any of them.

Database hosts are a port nothing listens on, so URLs that ask for schema
creation exercise the drivers' connection errors too.
"""

from __future__ import annotations

import logging
import socket
import traceback
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from hypothesis import HealthCheck, example, given, settings
from kombu import Connection
from secret_urls import assert_no_secret, urls_with_secrets
from worker_app import make_app

from triggers_celery import CeleryTaskRunner
from triggers_core import ScheduleInstance, TriggerManager, open_storage


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CLOSED = _closed_port()
SQLITE_DIR = Path(__file__).resolve().parent / ".no-such-dir"  # never created: opening fails


@pytest.fixture(scope="module")
def app() -> Iterator[Celery]:
    app = make_app(f"memory://localhost/{uuid.uuid4().hex}", "secrets")
    yield app
    app.close()


def _error_texts(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


def _shown_when_opening(url: str, app: Celery, caplog: pytest.LogCaptureFixture) -> list[str]:
    texts: list[str] = []
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        try:
            storage = open_storage(url, f"s-{uuid.uuid4().hex[:6]}")
        except Exception as exc:
            texts += _error_texts(exc)
        else:
            manager = TriggerManager(storage, runners={"celery": CeleryTaskRunner(app)})
            texts += [repr(storage), str(storage.reference()), repr(manager)]
            effect = ScheduleInstance("t_a#0", "t_a", "triggers.DevNullTask", "celery", {})
            try:
                manager.get_runner("celery").dispatch(manager, effect)
            except Exception as exc:  # e.g. a memory:// storage, refused outside eager mode
                texts += _error_texts(exc)
            else:
                with Connection(app.conf.broker_url) as conn:
                    raw = conn.default_channel.basic_get("secrets", no_ack=True)
                assert raw is not None
                texts.append(repr((raw.body, raw.headers, raw.properties)))
    texts += [str(warning.message) for warning in caught]
    for record in caplog.records:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append("".join(traceback.format_exception(*record.exc_info)))
    return texts


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    case=urls_with_secrets(
        schemes=["postgresql", "postgresql+psycopg", "mysql+pymysql", "sqlite", "memory", "nosuch"],
        hosts=[f"127.0.0.1:{CLOSED}", f"[::1]:{CLOSED}"],
        paths=["/test", f"/{SQLITE_DIR}/x.db"],
        extra_params=["sslmode=disable", "connect_timeout=2", "triggers_create_schema=true"],
    ),
)
@example(case=(f"postgresql+psycopg://app@127.0.0.1:{CLOSED}/t?password=Zq9pw", ["Zq9pw"]))
@example(case=("postgresql:/app:Zq9pw@127.0.0.1/t", ["Zq9pw"]))
@example(
    case=(
        f"mysql+pymysql://a:Zq9pw@127.0.0.1:{CLOSED}/t?triggers_create_schema=true&token=Zq9tk",
        ["Zq9pw", "Zq9tk"],
    )
)
@example(case=("sqlite://a:Zq9pw@127.0.0.1:1/t?password=Zq9qp", ["Zq9pw", "Zq9qp"]))
def test_nothing_shown_while_opening_a_storage_holds_a_secret(
    case: tuple[str, list[str]], app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    url, secrets = case
    for text in _shown_when_opening(url, app, caplog):
        assert_no_secret(text, secrets)


def test_the_property_sees_what_a_leak_would_show(
    app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    """The collection above does see reprs, messages and errors (it could fail)."""
    texts = _shown_when_opening(f"postgresql+psycopg://app@127.0.0.1:{CLOSED}/visible", app, caplog)
    assert any("127.0.0.1" in text and "/visible" in text for text in texts)
    assert any('"storage": "postgresql+psycopg://app@127.0.0.1' in text for text in texts)
    errors = _shown_when_opening("postgresql:/app@127.0.0.1/broken", app, caplog)
    assert any("not a storage URL" in text for text in errors)
