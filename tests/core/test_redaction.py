"""``redact``: passwords and secret query parameters never survive, in URLs or in prose.

The property generates URLs, well-formed and mistyped, with a secret in every
position a storage URL can carry one, and checks that neither the secret nor
its percent-encoded form survives redaction, alone or inside a sentence. The
examples check that what is not secret survives.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from secret_urls import assert_no_secret, urls_with_secrets

from triggers_core import MemoryStorage, RegistryError, TriggerManager, open_storage, redact
from triggers_core.runtime.redaction import is_sensitive_key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql+psycopg://app:hunter2@db/app", "postgresql+psycopg://app@db/app"),
        ("postgresql://:hunter2@db/app", "postgresql://@db/app"),
        ("postgresql://app@db/app?password=hunter2", "postgresql://app@db/app"),
        (
            "postgresql://app@db/app?PassWord=hunter2&sslmode=require",
            "postgresql://app@db/app?sslmode=require",
        ),
        (
            "postgresql://app@db/app?sslmode=require&sslpassword=hunter2",
            "postgresql://app@db/app?sslmode=require",
        ),
        (
            "postgresql://db/app?a=1&passfile=/run/pg&b=2&sslkey=/k.pem",
            "postgresql://db/app?a=1&b=2",
        ),
        ("postgresql://db/app?pass%77ord=hunter2", "postgresql://db/app"),
        ("mysql://db/app?access_token=t&api_key=k&client_secret=s", "mysql://db/app"),
        # parsers disagree where such passwords end: the union of their readings goes
        ("postgresql://u:p@ss@db/app", "postgresql://u@db/app"),
        ("postgresql://u:a/b?c#d@db/app", "postgresql://u@db/app"),
        ("postgresql://u:my hunter2@db/app", "postgresql://u@db/app"),
        # mistyped URLs, as they reach error messages
        ("postgresql:/app:hunter2@db/app", "postgresql@db/app"),
        ("postgresql//app:hunter2@db/app", "postgresql//app@db/app"),
        ("app:hunter2@db/app", "app@db/app"),
        # prose that mentions URLs, and prose that merely looks odd, survives
        (
            "load failed on postgresql://app@127.0.0.1:5432/test: OperationalError: "
            "(1045, \"Access denied for user 'root'@'localhost' (using password: YES)\")",
            "load failed on postgresql://app@127.0.0.1:5432/test: OperationalError: "
            "(1045, \"Access denied for user 'root'@'localhost' (using password: YES)\")",
        ),
        ("is it open? yes; a & b", "is it open? yes; a & b"),
        (
            "storage 'x' at postgresql://u:hunter2@db/app failed",
            "storage 'x' at postgresql://u@db/app failed",
        ),
        ("host=db password=hunter2 dbname=app", "host=db  dbname=app"),
        ("sqlite:////srv/my data/triggers.db", "sqlite:////srv/my data/triggers.db"),
        ("memory://", "memory://"),
        ("default", "default"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # idempotent


def test_known_secrets_are_replaced_raw_and_percent_encoded() -> None:
    text = "driver said: bad key 'p@ss w/rd' (p%40ss%20w%2Frd)"
    assert redact(text, secrets=["p@ss w/rd", None, ""]) == "driver said: bad key '***' (***)"


def test_sensitive_keys() -> None:
    for key in ["password", "PASSWORD", "passwd", "pwd", "passfile", "sslpassword", "sslkey",
                "ssl_key", "token", "access_token", "secret", "api_key", "apikey", "key",
                "auth", "credentials", "private_key", "pass%77ord"]:  # fmt: skip
        assert is_sensitive_key(key), key
    for key in ["sslmode", "sslcert", "host", "port", "dbname", "user", "connect_timeout",
                "triggers_prefix", "triggers_create_schema", "charset"]:  # fmt: skip
        assert not is_sensitive_key(key), key


# -- the leaks of issue 9, each as it was reproduced -----------------------------------


def test_a_password_query_parameter_is_in_no_repr_and_no_reference(tmp_path: object) -> None:
    url = "postgresql+psycopg://app@127.0.0.1:1/app?password=hunter2&triggers_prefix=tq_"
    storage = open_storage(url, "s1")  # nothing connects while opening
    for text in [repr(storage), storage.reference(), repr(TriggerManager(storage))]:
        assert text is not None
        assert "hunter2" not in text
        assert "127.0.0.1:1/app" in text


@pytest.mark.parametrize(
    "url",
    [
        "postgresql:/app:hunter2@db/app",
        "postgresql//app:hunter2@db/app",
        "postgresql:app:hunter2@db/app",
        "app:hunter2@db://x",
        "host=db password=hunter2",
    ],
)
def test_a_mistyped_url_is_refused_without_its_password(url: str) -> None:
    with pytest.raises(RegistryError, match="not a storage URL") as caught:
        open_storage(url, "s1")
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(caught.value)


def test_an_unknown_scheme_is_refused_without_the_password() -> None:
    with pytest.raises(RegistryError, match="no storage named 'nosuch'") as caught:
        open_storage("nosuch://app:hunter2@db/app?token=t0k3n", "s1")
    for secret in ["hunter2", "t0k3n"]:
        assert secret not in str(caught.value)
        assert secret not in repr(caught.value)


def test_memory_store_names_are_compared_exactly() -> None:
    pairs = [
        ("memory://a/b", "memory://ab"),
        ("memory://ab", "memory://ab/"),
        ("memory://", "memory:///"),
    ]
    for left, right in pairs:
        one, other = open_storage(left, "s"), open_storage(right, "s")
        assert isinstance(one, MemoryStorage)
        assert isinstance(other, MemoryStorage)
        assert one.store is not other.store, (left, right)
        assert (one.reference(), other.reference()) == (left, right)
        assert open_storage(left, "s2").store is one.store  # the same name: the same store


# -- the property ----------------------------------------------------------------------


@given(urls_with_secrets())
@example(("postgresql://app:Zq9a@b/c@db/app", ["Zq9a@b/c"]))
@example(("postgresql://db/app?sslpassword=Zq9xyz&password=Zq9abc", ["Zq9xyz", "Zq9abc"]))
def test_no_secret_survives_redaction(case: tuple[str, list[str]]) -> None:
    url, secrets_in_url = case
    redacted = redact(url)
    assert_no_secret(redacted, secrets_in_url)
    assert_no_secret(redact(f"could not open {url} (attempt 2)"), secrets_in_url)
    assert_no_secret(redact(f"url={url!r}"), secrets_in_url)
    assert redact(redacted) == redacted
