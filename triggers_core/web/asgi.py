"""The console as an ASGI application (Starlette; ``pip install -e '.[web]'`` in a checkout).

Run it with ``triggers web URL`` (see :mod:`triggers_core.web.serve`) or
mount it in your own ASGI application::

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from triggers_core.web.asgi import create_app

    console = create_app("postgresql+psycopg://app@db/app", runner="celery", token=TOKEN)
    app = Starlette(routes=[Mount("/triggers", app=console)])

Reading needs no sign-in unless ``require_sign_in`` (``triggers web`` turns it
on for any address beyond loopback); acting always does: sign in at
``/login`` with the token. ``allowed_hosts`` (``triggers web`` sets the
loopback names when it binds to loopback) refuses requests whose ``Host``
header names another host, which stops DNS-rebinding pages from reading the
console through a visitor's browser.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from triggers_core.web._auth import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SESSION_COOKIE,
    TokenAuth,
    actor_name,
)
from triggers_core.web.console import SECURITY_HEADERS, Console, WebRequest, WebResponse

__all__ = ["LOOPBACK_HOSTS", "create_app"]

#: The names a browser uses for this machine (``Host`` headers, without the port).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
#: The largest request body read (forms with replacement kwargs), in bytes.
MAX_BODY = 2_000_000


def _host_of(header: str) -> str:
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class _ConsoleApp:
    """The request handling: sign-in pages here, everything else through the console."""

    def __init__(
        self,
        console: Console,
        auth: TokenAuth,
        *,
        require_sign_in: bool,
        allowed_hosts: Collection[str] | None,
    ) -> None:
        self.console = console
        self.auth = auth
        self.require_sign_in = require_sign_in
        self.allowed_hosts = None if allowed_hosts is None else frozenset(allowed_hosts)

    async def __call__(self, request: Request) -> Response:
        if self.allowed_hosts is not None:
            host = _host_of(request.headers.get("host", ""))
            if host not in self.allowed_hosts:
                return Response("unknown host", 400, media_type="text/plain")
        body = b""
        if request.method == "POST":
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > MAX_BODY:
                return Response("request too large", 413, media_type="text/plain")
            chunks: list[bytes] = []
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY:
                    return Response("request too large", 413, media_type="text/plain")
                chunks.append(chunk)
            body = b"".join(chunks)
        return await run_in_threadpool(self.respond, request, body)

    def respond(self, request: Request, body: bytes) -> Response:
        root = request.scope.get("root_path", "")
        path = "/" + request.path_params.get("path", "")
        query = dict(request.query_params)
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        csrf_cookie = request.cookies.get(CSRF_COOKIE)
        new_csrf = None
        if not csrf_cookie:
            csrf_cookie = new_csrf = self.auth.new_csrf_cookie()
        actor = self.auth.actor_of(request.cookies.get(SESSION_COOKIE))
        csrf_ok = request.method == "POST" and self.auth.csrf_ok(
            request.cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD)
        )
        web = WebRequest(
            method=request.method,
            path=path,
            query=query,
            form=form,
            actor=actor,
            csrf_ok=csrf_ok,
            csrf_field=(CSRF_FIELD, self.auth.csrf_token(csrf_cookie)),
            root=root,
            login_url=None if actor else f"{root}/login",
            logout_url=f"{root}/logout" if actor else None,
        )
        secure = request.url.scheme == "https"
        if path in ("/login", "/logout"):
            response = self.sign_in(web, secure) if path == "/login" else self.sign_out(web)
        elif self.require_sign_in and actor is None and not path.startswith("/static/"):
            response = self.to_sign_in(web)
        else:
            response = _starlette(self.console.handle(web))
        if new_csrf is not None:
            response.set_cookie(
                CSRF_COOKIE, new_csrf, httponly=True, samesite="strict", secure=secure, path="/"
            )
        return response

    def to_sign_in(self, web: WebRequest) -> Response:
        here = web.path + ("?" + urlencode(dict(web.query)) if web.query else "")
        return RedirectResponse(
            f"{web.root}/login?{urlencode({'next': here})}", 303, headers=SECURITY_HEADERS
        )

    def sign_in(self, web: WebRequest, secure: bool) -> Response:
        given = web.form.get("token") if web.method == "POST" else web.query.get("token")
        name = web.form.get("name", "") if web.method == "POST" else ""
        target = web.form.get("next") or web.query.get("next") or "/"
        if not target.startswith("/") or target.startswith("//"):
            target = "/"  # only pages of the console: no open redirect
        problem = ""
        if given is not None:
            token_ok = self.auth.check_token(given)
            # A link with the token (GET) signs in too: it is what `triggers web` prints.
            if token_ok and (web.method == "GET" or web.csrf_ok):
                response = RedirectResponse(web.root + target, 303, headers=SECURITY_HEADERS)
                response.set_cookie(
                    SESSION_COOKIE,
                    self.auth.session_cookie(actor_name(name)),
                    max_age=self.auth.max_age,
                    httponly=True,
                    samesite="strict",
                    secure=secure,
                    path="/",
                )
                return response
            problem = "wrong token" if not token_ok else "the form expired: try again"
        status = 403 if problem else 200
        if self.auth.token is None:
            problem = "this console has no token, so nobody can sign in: it only looks"
        page = self.console.render(
            web, "login.html", http_status=status, problem=problem, target=target
        )
        return _starlette(page)

    def sign_out(self, web: WebRequest) -> Response:
        if web.method != "POST" or not web.csrf_ok:
            return _starlette(self.console.error(web, 405, "Sign out", "sign out with the button"))
        response = RedirectResponse(web.root + "/", 303, headers=SECURITY_HEADERS)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response


def _starlette(response: WebResponse) -> Response:
    return Response(
        response.body,
        response.status,
        headers=dict(response.headers),
        media_type=response.content_type,
    )


def create_app(
    storage_url: str,
    *,
    runner: str | None = None,
    read_only: bool = False,
    token: str | None = None,
    require_sign_in: bool = False,
    allowed_hosts: Collection[str] | None = None,
    console: Console | None = None,
    **console_options: Any,
) -> Starlette:
    """The console for the sessions at ``storage_url`` as a Starlette application.

    ``runner``, ``read_only`` and ``console_options`` are :class:`Console`'s
    (or pass a ``console`` you made). ``token`` is what signs in (at least 16
    characters; None: nobody can sign in, so nobody can act).
    """
    if console is None:
        console = Console(storage_url, runner=runner, read_only=read_only, **console_options)
    handler = _ConsoleApp(
        console, TokenAuth(token), require_sign_in=require_sign_in, allowed_hosts=allowed_hosts
    )

    async def endpoint(request: Request) -> Response:
        return await handler(request)

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "HEAD", "POST"])])
    app.state.console = console
    return app
