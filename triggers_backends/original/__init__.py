"""Moving off the original framework: bring its sessions into any Triggers storage.

Two ways in, neither of which unpickles anything unless you say so:

* **From a JSON export** (recommended): where the original still runs, dump each
  session's ``storage.debug_repr()`` with ``json.dump(..., default=str)``; then
  ``import_session(storage, load_export("session.json"))``, or from a shell
  ``python -m triggers_backends.original import session.json --storage URL --uid UID``.
* **From the original's Django cache entries**: ``read_original_session(uid, alias,
  allow_pickle=True)`` reads them through Django's cache, which unpickles; allow it
  only for a cache nobody but your application can write to, once, for the
  migration (``python -m triggers_backends.original export UID --cache ALIAS
  --allow-pickle`` writes the JSON export for you to review and import).

:func:`convert_session` is the pure conversion (see ``_convert`` for the mapping
of every field); :func:`import_session` writes the result as a *new* session and
never overwrites an existing one. The procedure is in ``docs/migrating.md``.
"""

from __future__ import annotations

from triggers_backends.original._convert import OriginalSessionError, convert_session
from triggers_backends.original._django_cache import (
    PickleNotAllowedError,
    original_cache_keys,
    read_original_session,
)
from triggers_backends.original._import import (
    ImportReport,
    SessionExistsError,
    import_session,
    load_export,
)

__all__ = [
    "ImportReport",
    "OriginalSessionError",
    "PickleNotAllowedError",
    "SessionExistsError",
    "convert_session",
    "import_session",
    "load_export",
    "original_cache_keys",
    "read_original_session",
]
