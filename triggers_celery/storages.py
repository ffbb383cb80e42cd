"""How a message names a storage, and how a worker opens the storage it names.

A message never carries a URL with credentials. It carries either

* a **name** that the worker looks up in its own settings: the Celery setting
  ``triggers_storages`` (``{"default": "postgresql+psycopg://app:secret@db/app"}``;
  ``CELERY_TRIGGERS_STORAGES`` in Django settings with the ``CELERY``
  namespace), where ``default`` falls back to the ``TRIGGERS_STORAGE_URL``
  environment variable; or
* the storage's credential-free **reference** (:meth:`Storage.reference`,
  e.g. ``postgresql+psycopg://app@db/app``), when the sender's settings name
  no storage with that reference. The worker maps it back to the configured
  URL with the same reference (so it uses its own credentials), or opens the
  reference as it is (an SQLite path, a database with trust authentication,
  credentials from the backend's own environment lookup).

The sender prefers a name: the storage was opened under one
(:func:`open_manager`, or a worker-side rebuild), or a configured storage has
the same reference.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from triggers_celery.errors import StorageResolutionError
from triggers_celery.message import has_password
from triggers_core._util import did_you_mean
from triggers_core.registry import STORAGE_URL_ENV, open_storage
from triggers_core.storage import Storage

if TYPE_CHECKING:
    from triggers_core.manager import TriggerManager

__all__ = [
    "DEFAULT_STORAGE_NAME",
    "STORAGES_SETTING",
    "configured_storages",
    "message_storage",
    "name_storage",
    "open_manager",
    "open_message_storage",
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


def configured_storages(conf: Mapping[str, Any] | None) -> dict[str, str]:
    """Storage name -> URL from a Celery app's settings (plus the environment default)."""
    raw = (conf.get(STORAGES_SETTING) if conf is not None else None) or {}
    if not isinstance(raw, Mapping):
        raise StorageResolutionError(
            f"the Celery setting {STORAGES_SETTING!r} must map names to storage URLs, "
            f"got {type(raw).__name__}"
        )
    storages: dict[str, str] = {}
    for name, url in raw.items():
        if not isinstance(name, str) or not name or "://" in name:
            raise StorageResolutionError(f"{STORAGES_SETTING}: bad storage name {name!r}")
        if not isinstance(url, str) or "://" not in url:
            raise StorageResolutionError(f"{STORAGES_SETTING}[{name!r}]: not a storage URL")
        storages[name] = url
    env_url = os.environ.get(STORAGE_URL_ENV)
    if env_url and DEFAULT_STORAGE_NAME not in storages:
        storages[DEFAULT_STORAGE_NAME] = env_url
    return storages


def name_storage(storage: Storage, name: str) -> Storage:
    """Remember that ``storage`` was opened under the configured ``name``; return it."""
    with _NAMES_LOCK:
        _NAMES[storage] = name
    return storage


def _reference_of(url: str) -> str | None:
    """The reference of the storage a configured URL opens (cached; None if unknown)."""
    with _REFERENCES_LOCK:
        if url in _REFERENCES:
            return _REFERENCES[url]
    try:
        reference = open_storage(url, _PROBE_UID).reference()
    except Exception as exc:  # a broken entry must not break the others; it fails when used
        log.debug("cannot compute the reference of a configured storage: %s", exc)
        reference = None
    with _REFERENCES_LOCK:
        _REFERENCES[url] = reference
    return reference


def message_storage(storage: Storage, conf: Mapping[str, Any] | None) -> str:
    """What a message carries to name ``storage``: a configured name or a safe reference.

    Raises :class:`StorageResolutionError` if the storage has no reference
    and was not opened under a name.
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
    if has_password(reference):
        raise StorageResolutionError(
            f"{type(storage).__name__}.reference() contains a password; configure the "
            f"storage under a name in the Celery setting {STORAGES_SETTING!r}"
        )
    return reference


def open_message_storage(conf: Mapping[str, Any] | None, storage: str, uid: str) -> Storage:
    """Open session ``uid`` of the storage a message names, from the worker's settings."""
    configured = configured_storages(conf)
    if "://" not in storage:
        url = configured.get(storage)
        if url is None:
            hint = did_you_mean(storage, configured) or " (no storages are configured)"
            raise StorageResolutionError(
                f"this worker has no storage named {storage!r}{hint}; set the Celery setting "
                f"{STORAGES_SETTING!r} (or {STORAGE_URL_ENV} for {DEFAULT_STORAGE_NAME!r})"
            )
        return name_storage(open_storage(url, uid), storage)
    for configured_name, url in configured.items():
        if _reference_of(url) == storage:
            return name_storage(open_storage(url, uid), configured_name)
    return open_storage(storage, uid)


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
    app); ``manager`` is a key of :data:`triggers_core.registry.managers`.
    Messages for this manager's instances carry the name, never the URL.
    """
    from triggers_celery.runner import default_app  # noqa: PLC0415 - runner imports us
    from triggers_core.registry import managers  # noqa: PLC0415 - keep import light

    conf = (app or default_app()).conf
    opened = open_message_storage(conf, storage, uid)
    return managers.load(manager)(opened, **manager_kwargs)
