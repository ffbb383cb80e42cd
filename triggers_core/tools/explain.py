"""Explain: why a task or instance is where it is, in words and as data; and what-if.

"Why didn't my task run?" is answered from a loaded session state (pass
``storage.load_full().state``): :func:`explain` tells, for a task or an
instance, which ``after`` triggers an instance still waits for (and, for a
trigger that is a task's cascade, where that task is; for a group, how many
more of which members: ``any one of: 'a', 'b'``, ``2 more of: 'c', 'd', 'e'``),
which ``unless`` triggers fired and what would still abandon it, why it was
abandoned, where a failure came from, whether it is stale. :func:`what_if`
answers "what would firing X do now?" by running the engine on the state
(nothing is stored: the state is immutable) and then the cascade under an
idealised runner (:func:`~triggers_core.tools.simulation.run_simulation`:
every scheduled instance finishes at once with ``{}``, unless ``results`` say
otherwise)::

    state = storage.load_full().state
    print("\\n".join(explain(state, "t_computeScore#0", now=datetime.now(UTC)).lines))
    print("\\n".join(what_if(state, "sessionFinalized", now=datetime.now(UTC)).lines))

Pure: time comes in as ``now``; conditions are read through
:mod:`triggers_core.tools.requirements`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from triggers_core import engine
from triggers_core.engine.config import TaskConfig
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.errors import TriggersError, did_you_mean
from triggers_core.runtime.sessions import STALE_STATUSES, status_since
from triggers_core.tools.requirements import (
    Lack,
    Missing,
    after_triggers,
    condition_words,
    grouped,
    lack_to_json,
    lack_words,
    missing_after,
    missing_unless,
    unless_complete,
    unless_recorded,
)
from triggers_core.tools.simulation import Results, run_simulation

__all__ = [
    "FailureInfo",
    "InstanceExplanation",
    "TaskExplanation",
    "UnknownNameError",
    "Waiting",
    "WaitingGroup",
    "WhatIf",
    "explain",
    "explain_instance",
    "explain_task",
    "format_age",
    "summary_line",
    "what_if",
]


class UnknownNameError(TriggersError, LookupError):
    """The name is neither a configured task nor an instance of the session."""


def summary_line(info: str) -> str:
    """The line that says what went wrong: a traceback's last unindented line, else the first."""
    lines = [line for line in info.splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Traceback (most recent call last)"):
        unindented = [line for line in lines if not line.startswith((" ", "\t"))]
        return unindented[-1]
    return lines[0]


def format_age(age: timedelta) -> str:
    """``3d 2h``, ``2h 5m``, ``4m 10s``, ``12s``: the two largest units."""
    seconds = max(0, int(age.total_seconds()))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
    first = next((i for i, (n, _) in enumerate(parts) if n), len(parts) - 1)
    shown = [(n, unit) for n, unit in parts[first : first + 2] if n] or [(0, "s")]
    return " ".join(f"{n}{unit}" for n, unit in shown)


@attrs.frozen
class Waiting:
    """An ``after``/``andEvery`` trigger an unstarted instance has not recorded."""

    trigger: str
    #: ``after`` or ``andEvery``.
    directive: str
    #: The session recorded this trigger (before this instance could record it).
    fired_in_session: bool
    #: The trigger is the cascade of this configured task (else None: an external trigger).
    task: str | None = None
    #: That task's instances and their statuses, oldest first.
    task_instances: tuple[tuple[str, Status], ...] = ()

    def short(self) -> str:
        """The trigger name (what the ``inspect`` command lists)."""
        return self.trigger

    def words(self) -> str:
        """One phrase: the trigger and what is known about it."""
        text = repr(self.trigger) + (" (andEvery)" if self.directive == "andEvery" else "")
        if self.task is not None:
            if not self.task_instances:
                return f"{text}: the cascade of {self.task}, which has no instance yet"
            states = ", ".join(f"{name} {status}" for name, status in self.task_instances)
            return f"{text}: the cascade of {self.task} ({states})"
        if self.fired_in_session:
            return f"{text}: fired in this session, but not since this instance was created"
        return f"{text}: never fired in this session"

    def to_json(self) -> dict[str, Any]:
        """As a JSON-compatible mapping."""
        return {
            "trigger": self.trigger,
            "directive": self.directive,
            "firedInSession": self.fired_in_session,
            "task": self.task,
            "taskInstances": {name: status.value for name, status in self.task_instances},
        }


@attrs.frozen
class WaitingGroup:
    """A group in ``after`` that an unstarted instance has not satisfied yet."""

    #: How many more of which members (see :class:`~triggers_core.tools.requirements.Missing`).
    missing: Missing
    #: The members not satisfied yet, each explained.
    members: tuple[Waiting | WaitingGroup, ...]

    @property
    def path(self) -> str:
        """Where the group is written (``t_a.after[1]``)."""
        return self.missing.path

    def short(self) -> str:
        """One phrase, nested groups in parentheses: ``any one of (a, 2 of (b, c, d))``."""
        return self.missing.words()

    def words(self) -> str:
        """The group's line: ``any one of: 'a', 'b'``, ``2 more of: 'c', 'd', 'e'``."""
        members = ", ".join(lack_words(m, repr) for m in self.missing.members)
        return f"{self.missing.phrase()}: {members}"

    def to_json(self) -> dict[str, Any]:
        """As a JSON-compatible mapping (``group`` is the group as configured)."""
        return {
            "path": self.path,
            "need": self.missing.need,
            "satisfied": self.missing.satisfied,
            "members": [m.to_json() for m in self.members],
            "group": self.missing.group.to_json(),
        }


def _waiting_lines(items: tuple[Waiting | WaitingGroup, ...], indent: str) -> list[str]:
    lines = []
    for item in items:
        lines.append(f"{indent}- {item.words()}")
        if isinstance(item, WaitingGroup):
            lines.extend(_waiting_lines(item.members, indent + "  "))
    return lines


@attrs.frozen
class FailureInfo:
    """Where a failure came from."""

    exception_type: str
    #: The line that says what went wrong (see :func:`summary_line`).
    message: str
    retries: int
    log_level: str

    def to_json(self) -> dict[str, Any]:
        """As a JSON-compatible mapping."""
        return {
            "exceptionType": self.exception_type,
            "message": self.message,
            "retries": self.retries,
            "logLevel": self.log_level,
        }


@attrs.frozen
class InstanceExplanation:
    """Why one instance is where it is."""

    instance: str
    task: str
    status: Status
    #: Unstarted: its ``after`` condition is satisfied (None for other statuses).
    ready: bool | None
    #: Unstarted: each ``after`` entry (and ``andEvery``) not satisfied yet.
    waiting_for: tuple[Waiting | WaitingGroup, ...]
    #: The ``unless`` triggers it recorded; the ``unless`` entries not satisfied yet
    #: (names, and :class:`~triggers_core.tools.requirements.Missing` groups).
    unless_fired: tuple[str, ...]
    unless_missing: tuple[Lack, ...]
    failure: FailureInfo | None
    #: Replays: the instance this one replays, how many replays deep, its own replacement.
    parent: str | None
    depth: int
    replayed_as: str | None
    #: When it entered its status, how long ago (with ``now``), and whether that is stale.
    since: datetime | None
    age: timedelta | None
    stale: bool
    #: The explanation in words.
    lines: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """As a JSON-compatible mapping."""
        return {
            "instance": self.instance,
            "task": self.task,
            "status": self.status.value,
            "ready": self.ready,
            "waitingFor": [w.to_json() for w in self.waiting_for],
            "unlessFired": list(self.unless_fired),
            "unlessMissing": [lack_to_json(m) for m in self.unless_missing],
            "failure": None if self.failure is None else self.failure.to_json(),
            "parent": self.parent,
            "depth": self.depth,
            "replayedAs": self.replayed_as,
            "since": None if self.since is None else self.since.isoformat(),
            "ageSeconds": None if self.age is None else self.age.total_seconds(),
            "stale": self.stale,
            "lines": list(self.lines),
        }


@attrs.frozen
class TaskExplanation:
    """A task: whether it has instances, and each instance explained."""

    task: str
    configured: bool
    instances: tuple[InstanceExplanation, ...]
    lines: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """As a JSON-compatible mapping."""
        return {
            "task": self.task,
            "configured": self.configured,
            "instances": [i.to_json() for i in self.instances],
            "lines": list(self.lines),
        }


# -- explain ------------------------------------------------------------------------------


def explain(
    state: SessionState,
    name: str,
    *,
    now: datetime | None = None,
    stale_after: timedelta | None = None,
) -> TaskExplanation | InstanceExplanation:
    """Explain a task (a name without ``#``) or an instance (``task#n``).

    ``now`` gives ages; with ``stale_after`` too, scheduled or running
    instances older than that are called stale. Raises
    :class:`UnknownNameError` for a name the session does not know.
    """
    if "#" in name:
        return explain_instance(state, name, now=now, stale_after=stale_after)
    return explain_task(state, name, now=now, stale_after=stale_after)


def explain_task(
    state: SessionState,
    task_name: str,
    *,
    now: datetime | None = None,
    stale_after: timedelta | None = None,
) -> TaskExplanation:
    """Whether the task has instances (and if not, why not), and each instance explained."""
    task = state.tasks.get(task_name)
    instances = list(state.instances_of(task_name))
    if task is None and not instances:
        raise UnknownNameError(
            f"no task or instance named {task_name!r} in this session"
            f"{did_you_mean(task_name, state.tasks)}"
        )
    lines: list[str] = []
    if task is None:
        lines.append(f"{task_name} is not configured (any more); its instances remain")
    elif not instances and state.counters.get(task_name, 0) == 0:
        lines.extend(_why_no_instance(state, task))
    elif not instances:
        lines.append(f"{task_name} has instances, but none was loaded (pass load_full().state)")
    explained = tuple(
        explain_instance(state, i.name, now=now, stale_after=stale_after) for i in instances
    )
    for item in explained:
        lines.extend(item.lines)
    return TaskExplanation(task_name, task is not None, explained, tuple(lines))


def _why_no_instance(state: SessionState, task: TaskConfig) -> list[str]:
    name = task.name
    lines = [
        f"{name} has no instance yet: an instance is created when one of its triggers "
        f"fires (after: {condition_words(task, 'after')}"
        + (f"; unless: {condition_words(task, 'unless')}" if task.unless else "")
        + ")"
    ]
    early = [t for t in (*after_triggers(task), *task.unless_names) if t in state.latest_kwargs]
    if early:
        lines.append(
            f"{', '.join(map(repr, early))} fired in this session before {name} was "
            "configured; a configuration change never re-applies earlier triggers, so "
            "fire them again"
        )
    return lines


def explain_instance(
    state: SessionState,
    name: str,
    *,
    now: datetime | None = None,
    stale_after: timedelta | None = None,
) -> InstanceExplanation:
    """Why the instance ``name`` is where it is (see :func:`explain`)."""
    instance = state.instances.get(name)
    if instance is None:
        raise UnknownNameError(
            f"no task instance named {name!r} in this session{did_you_mean(name, state.instances)}"
        )
    task = state.tasks.get(instance.task_name)
    since = status_since(instance)
    age = None if now is None or since is None else now - since
    stale = (
        instance.status in STALE_STATUSES
        and age is not None
        and stale_after is not None
        and age >= stale_after
    )
    waiting = _waiting(state, task, instance) if instance.status is Status.UNSTARTED else ()
    fired = unless_recorded(task, instance) if task else tuple(sorted(instance.unless_fired))
    unless_left = missing_unless(task, instance) if task else ()
    failure = None
    if instance.status is Status.FAILED:
        meta = instance.metadata
        failure = FailureInfo(
            exception_type=str(meta.get("exceptionType", "")),
            message=summary_line(str(meta.get("exceptionInfo", ""))),
            retries=instance.retries,
            log_level=instance.log_level_name,
        )
    parent = instance.metadata.get("parent")
    depth = instance.metadata.get("depth", 0)
    replayed_as = instance.metadata.get("replayedAs")
    explanation = InstanceExplanation(
        instance=name,
        task=instance.task_name,
        status=instance.status,
        ready=None if instance.status is not Status.UNSTARTED else not waiting,
        waiting_for=waiting,
        unless_fired=fired,
        unless_missing=unless_left,
        failure=failure,
        parent=parent if isinstance(parent, str) else None,
        depth=depth if isinstance(depth, int) else 0,
        replayed_as=replayed_as if isinstance(replayed_as, str) else None,
        since=since,
        age=age,
        stale=stale,
        lines=(),
    )
    lines = _words(state, task, instance, explanation, stale_after)
    return attrs.evolve(explanation, lines=tuple(lines))


def _waiting(
    state: SessionState, task: TaskConfig | None, instance: TaskInstance
) -> tuple[Waiting | WaitingGroup, ...]:
    if task is None:
        return ()

    def explained(lack: Lack, directive: str) -> Waiting | WaitingGroup:
        if isinstance(lack, Missing):
            return WaitingGroup(lack, tuple(explained(m, "after") for m in lack.members))
        upstream = state.tasks.get(lack)
        return Waiting(
            trigger=lack,
            directive=directive,
            fired_in_session=lack in state.latest_kwargs,
            task=None if upstream is None else lack,
            task_instances=tuple((i.name, i.status) for i in state.instances_of(lack)),
        )

    return tuple(
        explained(lack, "andEvery" if lack == task.and_every else "after")
        for lack in missing_after(task, instance.kwargs)
    )


def _and(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} and {phrases[-1]}"


def _unless_line(e: InstanceExplanation) -> str | None:
    """``unless: 'a' fired; it is abandoned if 'b' fires too before it runs`` (None if moot)."""
    if not e.unless_missing:
        return None
    left = _and([lack_words(m, repr) for m in e.unless_missing])
    (first, *more) = e.unless_missing
    one = not more and (isinstance(first, str) or first.need == 1)
    verb = "fires" if one else "fire"
    if e.unless_fired:
        fired = _and([repr(n) for n in e.unless_fired])
        return f"  unless: {fired} fired; it is abandoned if {left} {verb} too before it runs"
    return f"  unless: it is abandoned if {left} {verb} before it runs"


def _words(
    state: SessionState,
    task: TaskConfig | None,
    instance: TaskInstance,
    e: InstanceExplanation,
    stale_after: timedelta | None,
) -> list[str]:
    name, status = instance.name, instance.status
    since = "" if e.since is None else f" since {e.since.isoformat()}"
    at = "" if e.since is None else f" at {e.since.isoformat()}"
    ago = "" if e.age is None else f" ({format_age(e.age)} ago)"
    lines = []
    if task is None:
        lines.append(f"{name} is {status}; its task {instance.task_name} is not configured")
    elif status is Status.UNSTARTED:
        if unless_complete(task, instance):
            grouped_unless = grouped(task, "unless")
            met = "its unless condition is met" if grouped_unless else "every unless trigger fired"
            lines.append(
                f"{name} is unstarted, but {met}: the next fire that reaches {task.name} "
                "abandons it"
            )
        elif e.waiting_for:
            lines.append(f"{name} is not ready: it waits for")
            lines.extend(_waiting_lines(e.waiting_for, "  "))
        else:
            lines.append(
                f"{name} is unstarted but every trigger it waits for is recorded (the "
                f"configuration changed, or its status was set by hand): the next fire that "
                f"reaches {task.name} schedules it"
            )
    elif status in STALE_STATUSES:
        lines.append(f"{name} is {status}{since}{ago}")
        if e.stale and stale_after is not None:
            lines.append(
                f"  stale: {status} for longer than {format_age(stale_after)} (a lost message "
                "or a killed worker?); set it failed, then replay it"
            )
    elif status is Status.FAILED:
        assert e.failure is not None
        lines.append(f"{name} failed{at}: {e.failure.message or e.failure.exception_type}")
        lines.append(
            f"  exception type {e.failure.exception_type}, retries {e.failure.retries}, "
            f"log level {e.failure.log_level}; replay it or skip it"
        )
    elif status is Status.ABANDONED:
        fired = ", ".join(map(repr, e.unless_fired)) or "(none recorded)"
        if task is not None and grouped(task, "unless"):
            lines.append(f"{name} was abandoned{at}: its unless condition was met ({fired} fired)")
        else:
            lines.append(f"{name} was abandoned{at}: every unless trigger fired ({fired})")
    elif status is Status.REPLAYED:
        clone = state.instances.get(e.replayed_as or "")
        now_is = "" if clone is None else f", which is {clone.status}"
        lines.append(f"{name} failed and was replayed as {e.replayed_as}{now_is}")
    elif status is Status.FINISHED:
        lines.append(f"{name} finished{at}; its result fired {instance.task_name!r}")
    else:
        lines.append(f"{name} is {status}{at}")
    if status is Status.UNSTARTED and task is not None and task.unless:
        unless = _unless_line(e)
        if unless is not None:
            lines.append(unless)
    if e.parent is not None:
        lines.append(f"  a replay of {e.parent} (replay depth {e.depth})")
    return lines


# -- what-if ------------------------------------------------------------------------------


@attrs.frozen
class WhatIf:
    """What firing a trigger would do now (nothing was stored)."""

    trigger: str
    kwargs: Mapping[str, Any]
    #: The fire itself: instances it creates, schedules, abandons, and those that
    #: record the trigger but still wait for others.
    created: tuple[str, ...]
    scheduled: tuple[str, ...]
    abandoned: tuple[str, ...]
    recorded: tuple[str, ...]
    #: The cascade under an idealised runner: instances in the order they ran, the
    #: triggers fired (this one first), and the end status of every instance that
    #: the fire or its cascade created or changed.
    ran: tuple[str, ...]
    fired: tuple[str, ...]
    outcome: Mapping[str, Status]
    lines: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """As a JSON-compatible mapping."""
        return {
            "trigger": self.trigger,
            "kwargs": dict(self.kwargs),
            "created": list(self.created),
            "scheduled": list(self.scheduled),
            "abandoned": list(self.abandoned),
            "recorded": list(self.recorded),
            "cascade": {
                "ran": list(self.ran),
                "fired": list(self.fired),
                "outcome": {name: status.value for name, status in self.outcome.items()},
            },
            "lines": list(self.lines),
        }


def what_if(
    state: SessionState,
    trigger: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    now: datetime,
    results: Results | None = None,
) -> WhatIf:
    """What firing ``trigger`` with ``kwargs`` on ``state`` would do (nothing is stored).

    The fire runs through :func:`triggers_core.engine.fire`; the cascade
    through :func:`~triggers_core.tools.simulation.run_simulation` from the
    same state, where each instance scheduled finishes with ``{}`` (or what
    ``results`` say: ``{instance_or_task_name: result or Failure}``).
    Instances already scheduled or running before the fire are not run.
    Raises what the engine raises for a bad trigger name or kwargs.
    """
    fire = engine.fire(state, trigger, kwargs, now=now)
    after = fire.state.instances
    abandoned = sorted(n for n in fire.changed if after[n].status is Status.ABANDONED)
    recorded = sorted(n for n in fire.changed - fire.created if after[n].status is Status.UNSTARTED)
    simulation = run_simulation(
        state.tasks, [(trigger, kwargs)], results=results, now=now, state=state
    )
    final = simulation.state.instances
    touched = sorted(
        n for n, i in final.items() if n not in state.instances or state.instances[n] != i
    )
    outcome = {n: final[n].status for n in touched}
    result = WhatIf(
        trigger=trigger,
        kwargs=dict(kwargs or {}),
        created=tuple(sorted(fire.created)),
        scheduled=fire.scheduled,
        abandoned=tuple(abandoned),
        recorded=tuple(recorded),
        ran=simulation.ran,
        fired=simulation.fired,
        outcome=outcome,
        lines=(),
    )
    return attrs.evolve(result, lines=tuple(_what_if_words(result)))


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(names) if names else "none"


def _what_if_words(w: WhatIf) -> list[str]:
    lines = [f"firing {w.trigger!r} now would:"]
    lines.append(f"  create {_names(w.created)}")
    lines.append(f"  schedule {_names(w.scheduled)}")
    lines.append(f"  abandon {_names(w.abandoned)}")
    if w.recorded:
        lines.append(f"  record it on {_names(w.recorded)} (still waiting for other triggers)")
    if w.ran:
        lines.append("then, if every scheduled instance finished with {} (an idealised runner):")
        lines.append(f"  ran in order: {_names(w.ran)}")
        cascades = w.fired[1:]
        lines.append(f"  cascades fired: {_names(cascades)}")
        ends = ", ".join(f"{n} {s}" for n, s in w.outcome.items())
        lines.append(f"  end: {ends}")
    return lines
