"""Sample trigger tasks for tests, demos and documentation examples.

Importing this module registers each task under a stable name in the
``triggers.`` namespace (so it cannot clash with an application's own task
names); configurations refer to them with ``"run": "triggers.PassThruTask"``
and so on, or with ``PassThruTask.name``:

================================  ===============================================
registered name                   what it does
================================  ===============================================
``triggers.PassThruTask``         returns ``{'kwargs': trigger_kwargs}``
``triggers.DevNullTask``          returns ``{}``
``triggers.FailingTask``          raises ``RuntimeError``
``triggers.SelfSkippingTask``     skips itself with ``{'kwargs': trigger_kwargs}``
``triggers.SelfRetryingTask``     retries until ``retries`` reaches a maximum
================================  ===============================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from triggers_core.runtime.tasks import TaskContext, TriggerTask

__all__ = [
    "DevNullTask",
    "FailingTask",
    "PassThruTask",
    "SelfRetryingTask",
    "SelfSkippingTask",
]


class PassThruTask(TriggerTask):
    """Returns ``{'kwargs': trigger_kwargs}``, so a cascade carries what the task received.

    Registered as ``triggers.PassThruTask``.
    """

    name: ClassVar[str] = "triggers.PassThruTask"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {"kwargs": dict(context.trigger_kwargs)}


class DevNullTask(TriggerTask):
    """Does nothing and returns ``{}``. Registered as ``triggers.DevNullTask``."""

    name: ClassVar[str] = "triggers.DevNullTask"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {}


class FailingTask(TriggerTask):
    """Always raises ``RuntimeError``. Registered as ``triggers.FailingTask``.

    The message names the instance, so a test can tell failures apart.
    """

    name: ClassVar[str] = "triggers.FailingTask"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        raise RuntimeError(f"{context.instance_name} failed on purpose")


class SelfSkippingTask(TriggerTask):
    """Skips itself with metadata ``{'kwargs': trigger_kwargs}`` (nothing cascades).

    Registered as ``triggers.SelfSkippingTask``.
    """

    name: ClassVar[str] = "triggers.SelfSkippingTask"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        self.skip({"kwargs": dict(context.trigger_kwargs)})


class SelfRetryingTask(TriggerTask):
    """Retries itself until its retry count reaches a maximum, then returns ``{'count': n}``.

    The maximum is ``trigger_kwargs['retries']['max']`` (give it with
    ``withParams: {'retries': {'max': n}}`` or a trigger called ``retries``),
    defaulting to :attr:`max_retries`. A maximum above :attr:`max_retries`
    makes the instance that reaches ``max_retries`` fail with
    ``MaxRetriesExceeded``. Registered as ``triggers.SelfRetryingTask``.
    """

    name: ClassVar[str] = "triggers.SelfRetryingTask"
    max_retries: ClassVar[int] = 3

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        limit = context.trigger_kwargs.get("retries", {}).get("max", self.max_retries)
        if context.retries < limit:
            self.retry()
        return {"count": context.retries}
