"""Name -> "module:Class" registries, loaded lazily, extensible through entry points.

Four registries: storages (``triggers.storages``, keyed by URL scheme),
async storages (``triggers.async_storages``, keyed by the full URL scheme,
driver included: ``postgresql+asyncpg``), runners (``triggers.runners``) and
managers (``triggers.managers``). Built-in
names are listed here too, so a source checkout works without installing.
Importing this module imports no optional dependency.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar, cast

from triggers_core.errors import RegistryError, did_you_mean, install_extra_hint
from triggers_core.runtime.async_storage import AsyncStorage
from triggers_core.runtime.ports import TaskRunner
from triggers_core.runtime.redaction import redact
from triggers_core.runtime.storage import Storage

__all__ = [
    "EXTRAS",
    "STORAGE_URL_ENV",
    "Registry",
    "async_storages",
    "install_hint",
    "open_async_storage",
    "open_storage",
    "runners",
    "storage_class_for",
    "storage_scheme",
    "storages",
    "store_url",
    "sync_twin_url",
]

T = TypeVar("T")

# The logger keeps the name it had before the package was split by layer.
log = logging.getLogger("triggers_core.registry")

#: Environment variable holding the default storage URL (e.g. ``sqlite:///triggers.db``).
STORAGE_URL_ENV = "TRIGGERS_STORAGE_URL"

#: The extra that provides a registry name's dependencies (its install command:
#: :func:`~triggers_core.errors.install_extra_hint`), and the top-level modules it installs.
EXTRAS: dict[str, tuple[str, frozenset[str]]] = {
    "sqlite": ("sqlalchemy", frozenset({"sqlalchemy"})),
    "postgresql": ("postgres", frozenset({"sqlalchemy", "psycopg", "psycopg_binary"})),
    "postgres": ("postgres", frozenset({"sqlalchemy", "psycopg", "psycopg_binary"})),
    "mysql": ("mysql", frozenset({"sqlalchemy", "pymysql"})),
    "mariadb": ("mysql", frozenset({"sqlalchemy", "pymysql"})),
    "memcached": ("memcached", frozenset({"pymemcache"})),
    "django-cache": ("django", frozenset({"django"})),
    "celery": ("celery", frozenset({"celery", "kombu"})),
    "sqlite+aiosqlite": ("async", frozenset({"sqlalchemy", "aiosqlite", "greenlet"})),
    "postgresql+asyncpg": ("async", frozenset({"sqlalchemy", "asyncpg", "greenlet"})),
    "postgresql+psycopg": ("async", frozenset({"sqlalchemy", "greenlet"})),
    "mysql+aiomysql": ("async", frozenset({"sqlalchemy", "aiomysql", "greenlet"})),
    "mariadb+aiomysql": ("async", frozenset({"sqlalchemy", "aiomysql", "greenlet"})),
}

_default_warned = False
_default_warned_lock = threading.Lock()


def install_hint(name: str, missing: str | None) -> str:
    """What to install when registry name ``name`` misses the module ``missing``."""
    top = (missing or "").split(".", 1)[0]
    extra = EXTRAS.get(name)
    if extra is not None and (not top or top in extra[1]):
        return install_extra_hint(extra[0])
    if top:
        return f"install the module {top!r} (pip install {top})"
    return f"install the matching extra: {install_extra_hint('...')}"


def _top(module: str | None) -> str | None:
    """The package to install for a missing module (``sqlalchemy.engine`` -> ``sqlalchemy``)."""
    return module.split(".", 1)[0] if module else module


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")


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
                if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name != module_name:
                    problem = f"needs the module {_top(exc.name)!r}, which is not installed"
                else:
                    problem = f"needs {module_name!r}, which could not be imported ({exc})"
                raise RegistryError(
                    f"{self.kind} {name!r} {problem}: {install_hint(name, exc.name)}"
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
        "memory": "triggers_core.runtime.memory:MemoryStorage",
        "sqlite": "triggers_backends.sqlalchemy:SQLAlchemyStorage",
        "postgresql": "triggers_backends.sqlalchemy:SQLAlchemyStorage",
        "postgres": "triggers_backends.sqlalchemy:SQLAlchemyStorage",
        "mysql": "triggers_backends.sqlalchemy:SQLAlchemyStorage",
        "mariadb": "triggers_backends.sqlalchemy:SQLAlchemyStorage",
        "memcached": "triggers_backends.memcached:MemcachedStorage",
        "django-cache": "triggers_backends.django_cache:CacheStorageBackend",
    },
)

runners: Registry[Callable[[], TaskRunner]] = Registry(
    "triggers.runners",
    "task runner",
    {
        "threading": "triggers_core.runtime.runners:ThreadingTaskRunner",
        "asyncio": "triggers_core.runtime.async_runner:AsyncioTaskRunner",
        "celery": "triggers_celery.runner:CeleryTaskRunner",
    },
)


def storage_scheme(url: str) -> str:
    """The registry key of a storage URL: ``postgresql+psycopg://`` -> ``postgresql``."""
    scheme, sep, _ = url.partition("://")
    if not sep or _SCHEME.fullmatch(scheme) is None:
        raise RegistryError(
            f"not a storage URL: {redact(url)!r} (expected scheme://..., "
            f"e.g. sqlite:///triggers.db; schemes: {', '.join(storages.names())})"
        )
    return scheme.split("+", 1)[0].lower()


