"""An operator's actions on instances: replay, skip, fail, force a status, recover.

:class:`OperatorActions` is the part of
:class:`~triggers_core.runtime.manager.TriggerManager` that acts on one
instance by name, each action one commit through the manager's loop. The
decisions are the shell core's (:mod:`triggers_core.runtime.operator_steps`,
shared with the asynchronous manager); this class drives them with blocking
I/O. Actions a person asks for take an ``actor`` (a user name, ``"cli"``,
``"web:alice"``), recorded in the instance's metadata and in a lifecycle log
record (:func:`~triggers_core.runtime.lifecycle.log_action`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar, cast

from triggers_core.engine.state import Status, TaskInstance
from triggers_core.engine.transition import Transition
from triggers_core.runtime import operator_steps as steps
from triggers_core.runtime.operator_steps import check_actor, instance_name_of
from triggers_core.runtime.shell import ShellHost, Steps
from triggers_core.runtime.storage import Snapshot, Storage

__all__ = ["OperatorActions", "check_actor", "instance_name_of"]

T = TypeVar("T")


class OperatorActions(abc.ABC):
    """Actions on one instance by name (mixed into the manager; see the module)."""

    max_cascade_depth: int
    storage: Storage

    @property
    @abc.abstractmethod
    def uid(self) -> str:
        """The session UID."""

    @abc.abstractmethod
    def now(self) -> datetime:
        """The manager's clock."""

    @abc.abstractmethod
    def _drive(self, steps: Steps[T]) -> T:
        """Run an operation of the shell core with blocking I/O."""

    @property
    def _host(self) -> ShellHost:
        """This manager as the shell core sees it (the manager class is one)."""
        return cast(ShellHost, self)

    def replay_failed_instance(
        self,
        failed_instance: str | TaskInstance,
        replacement_kwargs: Mapping[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> TaskInstance:
        """Replay a failed instance; return the scheduled clone.

        ``actor`` (who asked: a user name, ``"cli"``...) is recorded in the
        replayed instance's metadata and in the lifecycle log.
        """
        return self._drive(
            steps.replay_failed_instance(
                self._host, failed_instance, replacement_kwargs, actor=actor
            )
        )

    def skip_failed_instance(
        self,
        failed_instance: str | TaskInstance,
        cascade: bool = False,
        result: Mapping[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> TaskInstance:
        """Mark a failed instance skipped; with ``cascade`` its task name fires with ``result``.

        ``actor`` (who asked) is recorded in its metadata and the lifecycle log.
        """
        return self._drive(
            steps.skip_failed_instance(self._host, failed_instance, cascade, result, actor=actor)
        )

    def update_instance_status(
        self,
        task_instance: str | TaskInstance,
        status: Status | str,
        metadata: Mapping[str, Any] | None = None,
        cascade: bool = False,
        cascade_kwargs: Mapping[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> TaskInstance:
        """Force an instance's status (operators' tool); optionally cascade.

        ``actor`` (who asked) is recorded in its metadata and the lifecycle log.
        """
        return self._drive(
            steps.update_instance_status(
                self._host, task_instance, status, metadata, cascade, cascade_kwargs, actor=actor
            )
        )

    def update_instance_metadata(
        self, task_instance: str | TaskInstance, metadata: Mapping[str, Any]
    ) -> TaskInstance:
        """Merge ``metadata`` into an instance's metadata (bumps ``lastModified``)."""
        return self._drive(steps.update_instance_metadata(self._host, task_instance, metadata))

    def mark_instance_logs_resolved(self, task_instance: str | TaskInstance) -> TaskInstance:
        """Acknowledge an instance's ERROR logs."""
        return self._drive(steps.mark_instance_logs_resolved(self._host, task_instance))

    def fail_instance(
        self,
        task_instance: str | TaskInstance,
        reason: str,
        *,
        actor: str | None = None,
    ) -> TaskInstance:
        """Fail an ``unstarted``, ``scheduled`` or ``running`` instance by hand.

        It ends ``failed`` (replay or skip it next) with ``exceptionType``
        ``triggers_core.errors.FailedByOperator`` and ``reason``; ``actor``
        (who asked) is recorded. A ``running`` instance's body may still be
        running somewhere: its outcome is refused when it ends. A ``failed``
        or resolved instance raises
        :class:`~triggers_core.errors.InvalidTransitionError` saying why.
        """
        return self._drive(steps.fail_instance(self._host, task_instance, reason, actor=actor))

    def take_over_instance(self, task_instance: str | TaskInstance, owner: str) -> TaskInstance:
        """Fail a lost instance (its run ``owner``'s lease expired) and replay it per policy.

        The caller must have claimed the lease first
        (:meth:`~triggers_core.runtime.storage.Storage.claim_lease`), so the run
        can no longer renew it; :func:`~triggers_core.runtime.recovery.recover`
        does both. The policy is the task's (``on_lost``, ``max_lost_retries``),
        or the defaults where the task is not registered. Returns the instance
        as it ended (``failed`` or ``replayed``); raises
        :class:`~triggers_core.errors.InvalidTransitionError` if it is no longer
        running under that owner.
        """
        return self._drive(steps.take_over_instance(self._host, task_instance, owner))

    def redispatch_instance(
        self, task_instance: str | TaskInstance, since: datetime
    ) -> TaskInstance:
        """Dispatch again a ``scheduled`` instance whose message was lost (scheduled at ``since``).

        Raises :class:`~triggers_core.errors.InvalidTransitionError` if it
        started or was dispatched again since: of several sweepers, one does it.
        """
        return self._drive(steps.redispatch_instance(self._host, task_instance, since))

    def advance(self, now: datetime | None = None) -> list[TaskInstance]:
        """Apply this session's timers due at ``now`` (default: the manager's clock).

        ``within`` windows that closed expire (and fire their ``onMiss``
        trigger, in the same commit), delayed instances whose delay ended are
        scheduled. Returns the instances that changed, by name. One commit;
        however many processes call it, each timer applies once. Reads the
        session's unresolved instances; a store-wide tick
        (:func:`triggers_core.tick`) reads only the due ones.
        """
        return self._drive(steps.advance(self._host, now))

    def advance_instance(
        self,
        task_instance: str | TaskInstance,
        now: datetime | None = None,
        *,
        loaded: Snapshot | None = None,
    ) -> Transition | None:
        """Apply the timer of one instance if it is due at ``now`` (a sweeper found it due).

        Returns the committed transition, or None if there was nothing to do
        (not due, or another process applied it first: of several sweepers,
        exactly one applies each timer). ``loaded``: this session as a tick
        read it already (:meth:`~triggers_core.runtime.storage.Storage.load_sessions`
        with :func:`~triggers_core.engine.timer_scope` of the instance): the
        first attempt computes on it instead of loading; a stale one loses its
        compare-and-swap and the next attempt loads.
        """
        return self._drive(steps.advance_instance(self._host, task_instance, now, loaded))

    def fail_unstarted_instance(
        self,
        task_instance: str | TaskInstance,
        error: BaseException,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> TaskInstance | None:
        """Mark a ``scheduled`` instance ``failed`` because its runner cannot start it.

        For runners that find out only when the instance should start (a
        Celery worker that lacks the manager class or the trigger task).
        ``error`` is recorded like a task's failure (``exceptionType``,
        ``exceptionInfo``), ``context`` as ``exceptionContext``; the instance
        can be replayed. Returns None and changes nothing if the instance is no
        longer ``scheduled`` (another runner started it meanwhile).
        """
        return self._drive(
            steps.fail_unstarted_instance(self._host, task_instance, error, context=context)
        )

    def fail_run(
        self,
        task_instance: str | TaskInstance,
        owner: str,
        error: BaseException,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> TaskInstance | None:
        """Mark a ``running`` instance ``failed`` because its run ``owner`` ended outside its body.

        For a runner that sees a run end without an outcome (a Celery hard time
        limit killed the process running the body): ``error`` is recorded like
        a task's failure (``exceptionType``, ``exceptionInfo``), ``context`` as
        ``exceptionContext``; the instance can be replayed. Returns None and
        changes nothing if the instance is no longer ``running`` under that run
        (it finished, or a sweeper took it over meanwhile).
        """
        return self._drive(steps.fail_run(self._host, task_instance, owner, error, context=context))
