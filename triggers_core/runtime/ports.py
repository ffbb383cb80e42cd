"""Where the manager meets its runners and its tasks: the two interfaces they share.

A manager hands each scheduled instance to a :class:`TaskRunner`, and the
runner calls back ``manager.run_instance(name)`` wherever it runs the
instance; a running task gets the manager in its context. Both directions are
written against :class:`SessionManager`, the manager as a runner or a task
sees it, so neither runners nor tasks import the manager class:
:class:`~triggers_core.runtime.manager.TriggerManager` (and any subclass) is
one. Annotate a custom runner's ``dispatch`` with ``SessionManager``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Protocol

from triggers_core.engine.effects import ScheduleInstance
from triggers_core.engine.state import Status, TaskInstance
from triggers_core.engine.transition import Transition
from triggers_core.runtime.storage import Snapshot, Storage

__all__ = ["SessionManager", "TaskRunner"]


class SessionManager(Protocol):
    """The operations of a trigger manager that its runners and tasks use.

    :class:`~triggers_core.runtime.manager.TriggerManager` implements it; the
    methods are documented there.
    """

    #: The key workers use to rebuild the manager's class (``triggers.managers``).
    registry_key: ClassVar[str]
    storage: Storage

    @property
    def uid(self) -> str: ...

    def now(self) -> datetime: ...

    def get_runner(self, name: str | None = None) -> TaskRunner: ...

    def update_configuration(self, config: Mapping[str, Any]) -> None: ...

    def fire(
        self,
        trigger_name: str,
        trigger_kwargs: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> list[TaskInstance]: ...

    def replay_failed_instance(
        self,
        failed_instance: str | TaskInstance,
        replacement_kwargs: Mapping[str, Any] | None = None,
    ) -> TaskInstance: ...

    def skip_failed_instance(
        self,
        failed_instance: str | TaskInstance,
        cascade: bool = False,
        result: Mapping[str, Any] | None = None,
    ) -> TaskInstance: ...

    def update_instance_status(
        self,
        task_instance: str | TaskInstance,
        status: Status | str,
        metadata: Mapping[str, Any] | None = None,
        cascade: bool = False,
        cascade_kwargs: Mapping[str, Any] | None = None,
    ) -> TaskInstance: ...

    def update_instance_metadata(
        self, task_instance: str | TaskInstance, metadata: Mapping[str, Any]
    ) -> TaskInstance: ...

    def mark_instance_logs_resolved(self, task_instance: str | TaskInstance) -> TaskInstance: ...

    def fail_instance(
        self,
        task_instance: str | TaskInstance,
        reason: str,
        *,
        actor: str | None = None,
    ) -> TaskInstance: ...

    def take_over_instance(self, task_instance: str | TaskInstance, owner: str) -> TaskInstance: ...

    def redispatch_instance(
        self, task_instance: str | TaskInstance, since: datetime
    ) -> TaskInstance: ...

    def advance(self, now: datetime | None = None) -> list[TaskInstance]: ...

    def advance_instance(
        self,
        task_instance: str | TaskInstance,
        now: datetime | None = None,
        *,
        loaded: Snapshot | None = None,
    ) -> Transition | None: ...

    def fail_unstarted_instance(
        self,
        task_instance: str | TaskInstance,
        error: BaseException,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> TaskInstance | None: ...

    def run_instance(
        self,
        instance_name: str,
        *,
        on_started: Callable[[TaskInstance], None] | None = None,
        guard_cascade: bool = False,
        worker: Mapping[str, Any] | None = None,
    ) -> TaskInstance | None: ...


class TaskRunner(abc.ABC):
    """Runs scheduled instances. ``dispatch`` must not block on the task itself."""

    #: Registry name (the value of a task's ``using`` directive).
    name: ClassVar[str]

    @abc.abstractmethod
    def dispatch(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        """Arrange for ``manager.run_instance(effect.instance_name)`` to happen.

        Raising means the instance was *not* dispatched; the manager then marks
        it failed (replayable) and re-raises to the caller.
        """

    def setup_problem(self) -> str | None:
        """Why this runner cannot dispatch from this process as it is set up (None: it can).

        Tools ask before they change anything (``triggers fire --runner celery``
        refuses with this text when no Celery app is configured); the default
        has no problem.
        """
        return None
