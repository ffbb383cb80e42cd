"""The web console: sessions, a timeline per session, explain, and safe actions.

``pip install -e '.[web]'`` in a checkout and run ``triggers web URL`` (see
``docs/web.md``), mount :func:`triggers_core.web.asgi.create_app` in an ASGI
application, or include :mod:`triggers_core.web.urls` in a Django project.
One view layer (:mod:`triggers_core.web.console`) serves all three.

This package imports nothing optional: Jinja2 comes with
:mod:`triggers_core.web.console`, Starlette with :mod:`triggers_core.web.asgi`,
Django with :mod:`triggers_core.web.urls`, uvicorn with
:func:`triggers_core.web.serve.serve`.
"""

__all__: list[str] = []
