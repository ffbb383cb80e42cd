"""Fixtures of the executed-documentation test: real services behind the docs' example URLs.

The documentation shows the URLs a reader would write (``postgresql+psycopg://app@db.internal/app``,
``amqp://...``). Before a page runs, each such URL is replaced by a real
service on this machine: PostgreSQL gets a database of its own for this test
run (created here, dropped at the end), so the examples' default table names
cannot meet another test run's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from services import require_service

#: Documentation URL -> (service label, host, port, the real URL; ``{db}`` = this run's database).
SERVICE_URLS: dict[str, tuple[str, str, int, str]] = {
    "postgresql+psycopg://app:secret@db.internal/app": (
        "PostgreSQL",
        "127.0.0.1",
        5432,
        "postgresql+psycopg://postgres:secret@127.0.0.1:5432/{db}",
    ),
    "postgresql+psycopg://app@db.internal/app": (
        "PostgreSQL",
        "127.0.0.1",
        5432,
        "postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
    ),
    "postgresql+psycopg://reader@db.internal/app": (
        "PostgreSQL",
        "127.0.0.1",
        5432,
        "postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
    ),
    "amqp://guest@rabbitmq.internal//": (
        "RabbitMQ",
        "127.0.0.1",
        5672,
        "amqp://guest:guest@127.0.0.1:5672//",
    ),
}

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"

#: Filled while collecting: what the terminal summary reports.
SUMMARY: dict[str, object] = {}


class Services:
    """Replaces documentation URLs with real ones, creating what they need on first use."""

    def __init__(self) -> None:
        self.database = f"docs_{uuid.uuid4().hex[:12]}"
        self._created = False

    def substitute(self, text: str) -> str:
        """``text`` with every documentation URL replaced; requires the services it names."""
        for doc_url, (label, host, port, real) in SERVICE_URLS.items():
            if doc_url in text:
                require_service(label, host, port)
                if "{db}" in real:
                    self._create_database()
                text = text.replace(doc_url, real.format(db=self.database))
        return text

    def _create_database(self) -> None:
        if self._created:
            return
        import psycopg

        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        self._created = True

    def close(self) -> None:
        if not self._created:
            return
        import psycopg

        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


@pytest.fixture(scope="session")
def doc_services() -> Iterator[Services]:
    services = Services()
    try:
        yield services
    finally:
        services.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print how many documentation blocks ran and which ones are marked not runnable."""
    if not SUMMARY:
        return
    skipped = SUMMARY["skipped"]
    assert isinstance(skipped, list)
    terminalreporter.write_line(
        f"documentation: {SUMMARY['total']} Python blocks in {SUMMARY['pages']} pages; "
        f"{SUMMARY['run']} run as code, {SUMMARY['pytest']} run with pytest, "
        f"{len(skipped)} marked not runnable"
    )
    for location, reason in skipped:
        terminalreporter.write_line(f"  not runnable: {location}: {reason}")
