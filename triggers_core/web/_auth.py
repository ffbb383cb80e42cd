"""Sign-in by token and CSRF tokens for the stand-alone console (Django has its own).

The console is given one secret *token* (``triggers web`` makes one up and
prints a sign-in link, or takes ``TRIGGERS_WEB_TOKEN``). Signing in with it
(and a name, recorded as the actor of what you do) sets a cookie holding the
name, an expiry and an HMAC of both under a key made at start-up, so a
restart signs everybody out and a cookie cannot be forged or extended.

CSRF: a random cookie per browser and, in every form, the HMAC of that
cookie; a POST must carry both, matching (the double-submit pattern, signed).
Cookies are ``HttpOnly`` and ``SameSite=Strict``. Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "SESSION_COOKIE", "TokenAuth"]

SESSION_COOKIE = "triggers_session"
CSRF_COOKIE = "triggers_csrf"
#: The form field that carries the CSRF token.
CSRF_FIELD = "csrf_token"
#: The most characters of a name given at sign-in.
MAX_NAME = 100


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenAuth:
    """Checks the token, signs and reads session cookies, makes and checks CSRF tokens."""

    def __init__(self, token: str | None, *, max_age: int = 12 * 3600) -> None:
        if token is not None and len(token) < 16:
            raise ValueError("the console's token must be at least 16 characters long")
        self.token = token
        self.max_age = max_age
        self._key = secrets.token_bytes(32)

    def _sign(self, purpose: str, text: str) -> str:
        mac = hmac.new(self._key, f"{purpose}\x00{text}".encode(), hashlib.sha256)
        return _b64(mac.digest())

    def check_token(self, given: str) -> bool:
        """True if ``given`` is the console's token (False if it has none)."""
        if self.token is None:
            return False
        return hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))

    def session_cookie(self, actor: str, *, now: float | None = None) -> str:
        """The cookie value that says ``actor`` signed in (valid for ``max_age`` seconds)."""
        expires = int((time.time() if now is None else now) + self.max_age)
        body = f"{_b64(actor.encode('utf-8'))}.{expires}"
        return f"{body}.{self._sign('session', body)}"

    def actor_of(self, cookie: str | None, *, now: float | None = None) -> str | None:
        """The actor a session cookie names, or None (missing, forged, expired)."""
        if not cookie or cookie.count(".") != 2:
            return None
        body, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, self._sign("session", body)):
            return None
        name, _, expires = body.partition(".")
        if not expires.isdigit() or int(expires) < (time.time() if now is None else now):
            return None
        try:
            return _unb64(name).decode("utf-8")
        except ValueError:  # pragma: no cover - signed by us, so well-formed
            return None

    @staticmethod
    def new_csrf_cookie() -> str:
        """A fresh random CSRF cookie value."""
        return secrets.token_urlsafe(24)

    def csrf_token(self, cookie: str) -> str:
        """The form token that goes with a CSRF cookie."""
        return self._sign("csrf", cookie)

    def csrf_ok(self, cookie: str | None, given: str | None) -> bool:
        """True if the form's token matches the browser's CSRF cookie."""
        if not cookie or not given:
            return False
        return hmac.compare_digest(given, self.csrf_token(cookie))


def actor_name(name: str) -> str:
    """The actor recorded for a name given at sign-in: ``web:NAME`` (``web`` if none)."""
    cleaned = "".join(c for c in name.strip() if c.isprintable())[:MAX_NAME]
    return f"web:{cleaned}" if cleaned else "web"
