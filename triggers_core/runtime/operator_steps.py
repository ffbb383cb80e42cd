"""An operator's actions on instances, as shell-core generators (see :mod:`.shell`).

Each action is one commit through the shell's loop (then, for those that
change what runs, :func:`~triggers_core.runtime.shell.perform`), written once
for both faces: :class:`~triggers_core.runtime.operator.OperatorActions`
drives them with blocking I/O for the synchronous manager, the asynchronous
manager awaits them. Actions a person asks for take an ``actor``, recorded in
the instance's metadata and in a lifecycle log record.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from triggers_core import engine
from triggers_core.engine.leases import LostPolicy
from triggers_core.engine.names import name_problem
from triggers_core.engine.scopes import Scope, instance_scope
from triggers_core.engine.sizes import bounded_mapping
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.engine.transition import Transition
from triggers_core.errors import InvalidTransitionError
from triggers_core.runtime.lifecycle import LIFECYCLE_LOGGER, log_action
from triggers_core.runtime.outcomes import exception_type_name, format_exception
from triggers_core.runtime.shell import ShellHost, Steps, commit, perform
from triggers_core.runtime.storage import Snapshot
from triggers_core.runtime.tasks import task_policy

lifecycle = logging.getLogger(LIFECYCLE_LOGGER)


def _bounded(host: ShellHost, value: Mapping[str, Any] | None, path: str) -> dict[str, Any] | None:
    """``value`` checked against the storage's value limits once, before any I/O."""
    if value is None:
        return None
    return bounded_mapping(value, path, host.storage.max_value_bytes)


def _acted(
    host: ShellHost, action: str, name: str, actor: str | None, transition: Transition
) -> None:
    if actor is not None:
        status = transition.state.instances[name].status.value
        log_action(lifecycle, host.uid, action, instance=name, actor=actor, status=status)


def replay_failed_instance(
    host: ShellHost,
    failed_instance: str | TaskInstance,
    replacement_kwargs: Mapping[str, Any] | None = None,
    *,
    actor: str | None = None,
) -> Steps[TaskInstance]:
    """Replay a failed instance; return the scheduled clone.

    ``actor`` (who asked: a user name, ``"cli"``...) is recorded in the
    replayed instance's metadata and in the lifecycle log.
    """
    name = instance_name_of(failed_instance)
    who = check_actor(actor)
    replacement = _bounded(host, replacement_kwargs, "replacement_kwargs")
    transition = yield from commit(
        host,
        lambda s: engine.replay_failed(s, name, replacement, now=host.now(), actor=who),
        instance_scope(name, cascade=False),
    )
    _acted(host, "replayed", name, who, transition)
    yield from perform(host, transition)
    return transition.state.instances[transition.scheduled[0]]


def skip_failed_instance(
    host: ShellHost,
    failed_instance: str | TaskInstance,
    cascade: bool = False,
    result: Mapping[str, Any] | None = None,
    *,
    actor: str | None = None,
) -> Steps[TaskInstance]:
    """Mark a failed instance skipped; with ``cascade`` its task name fires with ``result``.

    ``actor`` (who asked) is recorded in its metadata and the lifecycle log.
    """
    name = instance_name_of(failed_instance)
    who = check_actor(actor)
    data = _bounded(host, result, "result")
    transition = yield from commit(
        host,
        lambda s: engine.skip_failed(
            s,
            name,
            now=host.now(),
            cascade=cascade,
            result=data,
            max_cascade_depth=host.max_cascade_depth,
            actor=who,
        ),
        instance_scope(name, cascade=cascade),
    )
    _acted(host, "skipped", name, who, transition)
    yield from perform(host, transition)
    return transition.state.instances[name]


def update_instance_status(  # noqa: PLR0917 - the manager method's signature
    host: ShellHost,
    task_instance: str | TaskInstance,
    status: Status | str,
    metadata: Mapping[str, Any] | None = None,
    cascade: bool = False,
    cascade_kwargs: Mapping[str, Any] | None = None,
    *,
    actor: str | None = None,
) -> Steps[TaskInstance]:
    """Force an instance's status (operators' tool); optionally cascade.

    ``actor`` (who asked) is recorded in its metadata and the lifecycle log.
    """
    name = instance_name_of(task_instance)
    who = check_actor(actor)
    extra = _bounded(host, metadata, "metadata")
    extra = extra if who is None else {**(extra or {}), "actor": who}
    data = _bounded(host, cascade_kwargs, "cascade_kwargs")
    transition = yield from commit(
        host,
        lambda s: engine.update_status(
            s,
            name,
            status,
            now=host.now(),
            metadata=extra,
            cascade=cascade,
            cascade_kwargs=data,
            max_cascade_depth=host.max_cascade_depth,
        ),
        instance_scope(name, cascade=cascade),
    )
    _acted(host, "set to a status", name, who, transition)
    yield from perform(host, transition)
    return transition.state.instances[name]


