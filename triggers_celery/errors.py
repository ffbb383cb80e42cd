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
    "InstanceFailedError",
    "MessageError",
    "StorageResolutionError",
    "StorageUnavailableError",
    "TriggersCeleryError",
    "WorkerSetupError",
]


class TriggersCeleryError(TriggersError):
    """Root of the Celery adapter's errors."""


class MessageError(TriggersCeleryError, ValueError):
    """A task message is malformed, or would carry something it must not (a password)."""


class StorageResolutionError(TriggersCeleryError, LookupError):
    """A storage cannot be named in a message, or a worker cannot resolve the name it got."""


class WorkerSetupError(TriggersCeleryError):
    """A worker lacks what a message needs: the manager class or the trigger task.

    Its message says what to register where. The worker marks the instance
    ``failed`` with this error when it can reach the storage (replay it once
    the worker is fixed), and logs it when it cannot.
    """


class InstanceFailedError(TriggersCeleryError):
    """Raised by a worker after it recorded a trigger task's failure.

    Only so that Celery reports the task as failed (its log line, events and
    result state); the instance's metadata holds the real exception. Celery
    treats it as an expected error: one log line, no traceback (the manager
    already logged the task's traceback).
    """

    def __init__(self, instance: str, session: str, exception_type: str) -> None:
        self.instance = instance
        self.session = session
        self.exception_type = exception_type
        super().__init__(
            f"{instance} of session {session!r} failed with {exception_type} "
            "(recorded in the instance's metadata)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.instance, self.session, self.exception_type))


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
