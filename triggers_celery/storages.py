"""Which storages a process may open, and how a message names one.

Trust model: a worker opens only storages that *its own* configuration names.
A message names a storage, and the worker looks the name up; a message can
never make a worker connect somewhere, use its credentials elsewhere, create a
file or create tables.

Each process (web or worker) configures its storages by name: the Celery
setting ``triggers_storages`` (``{"default": "postgresql+psycopg://app:secret@db/app"}``;
``CELERY_TRIGGERS_STORAGES`` in Django settings with the ``CELERY``
namespace), where ``default`` falls back to the ``TRIGGERS_STORAGE_URL``
environment variable. The message's ``storage`` field is either

* a **name** from that mapping, or
* an opaque **reference**: a storage's credential-free
  :meth:`~triggers_core.Storage.reference`, which a worker accepts only if one
  of its configured storages has exactly the same reference; it then opens
  *its own* configured URL.

Anything else is refused with :class:`~triggers_celery.errors.StorageResolutionError`.
Storages opened for a message never create tables, whatever the configured
URL says. ``memory://`` storages live in one process, so a worker refuses them.

:func:`seal_storages` (called by :func:`~triggers_celery.bind_tasks`) replaces
the setting's mapping by a :class:`StorageURLs`, whose ``repr`` hides secrets:
Celery's ``inspect conf`` would otherwise send the URLs, passwords included, to
anyone who can talk to the broker.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from triggers_celery.app import default_app
from triggers_celery.errors import StorageResolutionError
from triggers_core.errors import UnsupportedOperationError, did_you_mean
from triggers_core.runtime.redaction import redact
from triggers_core.runtime.registry import STORAGE_URL_ENV, open_storage, storage_scheme, storages
from triggers_core.runtime.storage import Storage

if TYPE_CHECKING:
    from triggers_core.runtime.manager import TriggerManager

__all__ = [
    "DEFAULT_STORAGE_NAME",
    "STORAGES_SETTING",
    "StorageURLs",
    "configured_storages",
    "message_storage",
    "name_storage",
    "open_configured_storage",
    "open_manager",
    "seal_storages",
]

log = logging.getLogger(__name__)

#: The Celery setting mapping storage names to URLs.
STORAGES_SETTING = "triggers_storages"
#: The name used when none is given; falls back to ``TRIGGERS_STORAGE_URL``.
DEFAULT_STORAGE_NAME = "default"

_NAMES: weakref.WeakKeyDictionary[Storage, str] = weakref.WeakKeyDictionary()
_NAMES_LOCK = threading.Lock()
_REFERENCES: dict[str, str | None] = {}
_REFERENCES_LOCK = threading.Lock()
_PROBE_UID = "triggers-celery-reference-probe"
#: (pid, URL) -> this process's root storage of that URL (None: it opens no siblings).
_ROOTS: dict[tuple[int, str], Storage | None] = {}
_ROOTS_LOCK = threading.Lock()
_NO_ROOT = object()


class StorageURLs:
    """Storage name -> URL, as a value whose ``repr`` never shows a secret.

    Deliberately not a :class:`~collections.abc.Mapping`: Celery censors
    settings by key name and walks into mappings, so a plain dict under
    ``triggers_storages`` would be sent in clear by ``celery inspect conf``;
    this object is sent as its ``repr``.
    """

    __slots__ = ("_urls",)

    def __init__(self, urls: Mapping[str, str]) -> None:
        self._urls = _validated(urls)

    def names(self) -> list[str]:
        """The configured names, sorted."""
        return sorted(self._urls)

    def as_dict(self) -> dict[str, str]:
        """Name -> URL, credentials included (for this process only)."""
        return dict(self._urls)

    def __len__(self) -> int:
        return len(self._urls)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StorageURLs) and other._urls == self._urls

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._urls.items())))

    def __repr__(self) -> str:
        shown = {name: redact(url) for name, url in sorted(self._urls.items())}
        return f"StorageURLs({shown!r})"


def _validated(raw: object) -> dict[str, str]:
    if isinstance(raw, StorageURLs):
        return raw.as_dict()
    if not isinstance(raw, Mapping):
        raise StorageResolutionError(
            f"the Celery setting {STORAGES_SETTING!r} must map names to storage URLs, "
            f"got {type(raw).__name__}"
        )
    urls: dict[str, str] = {}
    for name, url in raw.items():
        if not isinstance(name, str) or not name or "://" in name or redact(name) != name:
            shown = redact(name) if isinstance(name, str) else name
            raise StorageResolutionError(f"{STORAGES_SETTING}: bad storage name {shown!r}")
        if not isinstance(url, str) or "://" not in url:
            raise StorageResolutionError(f"{STORAGES_SETTING}[{name!r}]: not a storage URL")
        urls[name] = url
    return urls


def configured_storages(conf: Mapping[str, Any] | None) -> dict[str, str]:
    """Storage name -> URL from a Celery app's settings (plus the environment default).

    ``default`` is the ``TRIGGERS_STORAGE_URL`` environment variable unless
    the setting names a ``default`` itself.
    """
    raw = conf.get(STORAGES_SETTING) if conf is not None else None
    urls = _validated(raw or {})
    env_url = os.environ.get(STORAGE_URL_ENV)
    if env_url and DEFAULT_STORAGE_NAME not in urls:
        urls[DEFAULT_STORAGE_NAME] = env_url
    return urls


def seal_storages(conf: Any) -> None:
    """Replace a plain mapping under ``triggers_storages`` by a :class:`StorageURLs`.

    Idempotent. The names and URLs stay the same; only their ``repr`` (and so
    Celery's ``inspect conf`` and ``celery report``) hides the secrets.
    """
    raw = conf.get(STORAGES_SETTING)
    if raw is not None and not isinstance(raw, StorageURLs):
        conf[STORAGES_SETTING] = StorageURLs(_validated(raw))


def name_storage(storage: Storage, name: str) -> Storage:
    """Remember that ``storage`` was opened under the configured ``name``; return it."""
    with _NAMES_LOCK:
        _NAMES[storage] = name
    return storage


def _without_schema_creation(url: str) -> str:
    """``url`` with its backend's schema-creation option forced off (if it has one)."""
    option = storages.load(storage_scheme(url)).schema_url_option
    if option is None:
        return url
    # last value wins for repeated options, whatever the URL said before
    return f"{url}{'&' if '?' in url else '?'}{option}=false"


def _reference_of(url: str) -> str | None:
    """The reference of the storage a configured URL opens (cached; None if unknown)."""
    with _REFERENCES_LOCK:
        if url in _REFERENCES:
            return _REFERENCES[url]
    try:
        # Builds the storage object only: nothing connects and nothing is created.
        reference = open_storage(_without_schema_creation(url), _PROBE_UID).reference()
    except Exception as exc:  # a broken entry must not break the others; it fails when used
        log.debug("cannot compute the reference of a configured storage: %s", redact(str(exc)))
        reference = None
    with _REFERENCES_LOCK:
        _REFERENCES[url] = reference
    return reference


def message_storage(storage: Storage, conf: Mapping[str, Any] | None) -> str:
    """What a message carries to name ``storage``: a configured name or its reference.

    A name if ``storage`` was opened under one or a configured storage has the
    same reference; else the storage's credential-free reference, which a
    worker accepts only if its own configuration has a storage with the same
    reference. Raises :class:`StorageResolutionError` if the storage can be
    named neither way.
    """
    with _NAMES_LOCK:
        name = _NAMES.get(storage)
    if name is not None:
        return name
    reference = storage.reference()
    if reference is None:
        raise StorageResolutionError(
            f"{storage!r} cannot be named in a task message: it has no reference() and was "
            "not opened under a configured name; open it with "
            "triggers_celery.open_manager(uid, storage=<name in triggers_storages>)"
        )
    for configured_name, url in configured_storages(conf).items():
        if _reference_of(url) == reference:
            return configured_name
    if redact(reference) != reference:
        raise StorageResolutionError(
            f"{type(storage).__name__}.reference() contains a secret; configure the "
            f"storage under a name in the Celery setting {STORAGES_SETTING!r}"
        )
    return reference


def open_configured_storage(
    conf: Mapping[str, Any] | None, storage: str, uid: str, *, for_message: bool = True
) -> Storage:
    """Open session ``uid`` of the configured storage that ``storage`` names.

    ``storage`` is a configured name, or the reference of a configured storage.
    Anything else raises :class:`StorageResolutionError` before anything is
    opened, connected to or created. With ``for_message`` (a worker acting on
    a message), ``memory://`` storages are refused and tables are never created.
    """
    configured = configured_storages(conf)
    if "://" in storage:
        matches = [name for name, url in configured.items() if _reference_of(url) == storage]
        if not matches:
            raise StorageResolutionError(
                f"refusing storage reference {redact(storage)!r}: no storage configured in "
                "this process has that reference, and a message may only name a configured "
                f"storage (the Celery setting {STORAGES_SETTING!r}, or {STORAGE_URL_ENV} for "
                f"{DEFAULT_STORAGE_NAME!r})"
            )
        name = sorted(matches)[0]
    else:
        name = storage
        if name not in configured:
            hint = did_you_mean(name, configured) or " (no storages are configured)"
            raise StorageResolutionError(
                f"refusing storage {redact(name)!r}: this process has no storage by that "
                f"name{hint}; set the Celery setting {STORAGES_SETTING!r} (or "
                f"{STORAGE_URL_ENV} for {DEFAULT_STORAGE_NAME!r})"
            )
    url = configured[name]
    if for_message:
        if storage_scheme(url) == "memory":
            raise StorageResolutionError(
                f"storage {name!r} is memory://, which lives inside one process: a Celery "
                "worker cannot see the sessions the sender stored there. Configure a storage "
                "both can reach (sqlite:///path/shared.db, postgresql+psycopg://...), or use "
                "task_always_eager in tests"
            )
        url = _without_schema_creation(url)
    return name_storage(_open_reused(url, uid), name)


def _open_reused(url: str, uid: str) -> Storage:
    """Session ``uid`` of the store ``url`` opens, from this process's root storage of it.

    The first open of a URL in a process keeps its storage as the root; later
    opens call the root's :meth:`~triggers_core.Storage.session`, which shares
    what belongs to the store rather than to a session (the client and its
    connection pool, a decoded-document cache keyed by immutable revisions,
    prepared statements), so a worker does not rebuild them for every message
    and a producer for every fire. Keyed by process id too: a forked pool
    process never uses its parent's root. A storage that cannot open a sibling
    session is opened from the URL every time, and so is ``memory://`` (whose
    stores may be private to each opening). Bound: one root per configured URL
    and process.
    """
    key = (os.getpid(), url)
    with _ROOTS_LOCK:
        root = _ROOTS.get(key, _NO_ROOT)
    if root is not _NO_ROOT and root is not None:  # never a memory:// one (see below)
        return cast(Storage, root).session(uid)
    if root is None or storage_scheme(url) == "memory":  # no sibling sessions
        return open_storage(url, uid)
    opened = open_storage(url, uid)
    try:
        sibling = opened.session(_PROBE_UID)
    except UnsupportedOperationError:
        sibling = None
    with _ROOTS_LOCK:
        _ROOTS.setdefault(key, sibling)
    return opened


def open_manager(
    uid: str,
    storage: str = DEFAULT_STORAGE_NAME,
    *,
    app: Any = None,
    manager: str = "default",
    **manager_kwargs: Any,
) -> TriggerManager:
    """A manager for session ``uid`` on the storage configured under the name ``storage``.

    ``app`` is the Celery app whose settings hold ``triggers_storages`` (default:
    the app given to :func:`~triggers_celery.bind_tasks`, else Celery's current
    app); ``manager`` is a key of :data:`triggers_core.runtime.registry.managers`.
    Messages for this manager's instances carry the name, never the URL. The
    storage is opened as configured (a SQLite file's tables are created unless
    the URL says ``triggers_create_schema=false``).
    """
    from triggers_core.runtime.manager import managers  # noqa: PLC0415 - keep import light

    conf = (app or default_app()).conf
    opened = open_configured_storage(conf, storage, uid, for_message=False)
    return managers.load(manager)(opened, **manager_kwargs)
