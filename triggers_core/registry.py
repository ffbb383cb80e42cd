"""Name -> "module:Class" registries, loaded lazily, extensible through entry points.

Three registries: storages (``triggers.storages``, keyed by URL scheme),
runners (``triggers.runners``) and managers (``triggers.managers``). Built-in
names are listed here too, so a source checkout works without installing.
Importing this module imports no optional dependency.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from triggers_core._util import did_you_mean
from triggers_core.errors import RegistryError

if TYPE_CHECKING:
    from triggers_core.manager import TriggerManager
    from triggers_core.runners import TaskRunner
    from triggers_core.storage import Storage

__all__ = [
    "STORAGE_URL_ENV",
    "Registry",
    "managers",
    "open_storage",
    "runners",
    "storage_scheme",
    "storages",
]

T = TypeVar("T")

#: Environment variable holding the default storage URL (e.g. ``sqlite:///triggers.db``).
STORAGE_URL_ENV = "TRIGGERS_STORAGE_URL"


class Registry(Generic[T]):
    """Names mapped to objects or lazily imported ``"module:attr"`` targets."""

    def __init__(self, group: str, kind: str, builtins: dict[str, str]) -> None:
        self.group = group
        self.kind = kind
        self._targets: dict[str, str | T] = dict(builtins)
        self._loaded: dict[str, T] = {}
        self._entry_points_read = False
        self._lock = threading.Lock()

    def register(self, name: str, target: str | T) -> None:
        """Register ``target`` (an object or ``"module:attr"``) under ``name``."""
        with self._lock:
            self._targets[name] = target
            self._loaded.pop(name, None)

    def _read_entry_points(self) -> None:
        if self._entry_points_read:
            return
        for ep in entry_points(group=self.group):
            self._targets.setdefault(ep.name, ep.value)
        self._entry_points_read = True

    def names(self) -> list[str]:
        """Every registered name (built-ins, entry points, explicit registrations)."""
        with self._lock:
            self._read_entry_points()
            return sorted(self._targets)

    def load(self, name: str) -> T:
        """The object registered under ``name``, importing it on first use."""
        with self._lock:
            if name in self._loaded:
                return self._loaded[name]
            self._read_entry_points()
            if name not in self._targets:
                raise RegistryError(
                    f"no {self.kind} named {name!r}{did_you_mean(name, self._targets)}"
                )
            target = self._targets[name]
        if isinstance(target, str):
            module_name, _, attr = target.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise RegistryError(
                    f"{self.kind} {name!r} needs {module_name!r}, which could not be imported "
                    f"({exc}); is the matching extra installed (pip install 'triggers[...]')?"
                ) from exc
            loaded: Any = module
            for part in attr.split("."):
                loaded = getattr(loaded, part)
        else:
            loaded = target
        with self._lock:
            self._loaded[name] = loaded
        result: T = loaded
        return result


storages: Registry[type[Storage]] = Registry(
    "triggers.storages",
    "storage",
    {
        "memory": "triggers_core.memory:MemoryStorage",
        "sqlite": "triggers_backends.sqlalchemy:SQLAlchemyStorage",
        "postgresql": "triggers_backends.sqlalchemy:SQLAlchemyStorage",
        "postgres": "triggers_backends.sqlalchemy:SQLAlchemyStorage",
        "mysql": "triggers_backends.sqlalchemy:SQLAlchemyStorage",
        "mariadb": "triggers_backends.sqlalchemy:SQLAlchemyStorage",
    },
)

runners: Registry[Callable[[], TaskRunner]] = Registry(
    "triggers.runners",
    "task runner",
    {
        "threading": "triggers_core.runners:ThreadingTaskRunner",
        "celery": "triggers_celery.runner:CeleryTaskRunner",
    },
)

managers: Registry[type[TriggerManager]] = Registry(
    "triggers.managers",
    "trigger manager",
    {"default": "triggers_core.manager:TriggerManager"},
)


def storage_scheme(url: str) -> str:
    """The registry key of a storage URL: ``postgresql+psycopg://`` -> ``postgresql``."""
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise RegistryError(
            f"not a storage URL: {url!r} (expected scheme://..., e.g. sqlite:///triggers.db; "
            f"schemes: {', '.join(storages.names())})"
        )
    return scheme.split("+", 1)[0].lower()


def open_storage(url: str | None, uid: str) -> Storage:
    """Open session ``uid`` in the storage selected by ``url``.

    ``url`` defaults to the ``TRIGGERS_STORAGE_URL`` environment variable, then
    to ``memory://``. Unknown schemes raise :class:`RegistryError` listing the
    known ones.
    """
    if url is None:
        url = os.environ.get(STORAGE_URL_ENV) or "memory://"
    scheme = storage_scheme(url)
    try:
        cls = storages.load(scheme)
    except RegistryError as exc:
        raise RegistryError(
            f"{exc} (storage URL {_redact(url)}; known schemes: {', '.join(storages.names())})"
        ) from exc
    return cls.from_url(url, uid)


def _redact(url: str) -> str:
    """Hide a password in a URL before it reaches an error message or a log."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
