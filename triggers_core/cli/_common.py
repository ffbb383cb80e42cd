"""What every command shares: storage URLs, JSON arguments, durations, output, exit codes.

Exit codes: 0 ok; 1 the command ran and found problems or failed (findings,
an unknown instance, a refused operation, a storage error); 2 the command
line cannot be used (click's usage errors: unknown options, missing
arguments, files that do not exist, JSON or durations that do not parse, JSON
nested too deeply or holding numbers no storage can hold, storage URLs that
are not URLs or name no backend, Django settings that are missing; one line
naming the problem). Everything printed goes through :mod:`._safe`.
"""

from __future__ import annotations

import importlib
import json
import math
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

from triggers_core.cli._django import setup_django
from triggers_core.cli._safe import json_text, visible
from triggers_core.engine.values import MAX_DEPTH, MAX_INT, MIN_INT, to_json_value
from triggers_core.errors import InvalidKwargsError, RegistryError, TriggersError
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
    "storage_url",
]

F = TypeVar("F", bound=Callable[..., Any])


class Failed(click.ClickException):
    """The command ran and the answer is no (exit code 1); the message is redacted.

    Its text is made :func:`~triggers_core.cli._safe.visible`: it often quotes stored
    names and messages.
    """

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(visible(redact(message)))


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


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON (for scripts): exact, and safe on a terminal."""
    click.echo(json_text(data))


def json_option(function: F) -> F:
    """``--json``: machine-readable output."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(function)


# -- values on the command line --------------------------------------------------------


class JsonSyntaxError(click.BadParameter):
    """JSON text that does not parse; ``syntax`` says where."""

    def __init__(self, message: str, syntax: json.JSONDecodeError) -> None:
        super().__init__(message)
        self.syntax = syntax


class _Unusable(Exception):
    """Internal: a JSON text holds what no stored value may (a huge number, NaN)."""


def _integer(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > _INT_DIGITS:
        raise _Unusable(f"an integer of {digits} digits (at most {MIN_INT}..{MAX_INT})")
    value = int(text)
    if not MIN_INT <= value <= MAX_INT:
        raise _Unusable(f"the integer {value} is out of range ({MIN_INT}..{MAX_INT})")
    return value


def _real(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Unusable(f"the number {text[:40]}{'...' if len(text) > 40 else ''} is too large")
    return value


def _constant(text: str) -> float:
    raise _Unusable(f"{text} is no JSON number (values must be finite)")


_INT_DIGITS = len(str(MIN_INT)) - 1
_OPENERS = frozenset("[{")


def json_depth(text: str) -> int:
    """How deeply ``text``'s arrays and objects nest (outside strings), in one O(n) pass."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def decode_json(text: str, what: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``text`` as JSON a storage can hold, or :class:`click.BadParameter` naming the problem.

    Refuses, before parsing, nesting deeper than ``max_depth``; while parsing,
    integers outside the 64-bit range (without building a 5,000-digit number),
    numbers too large for a float, ``NaN`` and ``Infinity``. O(len(text)).
    """
    depth = json_depth(text)
    if depth > max_depth:
        raise click.BadParameter(f"{what}: nested {depth} levels deep (at most {max_depth})")
    try:
        return json.loads(text, parse_int=_integer, parse_float=_real, parse_constant=_constant)
    except _Unusable as exc:
        problem = f"{what}: {exc}"
    except json.JSONDecodeError as exc:
        raise JsonSyntaxError(
            f"{what}: not valid JSON ({exc.msg} at column {exc.colno})", exc
        ) from None
    except (RecursionError, ValueError) as exc:  # json's own limits, whatever slips past
        problem = f"{what}: cannot be read as JSON ({type(exc).__name__})"
    raise click.BadParameter(problem)


def parse_json_value(text: str, what: str) -> Any:
    """``text`` as JSON, or a usage error naming ``what`` and the problem.

    See :func:`decode_json`; what a stored value may not hold (a lone surrogate)
    is refused too.
    """
    value = decode_json(text, what)
    try:
        return to_json_value(value, what)
    except InvalidKwargsError as exc:
        raise click.BadParameter(str(exc)) from None


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


#: How deeply a configuration file may nest: a value's own limit, plus the levels of
#: task, directive, withParams and condition groups around it.
CONFIG_MAX_DEPTH = MAX_DEPTH + 16


def load_config_file(path: Path) -> Mapping[str, Any]:
    """A JSON configuration file; invalid JSON is a failure (exit 1) naming line and column.

    A file nested too deeply or holding a number no storage can hold is a
    usage error (exit 2), found without parsing it whole.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}")
    what = str(path)
    try:
        value = decode_json(text, what, max_depth=CONFIG_MAX_DEPTH)
    except JsonSyntaxError as exc:
        at = f"line {exc.syntax.lineno}, column {exc.syntax.colno}"
        fail(f"{path}: not valid JSON: {exc.syntax.msg} at {at}")
    except click.BadParameter as exc:
        exc.param_hint = "CONFIG"
        raise
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
    except RegistryError as exc:
        hint = f" (or set {STORAGE_URL_ENV} and leave the URL out)" if "://" not in text else ""
        raise click.BadParameter(f"{exc}{hint}", param_hint="URL") from None
    setup_django(scheme)
    try:
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
