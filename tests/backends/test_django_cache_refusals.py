"""Which Django caches the key-value adapters accept, which they refuse, and the hooks
through which a third-party cache declares support."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import django_env
import pytest
from kv_memory import DictKeyValueClient, DictStore

from triggers_backends.kv_client import KeyValueClient


@pytest.fixture(autouse=True)
def _django(django_settings: dict[str, Any]) -> None:
    """Django configured (caches built from the run's settings)."""


@pytest.fixture
def registry() -> Iterator[None]:
    """Forget registrations made by the test."""
    from triggers_backends.django_cache import _adapters

    saved = dict(_adapters._registered)
    yield
    _adapters._registered.clear()
    _adapters._registered.update(saved)


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
def test_caches_without_a_conditional_write_are_refused(
    alias: str, cache_class: str, why: str
) -> None:
    from triggers_backends.django_cache import UnsupportedCacheError, key_value_client

    with pytest.raises(UnsupportedCacheError) as caught:
        key_value_client(alias)
    message = str(caught.value)
    assert cache_class in message
    assert repr(alias) in message
    assert why in message
    assert caught.value.cache_class == cache_class
    assert caught.value.alias == alias
    again = pickle.loads(pickle.dumps(caught.value))
    assert str(again) == message


def test_pylibmc_cache_is_refused_with_the_way_out() -> None:
    from django.core.cache.backends.memcached import PyLibMCCache

    from triggers_backends.django_cache import UnsupportedCacheError, key_value_client

    cache = object.__new__(PyLibMCCache)  # pylibmc itself need not be installed
    with pytest.raises(UnsupportedCacheError, match="PyMemcacheCache"):
        key_value_client(cache)


def _home_made_cache(**attrs: Any) -> Any:
    from django.core.cache.backends.base import BaseCache

    cls = type("HomeMadeCache", (BaseCache,), {"__module__": __name__, **attrs})
    return cls({})


def test_an_unknown_cache_class_is_refused_naming_it_and_the_hooks() -> None:
    from triggers_backends.django_cache import UnsupportedCacheError, key_value_client

    with pytest.raises(UnsupportedCacheError) as caught:
        key_value_client(_home_made_cache())
    message = str(caught.value)
    assert f"{__name__}.HomeMadeCache" in message
    assert "triggers_key_value_client" in message
    assert "register_cache_adapter" in message


def test_a_cache_class_declares_support_with_a_class_attribute() -> None:
    from triggers_backends.django_cache import AdapterOptions, key_value_client

    store = DictStore()
    seen: list[AdapterOptions] = []

    def factory(cache: Any, options: AdapterOptions) -> KeyValueClient:
        seen.append(options)
        return DictKeyValueClient(store)

    cache = _home_made_cache(triggers_key_value_client=staticmethod(factory))
    client = key_value_client(cache, timeout=30)
    assert isinstance(client, DictKeyValueClient)
    assert seen == [AdapterOptions(timeout=30)]


def test_a_cache_class_is_registered_by_class_or_path(registry: None) -> None:
    from triggers_backends.django_cache import key_value_client, register_cache_adapter

    store = DictStore()
    cache = _home_made_cache()
    register_cache_adapter(type(cache), lambda cache, options: DictKeyValueClient(store))
    assert isinstance(key_value_client(cache), DictKeyValueClient)

    # A registration overrides a built-in refusal (at your own risk).
    register_cache_adapter(
        "django.core.cache.backends.dummy.DummyCache",
        lambda cache, options: DictKeyValueClient(store),
    )
    assert isinstance(key_value_client(django_env.DUMMY), DictKeyValueClient)


def test_a_factory_that_returns_no_client_is_an_error(registry: None) -> None:
    from triggers_backends.django_cache import key_value_client, register_cache_adapter

    cache = _home_made_cache()
    register_cache_adapter(type(cache), lambda cache, options: object())
    with pytest.raises(TypeError, match="not a KeyValueClient"):
        key_value_client(cache)


def test_a_subclass_of_a_supported_cache_is_supported() -> None:
    from django.core.cache.backends.locmem import LocMemCache

    from triggers_backends.django_cache import key_value_client
    from triggers_backends.django_cache._locmem import LocMemKeyValueClient

    class MyLocMem(LocMemCache):
        pass

    client = key_value_client(MyLocMem("sub", {}))
    assert isinstance(client, LocMemKeyValueClient)
    assert client.add("k", b"v")


def test_an_unknown_alias_is_named() -> None:
    from django.core.cache.backends.base import InvalidCacheBackendError

    from triggers_backends.django_cache import key_value_client

    with pytest.raises(InvalidCacheBackendError, match="'nope'"):
        key_value_client("nope")


def test_not_a_cache_is_a_type_error() -> None:
    from triggers_backends.django_cache import key_value_client

    with pytest.raises(TypeError, match="Django cache alias or cache object"):
        key_value_client(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": -5}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"max_value_size": 0}, "max_value_size"),
        ({"io_timeout": 0}, "io_timeout"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], problem: str) -> None:
    from triggers_backends.django_cache import key_value_client

    with pytest.raises(ValueError, match=problem):
        key_value_client(django_env.LOCMEM, **options)
