"""Every exception the library raises derives from :class:`TriggersError`.

Errors carry structured fields (session, instance, status, backend...) so that
callers can react programmatically, and messages that name both the state and
the input that did not fit it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "CascadeDepthExceeded",
    "ConcurrencyError",
    "ConfigurationError",
    "ConflictError",
    "DispatchError",
    "FailedByOperator",
    "InvalidKwargsError",
    "InvalidTransitionError",
    "MaxRetriesExceeded",
    "RegistryError",
    "SchemaMissingError",
    "SerializationError",
    "StorageError",
    "StorageURLError",
    "TriggersError",
    "UnknownInstanceError",
    "UnknownTaskError",
    "UnknownTriggerError",
    "UnsupportedOperationError",
    "WorkerLost",
    "did_you_mean",
    "install_extra_hint",
]

#: The distribution's name. It is not on PyPI yet: its extras install from a checkout.
DISTRIBUTION = "celery-triggers"


def install_extra_hint(extra: str) -> str:
    """The command that installs the optional dependencies ``extra`` (for error messages).

    ``pip install 'celery-triggers[EXTRA]'`` finds no distribution until the
    package is published, so the hint gives the command that works today (in a
    checkout of this repository) and names the published form after it.
    """
    return (
        f"pip install -e '.[{extra}]' in a checkout of {DISTRIBUTION} "
        f"(pip install '{DISTRIBUTION}[{extra}]' once it is on PyPI)"
    )


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` (or a list of known names) for error messages."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    if known:
        return f"; known: {', '.join(repr(k) for k in known)}"
    return ""


class TriggersError(Exception):
    """Root of every exception raised by Triggers."""


class ConfigurationError(TriggersError, ValueError):
    """A configuration was rejected; ``problems`` lists every problem with its path."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"invalid configuration ({count} problem{'s' if count != 1 else ''}):\n{lines}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems,))


class InvalidKwargsError(TriggersError, TypeError, ValueError):
    """Trigger kwargs (or a result, or metadata) are not a JSON-compatible mapping.

    ``path`` names the offending key path, e.g. ``trigger_kwargs.user.tags[2]``.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.problem))


class InvalidTransitionError(TriggersError, ValueError):
    """An operation does not apply to an instance in its current status."""

    def __init__(self, operation: str, instance: str, status: str, expected: str) -> None:
        self.operation = operation
        self.instance = instance
        self.status = status
        self.expected = expected
        super().__init__(
            f"cannot {operation} instance {instance!r} in status {status!r}: {expected}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.operation, self.instance, self.status, self.expected))


class UnknownInstanceError(TriggersError, KeyError):
    """No instance with this name exists in the session."""

    def __init__(self, instance: str, session: str | None = None) -> None:
        self.instance = instance
        self.session = session
        super().__init__(instance)

    def __str__(self) -> str:
        where = f" in session {self.session!r}" if self.session is not None else ""
        return f"no task instance named {self.instance!r}{where}"


class UnknownTaskError(TriggersError, LookupError):
    """A configuration's ``run`` names a trigger task that is not registered."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = name
        self.known = tuple(known)
        super().__init__(
            f"no trigger task registered under {name!r}{did_you_mean(name, self.known)}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.known))


class UnknownTriggerError(TriggersError, LookupError):
    """A strict fire named a trigger that no task of the session's configuration mentions."""

    def __init__(self, trigger: str, session: str, hint: str = "") -> None:
        self.trigger = trigger
        self.session = session
        self.hint = hint
        super().__init__(
            f"no task of session {session!r} mentions the trigger {trigger!r} (in after, "
            f"andEvery or unless), so firing it does nothing{hint}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.trigger, self.session, self.hint))


class RegistryError(TriggersError, LookupError):
    """A storage, runner or manager name (or URL scheme) is not registered."""


class StorageURLError(RegistryError, ValueError):
    """A storage URL cannot be used: malformed, or refused by its backend or driver.

    The message shows the URL redacted (:func:`triggers_core.runtime.redaction.redact`).
    """


class StorageError(TriggersError):
    """A storage backend failed; names the backend and the session."""

    def __init__(self, message: str, *, backend: str, session: str) -> None:
        self.message = message
        self.backend = backend
        self.session = session
        super().__init__(f"{backend} storage, session {session!r}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # keyword-only arguments: rebuild through a helper so pickling round-trips
        return (_rebuild_storage_error, (type(self), self.message, self.backend, self.session))


class ConflictError(StorageError):
    """A compare-and-swap lost a race: the stored version is not the expected one.

    The manager catches this, reloads and recomputes; users normally never see it.
    """


class ConcurrencyError(StorageError):
    """An operation kept losing compare-and-swap races and gave up."""


class SchemaMissingError(StorageError):
    """The backend's tables do not exist yet (the message says how to create them)."""


class SerializationError(TriggersError, ValueError):
    """A stored document is malformed or written by a newer, unknown schema version."""


class DispatchError(TriggersError):
    """A task runner failed to dispatch one or more instances.

    The instances were marked ``failed`` with the error recorded and can be replayed.
    """

    def __init__(self, failures: Iterable[tuple[str, BaseException]]) -> None:
        self.failures = tuple(failures)
        names = ", ".join(name for name, _ in self.failures)
        first = self.failures[0][1] if self.failures else None
        super().__init__(
            f"could not dispatch {names}: {type(first).__name__}: {first} "
            "(marked failed; replay once the runner is available)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.failures,))


class UnsupportedOperationError(TriggersError, NotImplementedError):
    """A backend cannot do what was asked (e.g. list its sessions); says which and why."""

    def __init__(self, operation: str, backend: str, reason: str) -> None:
        self.operation = operation
        self.backend = backend
        self.reason = reason
        super().__init__(f"{operation} is not supported by this backend ({backend}): {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.operation, self.backend, self.reason))


class MaxRetriesExceeded(TriggersError):
    """A task asked to retry after its retries had reached ``max_retries``."""


class WorkerLost(TriggersError):
    """The ``exceptionType`` of an instance whose runner was lost: its lease expired.

    Recorded by the sweeper (never raised in a task): the worker running the
    instance died, was killed, or could not reach the storage for a whole
    lease. Its ``exceptionInfo`` names the worker.
    """


class FailedByOperator(TriggersError):
    """The ``exceptionType`` of an instance an operator failed (``fail_instance``).

    Recorded, never raised in a task; its ``exceptionInfo`` is the reason given.
    """


class CascadeDepthExceeded(TriggersError):
    """An instance became ready through a longer chain of cascades than allowed.

    Recorded as the ``exceptionType`` of the instance, which is ``failed``
    instead of scheduled; replaying it runs it anyway. The bound is
    ``TriggerManager.max_cascade_depth``.
    """


def _rebuild_storage_error(
    cls: type[StorageError], message: str, backend: str, session: str
) -> StorageError:
    return cls(message, backend=backend, session=session)
