"""Read a session the original framework stored in a Django cache (pickle, opt-in).

The original kept each session in the Django cache under keys derived from its
storage module's name and the session UID, through Django's cache API, which
pickles values. Two layouts existed:

* one key ``triggers.storages.cache:<uid>`` holding ``{'tasks', 'instances',
  'metas'}`` (its later versions);
* three keys ``triggers.storage_backends.cache:<uid>:config`` (tasks),
  ``...:<uid>:task_status`` (instances) and ``...:<uid>:meta_status`` (metas)
  (its earlier versions).

Reading them means unpickling, and unpickling runs whatever code the pickled
bytes name: anyone who could write to that cache could run code in the process
that reads it. So :func:`read_original_session` refuses unless the caller passes
``allow_pickle=True`` for that one read, and it is meant for a one-off migration
of a cache only your own application writes to. The safer route needs no pickle
at all: export each session with the original's ``debug_repr()`` to JSON where
the original still runs, and import the file (``load_export``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from triggers_backends.original._convert import OriginalSessionError
from triggers_core.errors import TriggersError

__all__ = [
    "EARLY_KEY_PREFIX",
    "LATE_KEY_PREFIX",
    "PickleNotAllowedError",
    "original_cache_keys",
    "read_original_session",
]

#: ``<prefix>:<uid>`` held the whole session in the original's later versions.
LATE_KEY_PREFIX = "triggers.storages.cache"
#: ``<prefix>:<uid>:config`` / ``:task_status`` / ``:meta_status`` in its earlier versions.
EARLY_KEY_PREFIX = "triggers.storage_backends.cache"
_EARLY_PARTS = (("config", "tasks"), ("task_status", "instances"), ("meta_status", "metas"))


class PickleNotAllowedError(TriggersError, PermissionError):
    """Reading the original's cache entries unpickles them; the caller did not allow it."""


def original_cache_keys(uid: str) -> list[str]:
    """The cache keys (before the cache's own prefix) the original used for ``uid``."""
    return [f"{LATE_KEY_PREFIX}:{uid}"] + [f"{EARLY_KEY_PREFIX}:{uid}:{p}" for p, _ in _EARLY_PARTS]


def read_original_session(
    uid: str, cache: Any = "default", *, allow_pickle: bool = False
) -> dict[str, Any]:
    """The original's session ``uid`` from a Django cache (alias or cache object), as
    JSON-compatible ``{'tasks', 'instances', 'metas'}`` ready for ``import_session``.

    ``allow_pickle=True`` is required: Django's cache unpickles what it reads, which
    can run arbitrary code if someone else could write to the cache (see the module
    docstring). Datetimes (the original's timestamps) become ISO 8601 UTC text, sets
    become sorted lists; any other value JSON cannot hold is reported with its path.
    """
    if allow_pickle is not True:
        raise PickleNotAllowedError(
            f"reading session {uid!r} from the original framework's cache entries unpickles "
            "them, and unpickling runs any code the stored bytes name: only do it for a cache "
            "that nothing but your own application can write to, by passing "
            "allow_pickle=True for this migration; or export the session to JSON with the "
            "original's debug_repr() and import that file instead (no pickle involved)"
        )
    from triggers_backends.django_cache import resolve_cache  # noqa: PLC0415 - needs Django

    resolved, _alias = resolve_cache(cache)
    late_key, *early_keys = original_cache_keys(uid)
    late = resolved.get(late_key)
    early = resolved.get_many(early_keys)
    if late is not None and early:
        raise OriginalSessionError(
            [
                f"session {uid!r} is stored in both of the original's layouts "
                f"({late_key!r} and {sorted(early)!r}); import from a JSON export instead"
            ]
        )
    if late is None and not early:
        raise OriginalSessionError(
            [f"no session {uid!r} in the cache (looked for {', '.join(original_cache_keys(uid))})"]
        )
    content: Any
    if late is not None:
        content = late
    else:
        content = {part: early.get(f"{EARLY_KEY_PREFIX}:{uid}:{key}") for key, part in _EARLY_PARTS}
        if content["tasks"] is None:
            raise OriginalSessionError(
                [f"{EARLY_KEY_PREFIX}:{uid}:config: missing (the session has no configuration)"]
            )
    problems: list[str] = []
    converted = _plain(content, "<session>", problems)
    if problems:
        raise OriginalSessionError(problems)
    if not isinstance(converted, dict):
        raise OriginalSessionError([f"<session>: expected a mapping, got {type(content).__name__}"])
    return converted


def _plain(value: object, path: str, problems: list[str]) -> Any:
    """``value`` with Python-only types turned into their JSON form."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            problems.append(f"{path}: {value!r} is not representable in JSON")
        return value
    if isinstance(value, datetime):
        aware = value if value.utcoffset() is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(f"{path}[{key!r}]: keys must be strings")
                continue
            out[key] = _plain(item, f"{path}.{key}", problems)
        return out
    if isinstance(value, set | frozenset):
        items = [_plain(item, f"{path}[]", problems) for item in value]
        return sorted(items, key=repr)
    if isinstance(value, list | tuple):
        return [_plain(item, f"{path}[{i}]", problems) for i, item in enumerate(value)]
    problems.append(f"{path}: {type(value).__name__} cannot be represented in JSON")
    return None
