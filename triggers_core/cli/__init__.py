"""``triggers``: the command line for configurations and sessions (extra ``cli``).

Configuration files: ``check`` (validate and lint), ``graph`` (Mermaid or
DOT), ``simulate`` (fire triggers without storage or workers). Sessions:
``sessions`` (list a store's sessions), ``inspect`` (a session's instances),
``explain`` (why a task or instance is where it is; what a fire would do),
``fire``, ``replay``, ``skip``. Read commands take ``--json``. Exit codes: 0
ok, 1 findings or failure, 2 usage error (see ``docs/cli.md``).

Built on click (arguments, help, usage errors), which ``import triggers_core``
never imports. This package imports it only when the command runs, so the
console script of an installation without the ``cli`` extra says which extra
to install instead of failing with an import traceback. Everything the
commands print about a session goes through :mod:`triggers_core.cli._safe`.
"""

from __future__ import annotations

import sys
from typing import Any

from triggers_core.errors import install_extra_hint

__all__ = ["CLI_EXTRA_HINT", "cli", "main"]

#: What to install when the command's own dependencies are missing.
CLI_EXTRA_HINT = install_extra_hint("cli")


def main() -> None:
    """The ``triggers`` console script."""
    try:
        from triggers_core.cli._app import run  # noqa: PLC0415 - needs the cli extra
    except ModuleNotFoundError as exc:
        if exc.name != "click":
            raise
        sys.stderr.write(
            f"triggers: the command line needs the 'cli' extra ({exc.name} is not "
            f"installed): {CLI_EXTRA_HINT}\n"
        )
        raise SystemExit(2) from None
    run()


def __getattr__(name: str) -> Any:
    """``triggers_core.cli.cli``: the click group (imports click)."""
    if name == "cli":
        from triggers_core.cli._app import cli  # noqa: PLC0415 - needs the cli extra

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
