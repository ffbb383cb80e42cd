"""``triggers web``: serve the console with uvicorn (``pip install -e '.[web]'`` in a checkout).

Binds to 127.0.0.1 unless told otherwise. Acting always needs the token;
on any address beyond loopback, reading needs it too (every page asks to
sign in), and a warning says the token then crosses the network in clear
unless a TLS proxy sits in front. On loopback, requests whose ``Host``
header names another host are refused (DNS rebinding).

The token comes from ``token=``, else ``TRIGGERS_WEB_TOKEN``, else one is
made up and the sign-in link printed (as Jupyter does).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import sys
from typing import Any

__all__ = ["TOKEN_ENV", "is_loopback", "serve"]

#: The environment variable that holds the console's token.
TOKEN_ENV = "TRIGGERS_WEB_TOKEN"


def is_loopback(host: str) -> bool:
    """True for an address (or ``localhost``) that only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def prepare(
    storage_url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    runner: str | None = None,
    read_only: bool = False,
    token: str | None = None,
    **console_options: Any,
) -> tuple[Any, str]:
    """The ASGI application ``serve`` runs, and what to print (the sign-in line)."""
    from triggers_core.web.asgi import LOOPBACK_HOSTS, create_app  # noqa: PLC0415 - extra `web`

    loopback = is_loopback(host)
    given = token or os.environ.get(TOKEN_ENV) or None
    token = given or secrets.token_urlsafe(24)
    shown_host = f"[{host}]" if ":" in host else host
    base = f"http://{shown_host}:{port}"
    if given:
        message = f"Triggers console on {base}/ (sign in with the token from {TOKEN_ENV})"
    else:
        message = f"Triggers console on {base}/ ; sign in to act: {base}/login?token={token}"
    if not loopback:
        message += (
            f"\nwarning: listening on {host}, beyond this machine: every page needs the "
            "token, which crosses the network in clear unless a TLS proxy is in front"
        )
    app = create_app(
        storage_url,
        runner=runner,
        read_only=read_only,
        token=token,
        require_sign_in=not loopback,
        allowed_hosts=LOOPBACK_HOSTS if loopback else None,
        **console_options,
    )
    return app, message


def serve(
    storage_url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    runner: str | None = None,
    read_only: bool = False,
    token: str | None = None,
    log_level: str = "warning",
    **console_options: Any,
) -> None:
    """Serve the console until interrupted (see the module docstring)."""
    import uvicorn  # noqa: PLC0415 - the `web` extra

    app, message = prepare(
        storage_url,
        host=host,
        port=port,
        runner=runner,
        read_only=read_only,
        token=token,
        **console_options,
    )
    print(message, file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