S = TypeVar("S", Storage, AsyncStorage)


def session_storage(
    storage: S | str | None,
    uid: str | None,
    kind: type,  # Storage or AsyncStorage (abstract classes: not ``type[S]`` for mypy)
    opener: Callable[[str | None, str], S],
) -> S:
    """The storage a manager works on: ``storage`` itself when it is a ``kind``
    (``uid``, if given, must be its session), else what ``opener`` opens from
    the URL ``storage`` (None: the default URL) for session ``uid``."""
    if isinstance(storage, kind):
        found = cast(S, storage)
        if uid is not None and uid != found.uid:
            raise ValueError(f"uid {uid!r} given with a storage for session {found.uid!r}")
        return found
    if storage is not None and not isinstance(storage, str):
        raise TypeError(
            f"storage must be an instance of {kind.__name__}, a storage URL or None, "
            f"got {type(storage).__name__}"
        )
    if uid is None:
        raise ValueError("a session uid is required when storage is a URL or None")
    return opener(storage, uid)


def open_storage(url: str | None, uid: str) -> Storage:
    """Open session ``uid`` in the storage selected by ``url``.

    ``url`` defaults to the ``TRIGGERS_STORAGE_URL`` environment variable, then
    to ``memory://`` -- a store private to this process, so the first time
    that happens in a process a warning is logged. Unknown schemes raise
    :class:`RegistryError` listing the known ones; a missing database driver
    raises :class:`RegistryError` naming the extra to install.
    """
    if url is None:
        url = os.environ.get(STORAGE_URL_ENV) or _memory_default()
    scheme = storage_scheme(url)
    try:
        cls = storages.load(scheme)
    except RegistryError as exc:
        raise RegistryError(_unusable(exc, scheme, url)) from exc
    try:
        return cls.from_url(url, uid)
    except ModuleNotFoundError as exc:  # the database driver, imported when first used
        raise RegistryError(
            f"storage URL {redact(url)!r} needs the module {_top(exc.name)!r}, which is not "
            f"installed: {install_hint(scheme, exc.name)}"
        ) from exc


def _unusable(exc: RegistryError, scheme: str, url: str) -> str:
    """The message for a storage URL whose scheme cannot be loaded: unknown, or an extra
    missing (then the known schemes are beside the point)."""
    known = storages.names()
    listed = "" if scheme in known else f"; known schemes: {', '.join(known)}"
    return f"{exc} (storage URL {redact(url)!r}{listed})"


def _memory_default() -> str:
    global _default_warned  # once per process
    with _default_warned_lock:
        warn, _default_warned = not _default_warned, True
    if warn:
        log.warning(
            "no storage URL was given and %s is not set: sessions are kept in a memory:// "
            "store private to this process, so other processes (web workers, Celery "
            "workers, scripts) will not see them and they are lost at exit. Set %s (for "
            "example sqlite:///triggers.db) or pass a storage URL to TriggerManager.",
            STORAGE_URL_ENV,
            STORAGE_URL_ENV,
        )
    return "memory://"


def store_url(url: str | None, example: str = "sqlite:///triggers.db") -> str:
    """``url``, else ``TRIGGERS_STORAGE_URL``: the URL of an operation over a whole store,
    which never falls back to a process-private ``memory://`` store (RegistryError, with
    ``example`` of a URL, when neither is given)."""
    if url is not None:
        return url
    found = os.environ.get(STORAGE_URL_ENV)
    if not found:
        raise RegistryError(
            f"no storage URL given and {STORAGE_URL_ENV} is not set (e.g. {example})"
        )
    return found


def storage_class_for(url: str | None) -> tuple[type[Storage], str]:
    """The storage class registered for ``url``'s scheme, and the URL itself.

    For operations over a whole store (listing its sessions, sweeping it).
    ``url`` defaults to ``TRIGGERS_STORAGE_URL``; unlike opening one session,
    they never fall back to a process-private ``memory://`` store.
    """
    url = store_url(url)
    scheme = storage_scheme(url)
    try:
        return storages.load(scheme), url
    except RegistryError as exc:
        raise RegistryError(_unusable(exc, scheme, url)) from exc


_ASYNC_SQL = "triggers_backends.sqlalchemy.asyncio:AsyncSQLAlchemyStorage"

