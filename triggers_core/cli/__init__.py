"""``triggers``: command line for configurations and sessions (``celery-triggers[cli]``).

Configuration files: ``check`` (validate and lint), ``graph`` (Mermaid or
DOT), ``simulate`` (fire triggers without storage or workers). Sessions:
``sessions`` (list a store's sessions), ``inspect`` (a session's instances),
``explain`` (why a task or instance is where it is; what a fire would do),
``fire``, ``replay``, ``skip``. Read commands take ``--json``. Exit codes: 0
ok, 1 findings or failure, 2 usage error (see ``docs/cli.md``).

Built on click (arguments, help, usage errors) and rich (tables); neither
is imported by ``import triggers_core``.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from triggers_core.cli._config import check, graph, simulate
from triggers_core.cli._operate import fire, replay, skip
from triggers_core.cli._sessions import explain_command, inspect, sessions

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="celery-triggers", prog_name="triggers")
def cli() -> None:
    """Check, draw and simulate workflow configurations; inspect and operate sessions.

    Storage URLs (sqlite:///triggers.db, postgresql+psycopg://user@host/db,
    memory://...) come from the URL argument or TRIGGERS_STORAGE_URL, and are
    never printed with their password.
    """


for command in (check, graph, simulate, sessions, inspect, explain_command, fire, replay, skip):
    cli.add_command(command)


class _OneLine(logging.Formatter):
    """Log records as one line each: the commands report outcomes themselves."""

    def formatException(self, ei: Any) -> str:
        return ""


def main() -> None:
    """The ``triggers`` console script."""
    handler = logging.StreamHandler()
    handler.setFormatter(_OneLine("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    cli(prog_name="triggers")
