"""What every page of the console shares: requests, responses, the storage, templates, links.

See :mod:`triggers_core.web.console` for the console itself and its rules.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import attrs
import jinja2

from triggers_core.runtime.manager import TriggerManager
from triggers_core.runtime.ports import TaskRunner
from triggers_core.runtime.redaction import redact
from triggers_core.runtime.registry import open_storage, storage_scheme, storages
from triggers_core.runtime.registry import runners as runner_registry
from triggers_core.runtime.storage import Storage

__all__ = [
    "ACTIONS",
    "SECURITY_HEADERS",
    "ConsoleCore",
    "NotFound",
    "WebRequest",
    "WebResponse",
]

#: The actions of the console, each a confirmation page (GET) and a POST.
ACTIONS = ("replay", "skip", "fail", "fire", "recover")

#: Headers of every response: no inline script, no other origin, no framing, no referrer.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@attrs.frozen
class WebRequest:
    """A request as the console sees it, whatever the framework."""

    method: str
    #: The path below the console's root: ``/``, ``/session``, ``/act/replay`` ...
    path: str
    query: Mapping[str, str] = attrs.field(factory=dict)
    form: Mapping[str, str] = attrs.field(factory=dict)
    #: Who is signed in (recorded as the actor of actions); None: nobody, actions refused.
    actor: str | None = None
    #: The adapter checked this (POST) request's CSRF token.
    csrf_ok: bool = False
    #: The hidden field (name, value) every form must carry for the adapter's CSRF check.
    csrf_field: tuple[str, str] | None = None
    #: Where the console is mounted (``""`` or ``/triggers``): prefixed to every link.
    root: str = ""
    #: Where to sign in (and out), if the adapter has such pages.
    login_url: str | None = None
    logout_url: str | None = None


@attrs.frozen
class WebResponse:
    """What the adapter sends back."""

    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: Mapping[str, str] = attrs.field(factory=dict)


class NotFound(Exception):
    """The page asked for a session, instance or page that does not exist."""


def _check_runner(name: str | None) -> str | None:
    if name is None:
        return None
    runner_registry.load(name)  # a clear RegistryError ("did you mean") now, not at first use
    return name


class ConsoleCore:
    """The web console for the sessions at one storage URL.

    ``runner`` names the runner actions dispatch to (tasks without a
    ``using`` directive): ``celery`` for workers, ``threading`` to run them
    in this process. Without one the console only looks (as with
    ``read_only``). ``manager_class`` is the manager the actions go through
    (a subclass with hooks, say). ``clock`` gives "now" (ages, staleness).
    ``runners`` are runner objects to use by name (a ``CeleryTaskRunner`` on
    your Celery app, say); others are made from the runner registry.
    """

    def __init__(
        self,
        storage_url: str,
        *,
        runner: str | None = None,
        read_only: bool = False,
        manager_class: type[TriggerManager] = TriggerManager,
        clock: Callable[[], datetime] | None = None,
        stale_after: timedelta = timedelta(hours=1),
        page_size: int = 50,
        instances_per_page: int = 200,
        title: str = "Triggers",
        runners: Mapping[str, TaskRunner] | None = None,
    ) -> None:
        storages.load(storage_scheme(storage_url))  # a bad URL fails here, redacted
        self.storage_url = storage_url
        self.runner = _check_runner(runner)
        self.read_only = read_only
        self.manager_class = manager_class
        self.clock = clock or (lambda: datetime.now(UTC))
        self.stale_after = stale_after
        self.page_size = page_size
        self.instances_per_page = instances_per_page
        self.title = title
        self._runners: dict[str, TaskRunner] = dict(runners or {})
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("triggers_core.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["json"] = lambda v: json.dumps(v, ensure_ascii=False)

    # -- what pages share -------------------------------------------------------------

    @property
    def shown_url(self) -> str:
        """The storage URL without its secrets."""
        return redact(self.storage_url)

    @property
    def can_act(self) -> bool:
        """Actions are possible at all (not read-only, a runner named)."""
        return not self.read_only and self.runner is not None

    def open(self, uid: str) -> Storage:
        """The storage of an existing session (:class:`NotFound` if there is none).

        Never creates tables: a mistyped URL must not look like an empty store.
        """
        url = self.storage_url
        option = storages.load(storage_scheme(url)).schema_url_option
        if option is not None and option not in url:
            url += ("&" if "?" in url else "?") + f"{option}=false"
        storage = open_storage(url, uid)
        if storage.load().version is None:
            raise NotFound(f"no session {uid!r} in this store")
        return storage

    def manager(self, storage: Storage) -> TriggerManager:
        """A manager on ``storage`` whose default runner is the console's (shared) runner."""
        assert self.runner is not None
        runner = self._runners.get(self.runner)
        if runner is None:
            runner = self._runners.setdefault(self.runner, runner_registry.load(self.runner)())
        manager = self.manager_class(
            storage, runners=self._runners, default_runner=self.runner, clock=self.clock
        )
        # The console acts on what an operator chose; sweeping is the workers' job (or the
        # Recover action's), never a side effect of opening a session.
        manager.sweep_interval = None
        return manager

    def runners(self) -> dict[str, TaskRunner]:
        """The runners the console created so far (the threading runner's ``join_all``)."""
        return dict(self._runners)

    def link(self, request: WebRequest, path: str, **query: Any) -> str:
        """A link to ``path`` below the console's root, with ``query`` (None values left out)."""
        given = {k: str(v) for k, v in query.items() if v is not None and v != ""}
        return request.root + path + ("?" + urlencode(given) if given else "")

    def render(
        self,
        request: WebRequest,
        template: str,
        *,
        http_status: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> WebResponse:
        """``template`` with the console's common context, as a response."""
        page = self.templates.get_template(template).render(
            console=self,
            request=request,
            link=lambda path, **q: self.link(request, path, **q),
            csrf=request.csrf_field,
            **context,
        )
        merged = {**SECURITY_HEADERS, **(headers or {})}
        return WebResponse(http_status, page.encode("utf-8"), headers=merged)

    def error(self, request: WebRequest, status: int, title: str, message: str) -> WebResponse:
        """An error page; ``message`` is redacted."""
        return self.render(
            request, "error.html", http_status=status, heading=title, message=redact(message)
        )
