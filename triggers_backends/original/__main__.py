"""``python -m triggers_backends.original``: import an original session, or export one.

``import EXPORT.json --storage URL --uid UID``
    Create session UID in the storage at URL from a JSON export of the original's
    ``debug_repr()``. Never overwrites an existing session.
``export UID --cache ALIAS --allow-pickle [--output FILE]``
    Read session UID from the original's entries in the Django cache ALIAS (Django
    configured through ``DJANGO_SETTINGS_MODULE``) and write it as a JSON export.
    This unpickles the cache entries: ``--allow-pickle`` is required.

Exit status: 0 done, 1 refused (one ``error:`` line per problem, each naming its
path), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence

from triggers_backends.original._convert import OriginalSessionError
from triggers_backends.original._django_cache import PickleNotAllowedError, read_original_session
from triggers_backends.original._import import SessionExistsError, import_session, load_export
from triggers_core.errors import TriggersError
from triggers_core.runtime.registry import open_storage

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _visible(text: str) -> str:
    """``text`` on one line, its control characters shown as escapes (exports are hostile)."""
    return _CONTROL.sub(
        lambda m: (
            f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}"
        ),
        text,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m triggers_backends.original",
        description="Bring sessions of the original framework into a Triggers storage.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    imp = commands.add_parser("import", help="create a session from a JSON export")
    imp.add_argument("export", help="JSON file: the original's debug_repr() of one session")
    imp.add_argument("--storage", required=True, help="storage URL, e.g. sqlite:///triggers.db")
    imp.add_argument("--uid", required=True, help="the session uid to create")
    exp = commands.add_parser(
        "export", help="write an original session from a Django cache as JSON"
    )
    exp.add_argument("uid", help="the session uid in the original's cache keys")
    exp.add_argument("--cache", default="default", help="Django cache alias (default: default)")
    exp.add_argument(
        "--allow-pickle",
        action="store_true",
        help="required: reading the original's entries unpickles them (trusted caches only)",
    )
    exp.add_argument("--output", "-o", help="file to write (default: standard output)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "import":
            content = load_export(args.export)
            storage = open_storage(args.storage, args.uid)
            try:
                report = import_session(storage, content)
            finally:
                storage.close()
            print(report)
            return 0
        import django  # noqa: PLC0415 - only the export needs Django
        from django.core.exceptions import ImproperlyConfigured  # noqa: PLC0415

        try:
            django.setup()
        except ImproperlyConfigured as exc:
            print(
                f"error: Django is not configured (set DJANGO_SETTINGS_MODULE): {exc}",
                file=sys.stderr,
            )
            return 1
        session = read_original_session(args.uid, args.cache, allow_pickle=args.allow_pickle)
        text = json.dumps(session, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        if args.output:
            with open(args.output, "w", encoding="utf-8") as out:
                out.write(text)
        else:
            sys.stdout.write(text)
        return 0
    except OriginalSessionError as exc:
        for problem in exc.problems:
            print(f"error: {_visible(problem)}", file=sys.stderr)
        return 1
    except (SessionExistsError, PickleNotAllowedError) as exc:
        print(f"error: {_visible(str(exc))}", file=sys.stderr)
        return 1
    except TriggersError as exc:
        print(f"error: {type(exc).__name__}: {_visible(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
