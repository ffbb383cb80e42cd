"""``CacheStorageBackend``: the storage contract on every Django cache (multi-process race
on every cache shared between processes), URLs and references, refusals through the
storage, no silent expiry, and what a process without Django settings is told.

Django is configured by the ``django_settings`` fixture (``tests/django_env.py``):
real Redis (two cache classes), a memcached the run starts, DatabaseCache on SQLite
and PostgreSQL, LocMem; every cache says ``TIMEOUT: 1``. The racing processes of
the contract configure Django from ``DJANGO_SETTINGS_MODULE``, as an application's
processes do, and reopen the storage from its reference ``django-cache://<alias>``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from typing import Any, ClassVar

import django_env
import pytest
from services import require_service

from triggers_backends.django_cache import CacheStorageBackend, UnsupportedCacheError
from triggers_backends.django_cache._storage import parse_url
from triggers_core import (
    Status,
    Storage,
    StorageURLError,
    TaskContext,
    TriggerManager,
    TriggerTask,
    open_storage,
)
from triggers_core.errors import ConfigurationError, RegistryError
from triggers_core.testing.lease_contract import LeaseContract
from triggers_core.testing.storage_contract import RecordingRunner, StorageContract

EVERY = {"t_every": {"after": ["tick"], "andEvery": "tick", "run": "contract_task"}}


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


def manager_on(storage: Storage) -> tuple[TriggerManager, RecordingRunner]:
    runner = RecordingRunner()
    return TriggerManager(storage, runners={"rec": runner}, default_runner="rec"), runner


class DjangoCacheStorageCases(StorageContract):
    """The storage contract on one cache alias, opened by alias (as from a URL)."""

    # Set here, not only in subclasses: the contract removes the race from a class
    # that does not support it, and subclasses would inherit the removal.
    supports_multiprocess = True
    alias: ClassVar[str]
    #: (name, host, port) of the server the cache needs, if any.
    service: ClassVar[tuple[str, str, int] | None] = None

    @pytest.fixture(autouse=True)
    def _django(self, django_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
        if self.service is not None:
            require_service(*self.service)
        # Spawned racers inherit the environment: they configure Django from it.
        for name, value in django_env.process_environment(django_settings).items():
            monkeypatch.setenv(name, value)
        self.prefix = unique_prefix()

    def make_storage(self, uid: str) -> CacheStorageBackend:
        return CacheStorageBackend(uid, self.alias, prefix=self.prefix)

    def test_the_reference_names_the_alias_and_the_prefix(self, uid: str) -> None:
        storage = self.make_storage(uid)
        assert storage.reference() == (
            f"django-cache://{self.alias}?prefix={self.prefix.replace(':', '%3A')}"
        )
        reference = storage.reference()
        assert reference is not None
        reopened = open_storage(reference, uid)
        assert isinstance(reopened, CacheStorageBackend)
        manager_on(storage)[0].update_configuration(EVERY)
        assert reopened.load().version == 1


class DjangoCacheLeaseCases(LeaseContract):
    """The lease contract on one cache alias (records, hints, the cache's conditional write)."""

    alias: ClassVar[str]
    service: ClassVar[tuple[str, str, int] | None] = None

    @pytest.fixture(autouse=True)
    def _django(self, django_settings: dict[str, Any]) -> None:
        if self.service is not None:
            require_service(*self.service)
        self.prefix = unique_prefix()

    def make_storage(self, uid: str) -> CacheStorageBackend:
        return CacheStorageBackend(uid, self.alias, prefix=self.prefix)


class TestRedisCacheLeases(DjangoCacheLeaseCases):
    alias = django_env.REDIS
    service = ("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)


class TestDjangoRedisCacheLeases(DjangoCacheLeaseCases):
    alias = django_env.DJANGO_REDIS
    service = ("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)


class TestPyMemcacheCacheLeases(DjangoCacheLeaseCases):
    alias = django_env.MEMCACHED

    @pytest.fixture(autouse=True)
    def _server(self, memcached: Any) -> None:
        """The session's memcached (the cache's LOCATION)."""


class ThreadClosingStorage(CacheStorageBackend):
    """Closes the calling thread's database connection after a renewal or a claim made
    outside the main thread: the lease contract's racing threads end without closing
    the connection Django opened for them (ResourceWarning)."""

    def _closing(self, outcome: bool) -> bool:
        if threading.current_thread() is not threading.main_thread():
            self.close()
        return outcome

    def renew_lease(self, name: str, owner: str, expires: datetime) -> bool:
        return self._closing(super().renew_lease(name, owner, expires))

    def claim_lease(self, name: str, owner: str, seen: datetime, until: datetime) -> bool:
        return self._closing(super().claim_lease(name, owner, seen, until))


class DatabaseCacheLeaseCases(DjangoCacheLeaseCases):
    def make_storage(self, uid: str) -> CacheStorageBackend:
        return ThreadClosingStorage(uid, self.alias, prefix=self.prefix)


class TestDatabaseCacheSQLiteLeases(DatabaseCacheLeaseCases):
    alias = django_env.DB_SQLITE


class TestDatabaseCachePostgresLeases(DatabaseCacheLeaseCases):
    alias = django_env.DB_POSTGRES
    service = ("PostgreSQL", "127.0.0.1", 5432)


class TestLocMemCacheLeases(DjangoCacheLeaseCases):
    alias = django_env.LOCMEM


class TestRedisCache(DjangoCacheStorageCases):
    alias = django_env.REDIS
    service = ("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)


class TestDjangoRedisCache(DjangoCacheStorageCases):
    alias = django_env.DJANGO_REDIS
    service = ("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)


class TestPyMemcacheCache(DjangoCacheStorageCases):
    alias = django_env.MEMCACHED

    @pytest.fixture(autouse=True)
    def _server(self, memcached: Any) -> None:
        """The session's memcached (the cache's LOCATION)."""


class TestDatabaseCacheSQLite(DjangoCacheStorageCases):
    alias = django_env.DB_SQLITE


class TestDatabaseCachePostgres(DjangoCacheStorageCases):
    alias = django_env.DB_POSTGRES
    service = ("PostgreSQL", "127.0.0.1", 5432)


class TestLocMemCache(DjangoCacheStorageCases):
    """One process: the contract's threaded races, not the multi-process one."""

    supports_multiprocess = False
    alias = django_env.LOCMEM


# -- URLs, references, cache objects ----------------------------------------------------


@pytest.fixture
def uid() -> str:
    return f"dj-{uuid.uuid4().hex}"


@pytest.fixture
def django_ready(django_settings: dict[str, Any]) -> dict[str, Any]:
    return django_settings


def test_url_parsing() -> None:
    alias, options = parse_url("django-cache://my%20cache/?prefix=x:&timeout=60&io_timeout=2")
    assert alias == "my cache"
    assert options == {
        "prefix": "x:",
        "timeout": 60.0,
        "io_timeout": 2.0,
        "max_value_size": 16 * 1024 * 1024,
        "max_value_bytes": 1024 * 1024,
    }
    assert parse_url("django-cache://default?timeout=none")[1]["timeout"] is None
    assert parse_url("DJANGO-CACHE://default")[0] == "default"
    with pytest.raises(StorageURLError, match="did you mean 'timeout'"):
        parse_url("django-cache://default?timout=3")
    with pytest.raises(StorageURLError, match="io_timeout='soon'"):
        parse_url("django-cache://default?io_timeout=soon")
    with pytest.raises(StorageURLError, match="names no cache alias"):
        parse_url("django-cache://")
    for located in ("django-cache://user:s3cret@redis", "django-cache://redis/0"):
        with pytest.raises(StorageURLError, match="stay in the settings") as caught:
            parse_url(located)
        assert "s3cret" not in str(caught.value)
    with pytest.raises(RegistryError, match="did you mean 'django-cache'"):
        open_storage("django-cach://default", "u")


def test_a_storage_opened_from_a_url_reopens_from_its_reference(
    django_ready: Any, uid: str
) -> None:
    require_service("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)
    prefix = unique_prefix()
    url = f"django-cache://{django_env.REDIS}?prefix={prefix}&timeout=3600&io_timeout=5"
    storage = open_storage(url, uid)
    assert isinstance(storage, CacheStorageBackend)
    assert (storage.alias, storage.prefix, storage.timeout, storage.io_timeout) == (
        django_env.REDIS,
        prefix,
        3600.0,
        5.0,
    )
    manager = TriggerManager(url, uid=uid, runners={"rec": RecordingRunner()})
    manager.default_runner = "rec"
    manager.update_configuration(EVERY)
    assert [i.name for i in manager.fire("tick")] == ["t_every#0"]
    reference = storage.reference()
    assert reference is not None
    assert reference.startswith(f"django-cache://{django_env.REDIS}?")
    assert "timeout=3600" in reference
    reopened = open_storage(reference, uid)
    assert isinstance(reopened, CacheStorageBackend)
    assert reopened.timeout == 3600.0
    assert reopened["t_every#0"].status is Status.SCHEDULED
    assert repr(reopened) == (
        f"<CacheStorageBackend uid={uid!r} on django-cache/redis, cache {django_env.REDIS!r}>"
    )


def test_equal_settings_give_equal_references(django_ready: Any, uid: str) -> None:
    built = CacheStorageBackend(uid, django_env.LOCMEM, timeout=3600, io_timeout=2.5)
    for url in (
        f"django-cache://{django_env.LOCMEM}?timeout=3600.0&io_timeout=2.5",
        f"django-cache://{django_env.LOCMEM}?io_timeout=2.50&timeout=3.6e3",
    ):
        assert open_storage(url, uid).reference() == built.reference()
    assert built.reference() == f"django-cache://{django_env.LOCMEM}?timeout=3600&io_timeout=2.5"


def test_an_alias_that_needs_quoting_round_trips() -> None:
    from triggers_backends.django_cache._storage import DEFAULTS, _reference

    reference = _reference("a b/c?d", dict(DEFAULTS))
    assert reference == "django-cache://a%20b%2Fc%3Fd"
    assert parse_url(reference) == ("a b/c?d", DEFAULTS)


def test_a_cache_object_is_the_same_session_but_has_no_reference(
    django_ready: Any, uid: str
) -> None:
    from django.core.cache import caches

    prefix = unique_prefix()
    by_alias = CacheStorageBackend(uid, django_env.LOCMEM, prefix=prefix)
    by_object = CacheStorageBackend(uid, caches[django_env.LOCMEM], prefix=prefix)
    manager_on(by_alias)[0].update_configuration(EVERY)
    assert by_object.load().version == 1
    assert by_object.alias is None
    assert by_object.reference() is None
    assert "LocMemCache object" in repr(by_object)


def test_sessions_of_two_prefixes_never_meet(django_ready: Any, uid: str) -> None:
    first = CacheStorageBackend(uid, django_env.LOCMEM, prefix=unique_prefix())
    second = CacheStorageBackend(uid, django_env.LOCMEM, prefix=unique_prefix())
    manager_on(first)[0].update_configuration(EVERY)
    assert second.load().version is None


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "cache_class", "why"),
    [
        (django_env.DUMMY, "django.core.cache.backends.dummy.DummyCache", "stores nothing"),
        (
            django_env.FILEBASED,
            "django.core.cache.backends.filebased.FileBasedCache",
            "no compare-and-swap",
        ),
    ],
)
def test_caches_without_a_conditional_write_are_refused_by_the_storage(
    django_ready: Any, uid: str, alias: str, cache_class: str, why: str
) -> None:
    for opening in (
        lambda: CacheStorageBackend(uid, alias),
        lambda: open_storage(f"django-cache://{alias}", uid),
    ):
        with pytest.raises(UnsupportedCacheError) as caught:
            opening()
        message = str(caught.value)
        assert cache_class in message
        assert repr(alias) in message
        assert why in message


def test_an_unknown_cache_class_is_refused_by_the_storage(django_ready: Any, uid: str) -> None:
    from django.core.cache.backends.base import BaseCache

    home_made = type("HomeMadeCache", (BaseCache,), {"__module__": __name__})({})
    with pytest.raises(UnsupportedCacheError, match=f"{__name__}.HomeMadeCache"):
        CacheStorageBackend(uid, home_made)


def test_an_unknown_alias_is_named_with_a_suggestion(django_ready: Any, uid: str) -> None:
    from django.core.cache.backends.base import InvalidCacheBackendError

    with pytest.raises(InvalidCacheBackendError, match=r"'redsi'.*did you mean 'redis'"):
        open_storage("django-cache://redsi", uid)


@pytest.mark.parametrize(
    ("timeout", "problem"),
    [(0, "positive number"), (-1, "positive number"), ("300", "positive number")],
)
def test_bad_timeouts_are_refused(django_ready: Any, uid: str, timeout: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        CacheStorageBackend(uid, django_env.LOCMEM, timeout=timeout)


def test_the_caches_default_timeout_is_refused(django_ready: Any, uid: str) -> None:
    from django.core.cache.backends.base import DEFAULT_TIMEOUT

    # The original's storage passed the cache's TIMEOUT through; it would expire sessions.
    with pytest.raises(ValueError, match="silently expire"):
        CacheStorageBackend(uid, django_env.LOCMEM, timeout=DEFAULT_TIMEOUT)


def test_a_process_without_django_settings_is_told_what_to_do(tmp_path: Any) -> None:
    code = (
        "from triggers_core import open_storage\n"
        "try:\n"
        "    open_storage('django-cache://default', 'u')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", django_env.SETTINGS_ENV)
    }
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    assert done.stdout.startswith("ImproperlyConfigured"), done.stdout + done.stderr
    assert "DJANGO_SETTINGS_MODULE" in done.stdout
    assert "'default'" in done.stdout
    assert "settings.configure()" in done.stdout


# -- no silent expiry -------------------------------------------------------------------


@pytest.mark.slow
def test_sessions_never_expire_whatever_the_caches_timeout_says(
    django_ready: Any, uid: str
) -> None:
    require_service("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)
    aliases = [django_env.LOCMEM, django_env.DB_SQLITE, django_env.REDIS]
    prefix = unique_prefix()
    kept = [CacheStorageBackend(uid, alias, prefix=prefix) for alias in aliases]
    for storage in kept:
        manager = manager_on(storage)[0]
        manager.update_configuration(EVERY)
        manager.fire("tick", {"n": 1})
    expiring = CacheStorageBackend(uid, django_env.LOCMEM, timeout=1, prefix=unique_prefix())
    manager_on(expiring)[0].update_configuration(EVERY)
    time.sleep(2.5)  # every cache says TIMEOUT: 1
    for storage in kept:
        # A fresh storage object: nothing comes from the process cache.
        assert storage.alias is not None
        again = CacheStorageBackend(uid, storage.alias, prefix=prefix)
        snapshot = again.load_full()
        assert snapshot.version == 2, storage
        assert set(snapshot.state.instances) == {"t_every#0"}
    # Asked for, expiry happens (everything of the session, marker included).
    gone = CacheStorageBackend(uid, django_env.LOCMEM, prefix=expiring.prefix)
    assert gone.load().version is None


# -- Celery: what a message names, what a worker opens -------------------------------------


def test_a_worker_opens_only_the_aliases_its_own_settings_configure(
    django_ready: Any, uid: str
) -> None:
    from triggers_celery import StorageResolutionError, open_configured_storage
    from triggers_celery.storages import message_storage

    prefix = unique_prefix()
    conf = {"triggers_storages": {"dj": f"django-cache://{django_env.LOCMEM}?prefix={prefix}"}}
    storage = CacheStorageBackend(uid, django_env.LOCMEM, prefix=prefix)
    manager_on(storage)[0].update_configuration(EVERY)
    assert message_storage(storage, conf) == "dj"
    reference = storage.reference()
    assert reference is not None
    assert message_storage(storage, {}) == reference
    reopened = open_configured_storage(conf, reference, uid)
    assert isinstance(reopened, CacheStorageBackend)
    assert reopened.load().version == 1
    # Another alias, or the same alias with another prefix, is not configured: refused.
    for refused in (
        f"django-cache://{django_env.REDIS}?prefix={prefix}",
        f"django-cache://{django_env.LOCMEM}",
    ):
        with pytest.raises(StorageResolutionError, match="no storage configured"):
            open_configured_storage(conf, refused, uid)


class RetryInTwoHours(TriggerTask):
    """Asks to retry after two hours."""

    name: ClassVar[str] = "tests.backends.django_cache.RetryInTwoHours"

    def _run(self, context: TaskContext) -> dict[str, Any]:
        self.retry(cooldown=7200)


def test_a_finite_timeout_refuses_a_longer_retry_cooldown(django_ready: Any, uid: str) -> None:
    """A retry's cooldown is a timer too: one longer than the timeout fails the run, named."""
    require_service("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)
    url = f"django-cache://{django_env.REDIS}?prefix={unique_prefix()}&timeout=3600"
    manager = TriggerManager(url, uid=uid, runners={"rec": RecordingRunner()})
    manager.default_runner = "rec"
    manager.update_configuration({"t_a": {"after": ["x"], "run": RetryInTwoHours.name}})
    manager.fire("x")
    manager.run_instance("t_a#0")
    failed = manager.storage["t_a#0"]
    assert failed.status is Status.FAILED
    assert failed.metadata["exceptionType"] == "builtins.ValueError"
    assert (
        "asked to retry, but cooldown 7200 is longer than the storage's timeout (3600 seconds)"
        in failed.metadata["exceptionInfo"]
    )
    assert "t_a#1" not in manager.storage


def test_a_finite_timeout_refuses_longer_timers(django_ready: Any, uid: str) -> None:
    """Documents expire after ``timeout``: a within or delay longer than it is refused."""
    require_service("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)
    url = f"django-cache://{django_env.REDIS}?prefix={unique_prefix()}&timeout=3600"
    manager = TriggerManager(url, uid=uid, runners={"rec": RecordingRunner()})
    manager.default_runner = "rec"
    with pytest.raises(ConfigurationError) as caught:
        manager.update_configuration(
            {"t_a": {"after": ["x"], "run": "r", "within": "2h", "delay": "PT61M"}}
        )
    assert caught.value.problems == (
        "t_a.within: '2h' is longer than the storage's timeout (3600 seconds): "
        "the session could expire before its timer fires",
        "t_a.delay: 'PT61M' is longer than the storage's timeout (3600 seconds): "
        "the session could expire before its timer fires",
    )
    assert manager.storage.load().version is None  # nothing stored
    manager.update_configuration({"t_a": {"after": ["x"], "run": "r", "within": "1h"}})
    unlimited = TriggerManager(
        f"django-cache://{django_env.REDIS}?prefix={unique_prefix()}", uid=uid
    )
    unlimited.update_configuration({"t_a": {"after": ["x"], "run": "r", "within": "7d"}})


@pytest.mark.usefixtures("django_settings")
def test_two_tickers_race_on_a_thousand_due_timers_on_redis() -> None:
    """Issue 24: 1,000 due timers on Redis, two tickers at once (each reading its due
    sessions in batches and moving apart when it meets the other): each fires once."""
    require_service("Redis", django_env.REDIS_HOST, django_env.REDIS_PORT)
    from triggers_core.testing.timer_contract import TimerContract

    prefix = unique_prefix()

    class Race(TimerContract):
        timer_race_sessions = 1000

        def make_storage(self, uid: str) -> Storage:
            return CacheStorageBackend(uid, django_env.REDIS, prefix=prefix)

    Race().test_two_tickers_racing_apply_each_timer_once(f"timer-{uuid.uuid4().hex}")
