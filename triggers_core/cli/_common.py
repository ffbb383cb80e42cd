"""What every command shares: storage URLs, JSON arguments, durations, output, exit codes.

Exit codes: 0 ok; 1 the command ran and found problems or failed (findings,
an unknown instance, a refused operation, a storage error); 2 the command
line cannot be used (click's usage errors: unknown options, missing
arguments, files that do not exist, JSON or durations that do not parse,
storage URLs that are not URLs or name no backend).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.table import Table

from triggers_core.errors import RegistryError, TriggersError
from triggers_core.runtime.redaction import redact
from triggers_core.runtime.registry import STORAGE_URL_ENV, open_storage, storage_scheme, storages
from triggers_core.runtime.storage import Storage

__all__ = [
    "Failed",
    "UrlCommand",
    "app_option",
    "duration",
    "emit_json",
    "failures",
    "import_modules",
    "json_argument",
    "json_option",
    "load_config_file",
    "named_json",
    "now_option",
    "open_session",
    "print_table",
    "storage_url",
]

F = TypeVar("F", bound=Callable[..., Any])


class Failed(click.ClickException):
    """The command ran and the answer is no (exit code 1); the message is redacted."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


def fail(message: str) -> NoReturn:
    """Stop with exit code 1 and ``message`` on stderr."""
    raise Failed(message)


@contextmanager
def failures() -> Iterator[None]:
    """Library errors become exit code 1 with their (redacted) message."""
    try:
        yield
    except (TriggersError, KeyError, ValueError) as exc:
        plain_key_error = isinstance(exc, KeyError) and not isinstance(exc, TriggersError)
        text = f"not found: {exc.args[0]!r}" if plain_key_error else str(exc)
        raise Failed(text) from None


def print_table(table: Table) -> None:
    """Print a rich table: as wide as the terminal, or unwrapped plain text when piped."""
    terminal = sys.stdout.isatty()
    out = Console(highlight=False, width=None if terminal else 1000, no_color=not terminal)
    with out.capture() as captured:
        out.print(table)
    for line in captured.get().splitlines():
        click.echo(line.rstrip())


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON (for scripts)."""
    click.echo(json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False))


def json_option(function: F) -> F:
    """``--json``: machine-readable output."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(function)


# -- values on the command line --------------------------------------------------------


def parse_json_value(text: str, what: str) -> Any:
    """``text`` as JSON, or a usage error naming ``what`` and where it stopped parsing."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problem = f"{what}: not valid JSON ({exc.msg} at column {exc.colno})"
    raise click.BadParameter(problem)


def json_argument(text: str | None, what: str) -> dict[str, Any] | None:
    """A JSON object given on the command line (None stays None)."""
    if text is None:
        return None
    value = parse_json_value(text, what)
    if not isinstance(value, dict):
        raise click.BadParameter(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def named_json(text: str, what: str) -> tuple[str, dict[str, Any]]:
    """``NAME`` or ``NAME=JSON`` (a JSON object) -> (name, kwargs)."""
    name, equals, raw = text.partition("=")
    if not name:
        raise click.BadParameter(f"{what}: expected NAME or NAME=JSON, got {text!r}")
    return name, (json_argument(raw, f"{what} {name}") or {}) if equals else {}


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``1d``, ``1h30m`` -> timedelta (usage error otherwise)."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise click.BadParameter(f"not a duration: {text!r} (use e.g. 90s, 15m, 2h, 1d or 1h30m)")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _parse_now(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no time zone (add +00:00 or Z)")
    return parsed


def now_option(function: F) -> F:
    """``--now``: the time ages are measured at (default: now)."""
    return click.option(
        "--now",
        callback=_parse_now,
        metavar="ISO-TIME",
        help="Measure ages at this time (ISO 8601 with a time zone; default: now).",
    )(function)


def load_config_file(path: Path) -> Mapping[str, Any]:
    """A JSON configuration file; invalid JSON is a failure (exit 1) naming line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")
    if not isinstance(value, dict):
        fail(
            f"{path}: expected a JSON object of task names to directives, "
            f"got {type(value).__name__}"
        )
    return value


# -- application modules ---------------------------------------------------------------


def app_option(function: F) -> F:
    """``--app MODULE``: import modules that register tasks (and configure runners)."""
    return click.option(
        "--app",
        "apps",
        multiple=True,
        metavar="MODULE",
        help="Import this module first (it registers your trigger tasks); repeatable.",
    )(function)


def import_modules(names: Sequence[str]) -> None:
    """Import the application's modules (the current directory is importable)."""
    if names and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise click.BadParameter(f"cannot import {name!r}: {exc}", param_hint="--app") from None


# -- storage URLs ----------------------------------------------------------------------


def storage_url(text: str) -> str:
    """A usable storage URL (usage error naming the problem, never the password)."""
    try:
        scheme = storage_scheme(text)
        storages.load(scheme)
    except RegistryError as exc:
        hint = f" (or set {STORAGE_URL_ENV} and leave the URL out)" if "://" not in text else ""
        raise click.BadParameter(f"{exc}{hint}", param_hint="URL") from None
    if scheme == "sqlite":
        path = urlsplit(text).path
        if path.startswith("/") and not Path(path[1:]).exists():
            raise click.BadParameter(f"no SQLite database at {path[1:]!r}", param_hint="URL")
    return text


def _positionals(command: click.Command, args: list[str]) -> int | None:
    """Index of the first positional argument in ``args`` (None if there is none)."""
    takes: dict[str, int] = {}
    for param in command.params:
        if isinstance(param, click.Option) and not param.is_flag and not param.count:
            for opt in (*param.opts, *param.secondary_opts):
                takes[opt] = param.nargs
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return i + 1 if i + 1 < len(args) else None
        if arg.startswith("-") and arg != "-":
            i += 1 + (takes.get(arg, 0) if "=" not in arg else 0)
            continue
        return i
    return None


class UrlCommand(click.Command):
    """A command whose first argument is a storage URL, else ``TRIGGERS_STORAGE_URL``.

    A first argument without ``://`` is not a URL: the URL then comes from the
    environment (``triggers inspect survey-42`` with the variable set).
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        env = os.environ.get(STORAGE_URL_ENV)
        if env:
            args = list(args)
            first = _positionals(self, args)
            if first is None:
                args.append(env)
            elif "://" not in args[first]:
                args.insert(first, env)
        return super().parse_args(ctx, args)


def open_session(url: str, uid: str) -> Storage:
    """The storage of an existing session (failure if it does not exist).

    Never creates tables: a mistyped URL must not look like an empty store.
    """
    opened = url
    option = storages.load(storage_scheme(url)).schema_url_option
    if option is not None and option not in url:
        opened += ("&" if "?" in url else "?") + f"{option}=false"
    with failures():
        storage = open_storage(opened, uid)
        if storage.load().version is None:
            fail(f"no session {uid!r} in {redact(url)}")
    return storage
