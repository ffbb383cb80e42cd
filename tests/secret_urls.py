"""Hypothesis strategies: storage URLs with secrets in every position a URL can carry one.

Shared by the redaction property (``tests/core/test_redaction.py``) and the
property over everything opening a storage can show (``tests/celery/test_no_secret_shown.py``).
Every secret starts with :data:`MARKER`, which no other part of a generated URL
contains, so finding a secret in an output is never a coincidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from hypothesis import strategies as st

MARKER = "Zq9"
#: Characters a secret may contain; the ones a position cannot hold raw are percent-encoded.
SECRET_ALPHABET = st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"])
SECRET_KEYS = ["password", "PASSWORD", "Password", "passwd", "pwd", "passfile", "sslpassword",
               "SSLPassword", "sslkey", "ssl_key", "token", "access_token", "api_key", "secret",
               "client_secret", "pass%77ord"]  # fmt: skip
#: Characters each position may hold raw (everything else is percent-encoded).
RAW_IN_USERINFO = "-._~!$&'()*+,;=:/?#"
RAW_IN_QUERY = "-._~!$'()*,:@/?=#"
SCHEMES = ["postgresql", "postgresql+psycopg", "mysql+pymysql", "sqlite", "memory", "memcached"]
#: Well-formed most of the time; the others are the typos that reach error messages.
SEPARATORS = ["://", "://", "://", ":/", "//", ":", ":///"]


@st.composite
def secrets(draw: st.DrawFn) -> str:
    """A secret: :data:`MARKER`, then anything."""
    return MARKER + draw(st.text(SECRET_ALPHABET, min_size=3, max_size=20))


def _placed(draw: st.DrawFn, secret: str, raw: str) -> str:
    """The secret as it appears in the URL: fully percent-encoded, or with ``raw`` kept raw."""
    return quote(secret, safe=draw(st.sampled_from(["", raw])))


@st.composite
def urls_with_secrets(
    draw: st.DrawFn,
    *,
    schemes: Sequence[str] = SCHEMES,
    hosts: Sequence[str] = ("db", "127.0.0.1:5432", "[::1]:3306", ""),
    paths: Sequence[str] = ("/app", "/", "", "/srv/data/x.db"),
    extra_params: Sequence[str] = ("sslmode=require", "a=1", "triggers_prefix=tz_"),
) -> tuple[str, list[str]]:
    """``(url, secrets)``: a storage URL with secrets in its userinfo and/or query.

    ``secrets`` lists each secret raw and as placed in the URL; none of them
    (nor their percent-encoded forms) may appear in anything shown.
    """
    scheme = draw(st.sampled_from(schemes))
    separator = draw(st.sampled_from(SEPARATORS))
    user = draw(st.sampled_from(["", "app", "a.b-c_d"]))
    host = draw(st.sampled_from(hosts))
    path = draw(st.sampled_from(paths))
    found: list[str] = []
    userinfo = f"{user}@" if user else ""
    if draw(st.booleans()):
        secret = draw(secrets())
        text = _placed(draw, secret, RAW_IN_USERINFO)
        found += [secret, text]
        userinfo = f"{user}:{text}@"
    params = draw(st.lists(st.sampled_from(extra_params), max_size=2))
    for _ in range(draw(st.integers(0 if found else 1, 3))):
        secret = draw(secrets())
        text = _placed(draw, secret, RAW_IN_QUERY)
        found += [secret, text]
        key = draw(st.sampled_from(SECRET_KEYS))
        params.insert(draw(st.integers(0, len(params))), f"{key}={text}")
    query = "?" + "&".join(params) if params else ""
    return f"{scheme}{separator}{userinfo}{host}{path}{query}", found


def assert_no_secret(text: str, secrets: Sequence[str]) -> None:
    """Fail if ``text`` contains any of ``secrets``, raw or percent-encoded."""
    for secret in secrets:
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            assert form not in text, (secret, text)
