"""The web console's one view layer, independent of any web framework.

An adapter (:mod:`triggers_core.web.asgi` for Starlette,
:mod:`triggers_core.web.urls` for Django) turns its framework's request into
a :class:`WebRequest` (who is signed in, whether the CSRF token checked out,
the form field its forms must carry) and :meth:`Console.handle`'s
:class:`WebResponse` back into its framework's response. Every page and
every action lives here, once.

Rules every page keeps:

* Stored data is hostile: templates escape everything (Jinja2 autoescape),
  errors and tracebacks go through :func:`~triggers_core.runtime.redaction.redact`,
  the storage URL is only ever shown redacted, values are cut to a bound
  with their size said. Every response carries a Content-Security-Policy
  that allows no inline script and no other origin.
* Actions (replay, skip, fail, fire, recover) need a signed-in actor, a POST
  with a valid CSRF token, a console that is not read-only and a runner;
  each shows a confirmation page first (GET) and goes through the manager's
  API, recording the actor.
* Nothing loads a whole store: the session list is one page of
  :func:`~triggers_core.tools.listing.list_sessions`; a session page reads
  the session once and draws one page of its instances (cost O(n log n) for
  n instances, to sort them).
"""

from __future__ import annotations

from collections.abc import Callable

from triggers_core.errors import StorageError, TriggersError, UnsupportedOperationError
from triggers_core.web import _actions, _pages
from triggers_core.web._core import (
    ACTIONS,
    SECURITY_HEADERS,
    ConsoleCore,
    NotFound,
    WebRequest,
    WebResponse,
)

__all__ = ["ACTIONS", "SECURITY_HEADERS", "Console", "NotFound", "WebRequest", "WebResponse"]

View = Callable[[ConsoleCore, WebRequest], WebResponse]

_ROUTES: dict[str, View] = {
    "/": _pages.sessions_page,
    "/session": _pages.session_page,
    "/instance": _pages.instance_page,
    "/explain": _pages.explain_page,
    "/graph.svg": _pages.graph_picture,
    "/static/console.css": _pages.static_file,
    "/static/console.js": _pages.static_file,
}


class Console(ConsoleCore):
    __doc__ = ConsoleCore.__doc__

    # -- dispatch ---------------------------------------------------------------------

    def handle(self, request: WebRequest) -> WebResponse:
        """The response to ``request`` (never raises for bad input or a failing store)."""
        view = _ROUTES.get(request.path)
        if view is None and request.path.startswith("/act/"):
            action = request.path.removeprefix("/act/")
            if action in ACTIONS:
                view = _actions.action_view
        if view is None:
            return self.error(request, 404, "Not found", f"no page {request.path!r}")
        if request.method not in ("GET", "HEAD", "POST"):
            return self.error(request, 405, "Method not allowed", request.method)
        if request.method == "POST" and view is not _actions.action_view:
            return self.error(request, 405, "Method not allowed", "this page only reads")
        try:
            return view(self, request)
        except NotFound as exc:
            return self.error(request, 404, "Not found", str(exc))
        except UnsupportedOperationError as exc:
            return self.error(request, 501, "Not supported by this store", str(exc))
        except StorageError as exc:
            return self.error(request, 503, "The store failed", str(exc))
        except TriggersError as exc:
            return self.error(request, 400, "Refused", str(exc))