#: Async storages by full URL scheme (entry point group ``triggers.async_storages``),
#: for :class:`~triggers_core.runtime.async_manager.AsyncTriggerManager`.
async_storages: Registry[type[AsyncStorage]] = Registry(
    "triggers.async_storages",
    "async storage",
    {
        "memory": "triggers_core.runtime.async_memory:AsyncMemoryStorage",
        "sqlite+aiosqlite": _ASYNC_SQL,
        "postgresql+asyncpg": _ASYNC_SQL,
        "postgresql+psycopg": _ASYNC_SQL,
        "mysql+aiomysql": _ASYNC_SQL,
        "mariadb+aiomysql": _ASYNC_SQL,
    },
)

#: Why a storage scheme has no async adapter, and what to use instead.
_NO_ASYNC: dict[str, str] = {
    "sqlite": "plain sqlite:// is the blocking sqlite3 driver; use sqlite+aiosqlite://",
    "postgresql": (
        "plain postgresql:// selects a blocking driver; use postgresql+asyncpg:// or "
        "postgresql+psycopg:// (psycopg 3 has an asyncio mode)"
    ),
    "postgres": "use postgresql+asyncpg:// or postgresql+psycopg://",
    "postgresql+psycopg2": "psycopg2 has no asyncio mode; use postgresql+asyncpg://",
    "mysql": "plain mysql:// selects a blocking driver; use mysql+aiomysql://",
    "mysql+pymysql": "pymysql is blocking; use mysql+aiomysql://",
    "mariadb": "plain mariadb:// selects a blocking driver; use mariadb+aiomysql://",
    "mariadb+pymysql": "pymysql is blocking; use mariadb+aiomysql://",
    "memcached": (
        "memcached's compare-and-swap adapter is blocking (pymemcache) and there is no "
        "async one; use the synchronous TriggerManager (in a thread: asyncio.to_thread)"
    ),
    "django-cache": (
        "Django's cache API has no compare-and-swap, and the per-cache adapters that add "
        "one are blocking with no async versions; use the synchronous TriggerManager "
        "(from an async view: asgiref's sync_to_async) or an async SQL storage"
    ),
}

#: Async driver scheme -> the synchronous scheme of the same database (``sync_twin_url``).
_SYNC_TWINS = {
    "memory": "memory",
    "sqlite+aiosqlite": "sqlite",
    "postgresql+asyncpg": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "mysql+aiomysql": "mysql+pymysql",
    "mariadb+aiomysql": "mariadb+pymysql",
}


def async_storage_scheme(url: str) -> str:
    """The async registry key of a storage URL: its whole scheme, lower case."""
    scheme, sep, _ = url.partition("://")
    if not sep or _SCHEME.fullmatch(scheme) is None:
        raise RegistryError(
            f"not a storage URL: {redact(url)!r} (expected scheme://..., e.g. "
            f"sqlite+aiosqlite:///triggers.db; schemes: {', '.join(async_storages.names())})"
        )
    return scheme.lower()


def open_async_storage(url: str | None, uid: str) -> AsyncStorage:
    """Open session ``uid`` in the async storage selected by ``url``.

    ``url`` defaults as for :func:`open_storage` (``TRIGGERS_STORAGE_URL``, then
    a process-private ``memory://``). A scheme with no async adapter
    (``memcached://``, ``django-cache://``, plain ``sqlite://`` or
    ``postgresql://``) is refused with a :class:`RegistryError` saying why and
    what to use instead: it is never run on a thread behind the caller's back.
    """
    if url is None:
        url = os.environ.get(STORAGE_URL_ENV) or _memory_default()
    scheme = async_storage_scheme(url)
    known = async_storages.names()
    if scheme not in known:
        reason = _NO_ASYNC.get(scheme)
        if reason is None and scheme.split("+", 1)[0] in storages.names():
            reason = "this scheme has no async adapter"
        why = f": {reason}" if reason else ""
        raise RegistryError(
            f"storage URL {redact(url)!r} cannot be opened by the async manager{why} "
            f"(async schemes: {', '.join(known)})"
        )
    try:
        cls = async_storages.load(scheme)
    except RegistryError as exc:
        raise RegistryError(f"{exc} (storage URL {redact(url)!r})") from exc
    try:
        return cls.from_url(url, uid)
    except ModuleNotFoundError as exc:  # the database driver, imported when first used
        raise RegistryError(
            f"storage URL {redact(url)!r} needs the module {_top(exc.name)!r}, which is not "
            f"installed: {install_hint(scheme, exc.name)}"
        ) from exc


def sync_twin_url(url: str) -> str:
    """The synchronous URL of the database an async storage URL names.

    ``postgresql+asyncpg://u@h/db`` -> ``postgresql+psycopg://u@h/db``,
    ``sqlite+aiosqlite:///x.db`` -> ``sqlite:///x.db``, ``memory://n`` stays. What
    a worker opens for instances an async manager hands to a synchronous runner.
    """
    scheme = async_storage_scheme(url)
    twin = _SYNC_TWINS.get(scheme)
    if twin is None:
        raise RegistryError(f"no synchronous twin is known for {redact(url)!r}")
    return twin + url[len(scheme) :]
