"""The ``triggers`` click group: every command, and the console script's body."""

from __future__ import annotations

import logging
from typing import Any

import click

from triggers_core.cli._config import check, graph, simulate
from triggers_core.cli._operate import (
    fail_command,
    fire,
    recover_command,
    replay,
    skip,
    tick_command,
)
from triggers_core.cli._safe import visible
from triggers_core.cli._sessions import explain_command, inspect, sessions
from triggers_core.cli._web import web

__all__ = ["cli", "run"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="celery-triggers", prog_name="triggers")
def cli() -> None:
    """Check, draw and simulate workflow configurations; inspect and operate sessions.

    Storage URLs (sqlite:///triggers.db, postgresql+psycopg://user@host/db,
    memory://...) come from the URL argument or TRIGGERS_STORAGE_URL, and are
    never printed with their password.
    """


for command in (
    check,
    graph,
    simulate,
    sessions,
    inspect,
    explain_command,
    fire,
    replay,
    skip,
    fail_command,
    recover_command,
    tick_command,
):
    cli.add_command(command)
cli.add_command(web)  # the web console (extra `web`)


class _OneLine(logging.Formatter):
    """Log records as one line each (the commands report outcomes themselves), made visible.

    Log messages quote stored names and error messages: they reach the
    terminal through :func:`~triggers_core.cli._safe.visible` like all output.
    """

    def formatException(self, ei: Any) -> str:
        return ""

    def format(self, record: logging.LogRecord) -> str:
        return visible(super().format(record))


def run() -> None:
    """The ``triggers`` console script, once its dependencies imported."""
    handler = logging.StreamHandler()
    handler.setFormatter(_OneLine("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    cli(prog_name="triggers")
