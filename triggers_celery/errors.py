"""Errors of the Celery adapter; all derive from :class:`TriggersCeleryError`.

:class:`TriggersCeleryError` itself derives from
:class:`triggers_core.errors.TriggersError`, so ``except TriggersError`` still
catches everything the library raises.
"""

from __future__ import annotations

from typing import Any

from triggers_core.errors import StorageError, TriggersError

__all__ = [
    "BindingError",
    "MessageError",
    "StorageResolutionError",
    "StorageUnavailableError",
    "TriggersCeleryError",
]


class TriggersCeleryError(TriggersError):
    """Root of the Celery adapter's errors."""


class MessageError(TriggersCeleryError, ValueError):
    """A task message is malformed, or would carry something it must not (a password)."""


class StorageResolutionError(TriggersCeleryError, LookupError):
    """A storage cannot be named in a message, or a worker cannot resolve the name it got."""


class BindingError(TriggersCeleryError, TypeError):
    """A trigger task cannot be bound to a Celery app (name taken, forbidden option...)."""


class StorageUnavailableError(TriggersCeleryError, StorageError):
    """The storage failed transiently before a worker started the instance.

    Nothing ran: the instance is still ``scheduled`` (or, if the database
    committed ``running`` but the confirmation was lost, ``running`` without its
    task having been called), so running the same message again is safe. The
    worker retries the message with backoff; the original
    :class:`~triggers_core.errors.StorageError` is the ``__cause__``.
    """

    def __init__(self, cause: StorageError, *, instance: str) -> None:
        self.instance = instance
        self.backend = cause.backend
        self.session = cause.session
        # not StorageError.__init__: the cause's text already names backend and session
        TriggersError.__init__(self, f"{instance} was not started: {cause}")

    @classmethod
    def _restore(
        cls, text: str, backend: str, session: str, instance: str
    ) -> StorageUnavailableError:
        error = cls.__new__(cls)
        TriggersError.__init__(error, text)
        error.backend, error.session, error.instance = backend, session, instance
        return error

    def __reduce__(self) -> tuple[Any, ...]:
        # picklable, so Celery keeps the type when it records the retry
        return (type(self)._restore, (str(self), self.backend, self.session, self.instance))
