"""Errors of the Celery adapter; all derive from :class:`TriggersCeleryError`.

:class:`TriggersCeleryError` itself derives from
:class:`triggers_core.errors.TriggersError`, so ``except TriggersError`` still
catches everything the library raises.
"""

from __future__ import annotations

from triggers_core.errors import TriggersError

__all__ = ["BindingError", "MessageError", "StorageResolutionError", "TriggersCeleryError"]


class TriggersCeleryError(TriggersError):
    """Root of the Celery adapter's errors."""


class MessageError(TriggersCeleryError, ValueError):
    """A task message is malformed, or would carry something it must not (a password)."""


class StorageResolutionError(TriggersCeleryError, LookupError):
    """A storage cannot be named in a message, or a worker cannot resolve the name it got."""


class BindingError(TriggersCeleryError, TypeError):
    """A trigger task cannot be bound to a Celery app (name taken, forbidden option...)."""