def update_instance_metadata(
    host: ShellHost, task_instance: str | TaskInstance, metadata: Mapping[str, Any]
) -> Steps[TaskInstance]:
    """Merge ``metadata`` into an instance's metadata (bumps ``lastModified``)."""
    name = instance_name_of(task_instance)
    extra = bounded_mapping(metadata, "metadata", host.storage.max_value_bytes)
    transition = yield from commit(
        host,
        lambda s: engine.update_metadata(s, name, extra, now=host.now()),
        instance_scope(name, cascade=False),
    )
    return transition.state.instances[name]


def mark_instance_logs_resolved(
    host: ShellHost, task_instance: str | TaskInstance
) -> Steps[TaskInstance]:
    """Acknowledge an instance's ERROR logs."""
    name = instance_name_of(task_instance)
    transition = yield from commit(
        host,
        lambda s: engine.mark_logs_resolved(s, name, now=host.now()),
        instance_scope(name, cascade=False),
    )
    return transition.state.instances[name]


def fail_instance(
    host: ShellHost,
    task_instance: str | TaskInstance,
    reason: str,
    *,
    actor: str | None = None,
) -> Steps[TaskInstance]:
    """Fail an ``unstarted``, ``scheduled`` or ``running`` instance by hand.

    It ends ``failed`` (replay or skip it next) with ``exceptionType``
    ``triggers_core.errors.FailedByOperator`` and ``reason``; ``actor``
    (who asked) is recorded. A ``running`` instance's body may still be
    running somewhere: its outcome is refused when it ends. A ``failed``
    or resolved instance raises
    :class:`~triggers_core.errors.InvalidTransitionError` saying why.
    """
    name = instance_name_of(task_instance)
    who = check_actor(actor)
    transition = yield from commit(
        host,
        lambda s: engine.fail_by_operator(s, name, now=host.now(), reason=reason, actor=who),
        instance_scope(name, cascade=False),
    )
    _acted(host, "failed", name, who, transition)
    yield from perform(host, transition)
    return transition.state.instances[name]


def take_over_instance(
    host: ShellHost, task_instance: str | TaskInstance, owner: str
) -> Steps[TaskInstance]:
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
    name = instance_name_of(task_instance)

    def compute(state: SessionState) -> Transition:
        found = state.instances.get(name)
        task = state.tasks.get(found.task_name) if found is not None else None
        policy = task_policy(task.run).lost if task is not None else LostPolicy()
        return engine.take_over(state, name, now=host.now(), owner=owner, policy=policy)

    transition = yield from commit(host, compute, instance_scope(name, cascade=False))
    yield from perform(host, transition)
    return transition.state.instances[name]


def redispatch_instance(
    host: ShellHost, task_instance: str | TaskInstance, since: datetime
) -> Steps[TaskInstance]:
    """Dispatch again a ``scheduled`` instance whose message was lost (scheduled at ``since``).

    Raises :class:`~triggers_core.errors.InvalidTransitionError` if it
    started or was dispatched again since: of several sweepers, one does it.
    """
    name = instance_name_of(task_instance)
    transition = yield from commit(
        host,
        lambda s: engine.redispatch(s, name, now=host.now(), since=since),
        instance_scope(name, cascade=False),
    )
    yield from perform(host, transition)
    return transition.state.instances[name]


def advance(host: ShellHost, now: datetime | None = None) -> Steps[list[TaskInstance]]:
    """Apply this session's timers due at ``now`` (default: the manager's clock).

    ``within`` windows that closed expire (and fire their ``onMiss``
    trigger, in the same commit), delayed instances whose delay ended are
    scheduled. Returns the instances that changed, by name. One commit;
    however many processes call it, each timer applies once. Reads the
    session's unresolved instances; a store-wide tick
    (:func:`triggers_core.tick`) reads only the due ones.
    """
    when = host.now() if now is None else now
    transition = yield from commit(
        host,
        lambda s: engine.advance(s, when, max_cascade_depth=host.max_cascade_depth),
        Scope(unresolved=True),
    )
    if not transition.commit:
        return []
    yield from perform(host, transition)
    instances = transition.state.instances
    return [instances[n] for n in sorted(transition.changed)]


