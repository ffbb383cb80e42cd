"""What a trigger task message carries, and nothing more.

A message names four things: the manager class (its registry key), the storage
(a name from the worker's own settings, or the credential-free reference of a
storage configured there), the session UID and the instance name. Trigger
kwargs, configuration and results stay in the storage: the worker reads them
from there, so a message that is delivered late, twice or out of order can
never run stale data, and a message never contains anything secret.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import attrs

from triggers_celery.errors import MessageError
from triggers_core.runtime.redaction import redact

__all__ = ["MESSAGE_FIELDS", "TaskMessage", "has_secret"]

#: The keyword arguments of every trigger task message, in order.
MESSAGE_FIELDS = ("manager", "storage", "session", "instance")


#: Longest text whose :func:`has_secret` answer is remembered (a storage name or reference).
_REMEMBERED_LENGTH = 512


def has_secret(text: str) -> bool:
    """True if ``text`` holds something that :func:`~triggers_core.redact` would remove."""
    if len(text) <= _REMEMBERED_LENGTH:
        # Every message of a process names one of a few storages: redact's regular
        # expressions run once per name, not once per message.
        return _has_secret_remembered(text)
    return redact(text) != text


@functools.lru_cache(maxsize=256)
def _has_secret_remembered(text: str) -> bool:
    return redact(text) != text


def _text(field: str) -> Any:
    def check(_instance: object, _attribute: object, value: object) -> None:
        if not isinstance(value, str) or not value:
            raise MessageError(f"message field {field!r} must be a non-empty string, got {value!r}")

    return check


@attrs.frozen
class TaskMessage:
    """The keyword arguments of one trigger task message.

    ``storage`` is either a name the worker looks up in its own settings
    (``app.conf.triggers_storages``) or the credential-free reference of a
    storage configured there (see :mod:`triggers_celery.storages`). A
    ``storage`` holding a secret (anything :func:`~triggers_core.runtime.redaction.redact`
    would remove) raises :class:`~triggers_celery.errors.MessageError`, without
    repeating it.
    """

    manager: str = attrs.field(validator=_text("manager"))
    storage: str = attrs.field(validator=_text("storage"))
    session: str = attrs.field(validator=_text("session"))
    instance: str = attrs.field(validator=_text("instance"))

    def __attrs_post_init__(self) -> None:
        if has_secret(self.storage):
            raise MessageError(
                "refusing a task message whose 'storage' field holds a password or another "
                "secret; a message names a storage configured in each process's own "
                "settings (app.conf.triggers_storages), never its credentials"
            )

    def to_kwargs(self) -> dict[str, str]:
        """The message as Celery task keyword arguments (JSON-serializable)."""
        # the fields in the order of MESSAGE_FIELDS
        return {
            "manager": self.manager,
            "storage": self.storage,
            "session": self.session,
            "instance": self.instance,
        }

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> TaskMessage:
        """Validate received keyword arguments (exactly :data:`MESSAGE_FIELDS`)."""
        missing = [f for f in MESSAGE_FIELDS if f not in kwargs]
        extra = sorted(set(kwargs) - set(MESSAGE_FIELDS))
        if missing or extra:
            raise MessageError(
                f"not a trigger task message: missing {missing}, unexpected {extra} "
                f"(expected exactly {list(MESSAGE_FIELDS)})"
            )
        return cls(**{f: kwargs[f] for f in MESSAGE_FIELDS})
