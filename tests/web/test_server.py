"""`triggers web` and the stand-alone server: binding, the token, hosts, sign-in, cookies."""

from __future__ import annotations

import httpx
import pytest
from click.testing import CliRunner
from console_support import LiveServer, Store

from triggers_core.cli import cli
from triggers_core.web.serve import TOKEN_ENV, is_loopback, prepare


def test_triggers_web_needs_a_runner_or_read_only() -> None:
    result = CliRunner().invoke(cli, ["web", "memory://x"])
    assert result.exit_code == 2
    assert "--runner" in result.output
    assert "--read-only" in result.output
    unknown = CliRunner().invoke(cli, ["web", "memory://x", "--runner", "celry"])
    assert unknown.exit_code == 2
    assert "did you mean" in unknown.output


def test_loopback_is_the_default_and_anything_else_needs_the_token(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.0.2.1")
    _app, message = prepare(store.url, runner="threading", port=8123)
    assert "http://127.0.0.1:8123/login?token=" in message
    assert "warning" not in message
    monkeypatch.setenv(TOKEN_ENV, "a-token-from-the-environment")
    _, quiet = prepare(store.url, read_only=True)
    assert "a-token-from-the-environment" not in quiet
    _, wide = prepare(store.url, host="0.0.0.0", read_only=True)
    assert "every page needs the token" in wide


def test_beyond_loopback_every_page_needs_sign_in(store: Store, token: str) -> None:
    store.failed_session("applicant-1")
    app, _ = prepare(store.url, host="0.0.0.0", runner="threading", token=token)
    with LiveServer(app) as live, httpx.Client(base_url=live.url) as client:
        answer = client.get("/session", params={"uid": "applicant-1"})
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/login?next=%2Fsession")
        assert client.get("/static/console.css").status_code == 200
        signed = client.get("/login", params={"token": token, "next": "/session?uid=applicant-1"})
        assert signed.status_code == 303
        assert signed.headers["location"] == "/session?uid=applicant-1"
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert client.get("/session", params={"uid": "applicant-1"}).status_code == 200


def test_on_loopback_other_host_names_are_refused(store: Store, token: str) -> None:
    app, _ = prepare(store.url, runner="threading", token=token)
    with LiveServer(app) as live, httpx.Client(base_url=live.url) as client:
        assert client.get("/").status_code == 200
        rebound = client.get("/", headers={"Host": "attacker.example"})
        assert rebound.status_code == 400
        assert client.get("/", headers={"Host": "localhost:8000"}).status_code == 200


def test_sign_in_never_redirects_elsewhere_and_a_forged_cookie_is_nobody(
    store: Store, live: LiveServer, token: str
) -> None:
    with httpx.Client(base_url=live.url) as client:
        away = client.get("/login", params={"token": token, "next": "//evil.example/"})
        assert away.headers["location"] == "/"
        wrong = client.get("/login", params={"token": "x" * 30})
        assert wrong.status_code == 403
        client.cookies.set("triggers_session", "d2ViOm1hbGxvcnk.9999999999.forged")
        assert "signed in as" not in client.get("/").text


def test_the_token_must_be_long_enough(store: Store) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        prepare(store.url, runner="threading", token="short")


def test_nothing_optional_is_imported_by_the_core_or_the_cli() -> None:
    import subprocess
    import sys

    code = (
        "import sys, triggers_core, triggers_core.cli, triggers_core.web, triggers_core.web.serve;"
        "print(sorted(m for m in ('jinja2', 'starlette', 'uvicorn', 'django')"
        " if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"
