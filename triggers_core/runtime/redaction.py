"""One redaction function for every text that can mention a storage.

Storage URLs carry credentials: a password in the userinfo
(``postgresql://app:secret@db/app``) or in query parameters
(``?password=...``, ``?sslpassword=...``, ``?sslkey=...``, tokens). Every
``repr``, ``reference()``, log line, exception message and broker payload that
can mention a storage goes through :func:`redact` before it leaves the code
that holds the URL.

The rules are textual, not a URL parser's, because the texts that most need
them are the ones no parser accepts (a mistyped ``postgresql:/app:secret@db``
is exactly what ends up in an error message). Where parsers disagree on where
a password ends (SQLAlchemy stops at the first ``@``, ``urllib`` at the last
``@`` before the path), the redaction removes the union of both readings:
hiding too much in an odd URL is acceptable, showing a secret is not.

* **Userinfo**: ``user:password@`` loses ``:password`` (the user name stays).
* **Query parameters** whose (percent-decoded, case-insensitive) name looks
  secret (see :func:`is_sensitive_key`) are removed with their value, also in
  libpq-style ``key=value`` text.
* **Percent-encoded structure**: if decoding ``%XX`` escapes reveals a
  password or a secret parameter (a library re-rendering a mistyped URL), the
  decoded text is redacted instead.
* **Known secrets** given as ``secrets=`` are replaced by ``***`` wherever they
  appear, raw or percent-encoded (for driver messages that quote them).

A text that *is* a URL (it starts with ``scheme:/`` or ``scheme//`` and has no
line break) is redacted as one URL, so a password with a raw space in it is
removed whole; in other text a password or value ends at whitespace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import attrs

__all__ = ["SENSITIVE_KEYS", "SENSITIVE_KEY_FRAGMENTS", "is_sensitive_key", "redact"]

#: A query parameter is secret if its lower-cased name contains one of these...
SENSITIVE_KEY_FRAGMENTS = (
    "pass",  # password, passwd, passfile, sslpassword, passphrase
    "pwd",
    "secret",
    "token",
    "credential",
    "apikey",
    "api_key",
    "sslkey",
    "ssl_key",
    "private",
    "signature",
)
#: ...or is exactly one of these.
SENSITIVE_KEYS = frozenset({"key", "auth", "authorization", "sig"})

_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*"
_LOOKS_LIKE_URL = re.compile(rf"{_SCHEME}(?::/|//)[^\r\n]*\Z")


@attrs.frozen
class _Rules:
    url_userinfo: re.Pattern[str]
    loose_userinfo: re.Pattern[str]
    query: re.Pattern[str]
    pair: re.Pattern[str]


def _rules(stop: str) -> _Rules:
    """The patterns for text in which a secret ends at any of ``stop`` (a class body)."""
    # A password runs from the ':' after the user to the first '@' (SQLAlchemy's
    # reading), extended to the last '@' before the next '/', '?' or '#' (urllib's).
    password = rf"[^@{stop}]*(?:@[^@/?#{stop}]*)*"
    return _Rules(
        url_userinfo=re.compile(rf"(?P<keep>{_SCHEME}://[^:/?#@{stop}]*):{password}@"),
        # Malformed URLs ('postgresql:/u:pw@h', 'postgresql//u:pw@h', 'u:pw@h'): any
        # 'name:...@' whose password part does not start with '//' (a well-formed
        # 'scheme://user@host' is left alone).
        loose_userinfo=re.compile(rf"(?P<keep>[^:/?#@{stop}]*):(?!//){password}@"),
        # SQLAlchemy reads everything after '?' as the query, '#' included.
        query=re.compile(rf"\?(?P<query>[^{stop}]*)"),
        # key=value outside a query: libpq-style text, or '&password=' typed into a path.
        pair=re.compile(rf"(?:(?<=[&;,(\s])|^)(?P<key>[^=&;?,()\s]+)=[^&;{stop}]*"),
    )


_TEXT = _rules(r"\s")
_URL = _rules(r"\r\n")
_QUERY_SEPARATOR = re.compile(r"([&;])")


def is_sensitive_key(name: str) -> bool:
    """True if a query parameter called ``name`` may hold a secret (case-insensitive)."""
    key = unquote_plus(name).strip().lower()
    return key in SENSITIVE_KEYS or any(fragment in key for fragment in SENSITIVE_KEY_FRAGMENTS)


def redact(text: str, *, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without passwords, secret query parameters or the given ``secrets``.

    Safe on any string: a URL, a URL no parser accepts, or a sentence that
    contains URLs. Never raises.
    """
    redacted = _apply(text)
    # A URL rendered by a library may percent-encode a mistyped userinfo (SQLAlchemy
    # reads 'postgresql:///:pw@h/db' as database ':pw@h/db' and prints '%3Apw%40h'):
    # if the decoded text still holds a secret, the decoded text is redacted instead.
    for _ in range(3):
        decoded = unquote(redacted)
        if decoded == redacted or _apply(decoded) == decoded:
            break
        redacted = _apply(decoded)
    for secret in secrets:
        if secret:
            for form in {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}:
                redacted = redacted.replace(form, "***")
    return redacted


def _apply(text: str) -> str:
    rules = _URL if _LOOKS_LIKE_URL.match(text) else _TEXT
    redacted = rules.url_userinfo.sub(r"\g<keep>@", text)
    redacted = rules.loose_userinfo.sub(r"\g<keep>@", redacted)
    redacted = rules.query.sub(_redact_query, redacted)
    return rules.pair.sub(lambda m: "" if is_sensitive_key(m["key"]) else m[0], redacted)


def _redact_query(match: re.Match[str]) -> str:
    """``?a=1&password=x&b=2`` -> ``?a=1&b=2``; ``?password=x`` -> ``""``."""
    parts = _QUERY_SEPARATOR.split(match["query"])  # [pair, sep, pair, sep, pair...]
    kept: list[str] = []
    dropped = False
    for index in range(0, len(parts), 2):
        key, equals, _value = parts[index].partition("=")
        if equals and is_sensitive_key(key):
            dropped = True
            continue
        if kept:
            kept.append(parts[index - 1])
        kept.append(parts[index])
    if not dropped:
        return match[0]
    query = "".join(kept)
    return f"?{query}" if query else ""