def advance_instance(
    host: ShellHost,
    task_instance: str | TaskInstance,
    now: datetime | None = None,
    loaded: Snapshot | None = None,
) -> Steps[Transition | None]:
    """Apply the timer of one instance if it is due at ``now`` (a sweeper found it due).

    Returns the committed transition, or None if there was nothing to do
    (not due, or another process applied it first: of several sweepers,
    exactly one applies each timer). ``loaded``: the session as the caller
    read it with :func:`~triggers_core.engine.timer_scope` of the instance
    (the first attempt computes on it; see :func:`~triggers_core.runtime.shell.commit_steps`).
    """
    name = instance_name_of(task_instance)
    when = host.now() if now is None else now
    transition = yield from commit(
        host,
        lambda s: engine.advance(s, when, only=(name,), max_cascade_depth=host.max_cascade_depth),
        engine.timer_scope(name),
        loaded,
    )
    if not transition.commit:
        return None
    yield from perform(host, transition)
    return transition


def fail_unstarted_instance(
    host: ShellHost,
    task_instance: str | TaskInstance,
    error: BaseException,
    *,
    context: Mapping[str, Any] | None = None,
) -> Steps[TaskInstance | None]:
    """Mark a ``scheduled`` instance ``failed`` because its runner cannot start it.

    For runners that find out only when the instance should start (a
    Celery worker that lacks the manager class or the trigger task).
    ``error`` is recorded like a task's failure (``exceptionType``,
    ``exceptionInfo``), ``context`` as ``exceptionContext``; the instance
    can be replayed. Returns None and changes nothing if the instance is no
    longer ``scheduled`` (another runner started it meanwhile).
    """
    return (
        yield from _fail_while(
            host,
            instance_name_of(task_instance),
            Status.SCHEDULED,
            refusal=("fail before its start", "it is no longer scheduled"),
            error=error,
            context=context,
            owner=None,
        )
    )


def fail_run(
    host: ShellHost,
    task_instance: str | TaskInstance,
    owner: str,
    error: BaseException,
    *,
    context: Mapping[str, Any] | None = None,
) -> Steps[TaskInstance | None]:
    """Mark a ``running`` instance ``failed`` because its run ``owner`` ended outside its body.

    For a runner that sees a run end without an outcome (a Celery hard time
    limit killed the process running the body): ``error`` is recorded like
    a task's failure (``exceptionType``, ``exceptionInfo``), ``context`` as
    ``exceptionContext``; the instance can be replayed. Returns None and
    changes nothing if the instance is no longer ``running`` under that run
    (it finished, or a sweeper took it over meanwhile).
    """
    return (
        yield from _fail_while(
            host,
            instance_name_of(task_instance),
            Status.RUNNING,
            refusal=("fail its run", "it is no longer running"),
            error=error,
            context=context,
            owner=owner,
        )
    )


def _fail_while(
    host: ShellHost,
    name: str,
    status: Status,
    *,
    refusal: tuple[str, str],
    error: BaseException,
    context: Mapping[str, Any] | None,
    owner: str | None,
) -> Steps[TaskInstance | None]:
    """Fail ``name`` with ``error`` if it is still in ``status`` (and, with ``owner``,
    still run by it); else log ``refusal`` (action, reason) and return None."""
    exc_type, exc_info = exception_type_name(error), format_exception(error)

    def compute(state: SessionState) -> Transition:
        found = state.instances.get(name)
        if found is not None and found.status is not status:
            raise InvalidTransitionError(refusal[0], name, found.status.value, refusal[1])
        return engine.fail(
            state,
            name,
            now=host.now(),
            exception_type=exc_type,
            exception_info=exc_info,
            exception_context=context,
            owner=owner,
        )

    try:
        transition = yield from commit(host, compute, instance_scope(name, cascade=False))
    except InvalidTransitionError as exc:
        lifecycle.warning(
            "not failing %s in session %r: %s",
            name,
            host.uid,
            exc,
            extra={"session": host.uid, "instance": name, "status": exc.status},
        )
        return None
    return transition.state.instances[name]


def check_actor(actor: object) -> str | None:
    """``actor`` if it is None or a usable name, else :class:`ValueError` naming it."""
    if actor is None:
        return None
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 200:
        raise ValueError(f"actor must be a non-empty string of at most 200 characters: {actor!r}")
    problem = name_problem(actor)
    if problem is not None:
        raise ValueError(f"actor {actor!r} {problem}")
    return actor


def instance_name_of(instance: str | TaskInstance) -> str:
    return instance.name if isinstance(instance, TaskInstance) else instance
