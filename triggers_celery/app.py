"""The Celery app that trigger tasks go through when none is given.

:func:`~triggers_celery.bind_tasks` sets it (:func:`set_default_app`); the
runner sends messages through it and :func:`~triggers_celery.open_manager`
reads its settings, so both import it from here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["bound_app", "default_app", "set_default_app"]

_default_app: Any = None


def set_default_app(app: Any) -> None:
    """Make ``app`` the Celery app that runners without an explicit app use."""
    global _default_app  # noqa: PLW0603 - one process-wide default, like Celery's own
    _default_app = app


def bound_app() -> Any:
    """The app set by :func:`set_default_app` (or :func:`bind_tasks`), else None."""
    return _default_app


def default_app() -> Any:
    """The app set by :func:`set_default_app` (or :func:`bind_tasks`), else Celery's current."""
    if _default_app is not None:
        return _default_app
    from celery import current_app  # noqa: PLC0415 - only when no app was bound

    return current_app._get_current_object()
