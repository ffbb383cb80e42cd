"""The console inside a Django project: Django's sign-in, sessions and CSRF protection.

Settings (``TRIGGERS_WEB``, a dict)::

    TRIGGERS_WEB = {
        "STORAGE_URL": "postgresql+psycopg://app@db/app",  # default: TRIGGERS_STORAGE_URL
        "RUNNER": "celery",          # what actions dispatch to; None: the console only looks
        "READ_ONLY": False,
        "ACT_PERMISSION": None,      # e.g. "myapp.operate_triggers"; None: superusers act
    }

Staff users (``is_staff``) may look; superusers, or users with
``ACT_PERMISSION``, may act, recorded as ``django:USERNAME``. Anyone else is
sent to ``settings.LOGIN_URL``. Needs ``django.contrib.auth``, its
middleware, and Django's CSRF middleware or this view's own ``csrf_protect``
(applied here, so a POST that reaches the console passed Django's check).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.views.decorators.csrf import csrf_protect

from triggers_core.runtime.registry import STORAGE_URL_ENV
from triggers_core.web.console import Console, WebRequest

__all__ = ["console_for_settings", "console_view"]

_console: Console | None = None
_console_key: tuple[Any, ...] | None = None
_lock = threading.Lock()


def console_for_settings() -> Console:
    """The console the settings describe (made once; again if the settings change)."""
    global _console, _console_key  # noqa: PLW0603 - one console per process, like settings
    config = dict(getattr(settings, "TRIGGERS_WEB", {}))
    url = config.get("STORAGE_URL") or os.environ.get(STORAGE_URL_ENV)
    if not url:
        raise RuntimeError(
            f"settings.TRIGGERS_WEB['STORAGE_URL'] is not set and neither is {STORAGE_URL_ENV}"
        )
    key = (url, config.get("RUNNER"), bool(config.get("READ_ONLY", False)))
    with _lock:
        if _console is None or _console_key != key:
            _console = Console(url, runner=config.get("RUNNER"), read_only=key[2])
            _console_key = key
        return _console


def _may_act(user: Any) -> bool:
    permission = dict(getattr(settings, "TRIGGERS_WEB", {})).get("ACT_PERMISSION")
    if permission:
        return bool(user.has_perm(permission))
    return bool(user.is_superuser)


def _console_view(request: HttpRequest, path: str = "") -> HttpResponse:
    """Every page of the console, below wherever the URLconf includes it."""
    user = request.user
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return redirect_to_login(request.get_full_path())
    console = console_for_settings()
    full = request.path
    root = full[: len(full) - len(path)].rstrip("/") if path else full.rstrip("/")
    actor = f"django:{user.get_username()}" if _may_act(user) else None
    web = WebRequest(
        method=request.method or "GET",
        path="/" + path,
        query=request.GET.dict(),
        form=request.POST.dict() if request.method == "POST" else {},
        actor=actor,
        # csrf_protect rejected a POST without a valid token before this line.
        csrf_ok=request.method == "POST",
        csrf_field=("csrfmiddlewaretoken", get_token(request)),
        root=root,
    )
    answer = console.handle(web)
    response = HttpResponse(answer.body, status=answer.status, content_type=answer.content_type)
    for name, value in answer.headers.items():
        response[name] = value
    return response


#: The view (``csrf_protect`` applied: Django checks a POST's token before the console sees it).
console_view: Callable[..., HttpResponse] = csrf_protect(_console_view)
