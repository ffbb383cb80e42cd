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

A failed or replayed instance shows why it failed (exception type, the
line that says what went wrong, when), and an instance that replays or
retries earlier ones lists every earlier attempt the same way (see
:mod:`triggers_core.tools.attempts`).

Pure: time comes in as ``now``; conditions are read through
:mod:`triggers_core.tools.requirements`.

Cost, for a session of n loaded instances and a configuration of total
condition size c: :func:`explain_instances` (every instance, what
``triggers inspect`` shows) is O(n log n + n * c_t), c_t the condition size
of one task (the instances are grouped by task once, in O(n log n); a
waiting trigger that is a task's cascade shares that task's instance list
instead of copying it); :func:`explain_task` is the same for one task's
instances; :func:`explain_instance` alone is O(n log n) for the grouping
plus O(c_t + depth of its replay chain). The words name at most
:data:`SHOWN_INSTANCES` instances of an upstream task and count the rest.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from triggers_core.engine.config import TaskConfig
from triggers_core.engine.durations import format_timedelta
from triggers_core.engine.leases import RETRY_COOLDOWN, parse_time
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.errors import TriggersError, did_you_mean
from triggers_core.runtime.sessions import STALE_STATUSES, status_since
from triggers_core.tools.attempts import Attempt, attempts, failure_of, summary_line
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
from triggers_core.tools.what_if import WhatIf, what_if

__all__ = [
    "SHOWN_INSTANCES",
    "FailureInfo",
    "InstanceExplanation",
    "InstanceList",
    "TaskExplanation",
    "UnknownNameError",
    "Waiting",
    "WaitingGroup",
    "WhatIf",
    "explain",
    "explain_instance",
    "explain_instances",
    "explain_task",
    "format_age",
    "summary_line",
    "what_if",
]


class UnknownNameError(TriggersError, LookupError):
    """The name is neither a configured task nor an instance of the session."""


#: The words of a waiting trigger name at most this many instances of its task
#: (the most recent), and count the others by status.
SHOWN_INSTANCES = 5


class InstanceList(tuple[tuple[str, Status], ...]):
    """A task's ``(instance, status)`` pairs, oldest first, with their counts by status.

    One list per task is shared by every waiting instance that names it, and
    its counts are made once, so explaining n instances never copies or
    counts another task's instances n times.
    """

    @functools.cached_property
    def counts(self) -> Counter[str]:
        """How many instances are in each status (by status value)."""
        return Counter(status.value for _, status in self)


#: Instances of each task, oldest first (see :func:`by_task`).
ByTask = Mapping[str, InstanceList]


def by_task(instances: Iterable[TaskInstance]) -> dict[str, InstanceList]:
    """``{task: ((instance, status), ...)}``, oldest first: O(n log n), done once per answer."""
    grouped_instances: dict[str, list[TaskInstance]] = {}
    for instance in instances:
        grouped_instances.setdefault(instance.task_name, []).append(instance)
    return {
        task: InstanceList((i.name, i.status) for i in sorted(found, key=_number))
        for task, found in grouped_instances.items()
    }


def _number(instance: TaskInstance) -> tuple[int, str]:
    """Sort key: the number of ``task#n`` (a stored name without one sorts first)."""
    _, _, number = instance.name.rpartition("#")
    return (int(number), "") if number.isdigit() and len(number) < 19 else (-1, instance.name)


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
    #: That task's instances and their statuses, oldest first (the words and the JSON
    #: name the last :data:`SHOWN_INSTANCES` and count the others).
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
            shown = self.task_instances[-SHOWN_INSTANCES:]
            states = ", ".join(f"{name} {status}" for name, status in shown)
            hidden = len(self.task_instances) - len(shown)
            if hidden:
                counts = Counter(self._counts())
                counts.subtract(status.value for _, status in shown)
                more = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()) if n)
                states = f"{states}; {hidden} earlier: {more}"
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
            # The most recent few by name, and all of them counted: explaining n
            # instances that wait for a task with m instances stays O(n + m).
            "taskInstances": {
                name: status.value for name, status in self.task_instances[-SHOWN_INSTANCES:]
            },
            "taskInstanceCounts": dict(sorted(self._counts().items())),
        }

    def _counts(self) -> Counter[str]:
        if isinstance(self.task_instances, InstanceList):
            return self.task_instances.counts
        return Counter(status.value for _, status in self.task_instances)


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
    #: When it failed (``timestamps.failed``), if recorded.
    failed_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """As a JSON-compatible mapping."""
        return {
            "exceptionType": self.exception_type,
            "message": self.message,
            "retries": self.retries,
            "logLevel": self.log_level,
            "failedAt": None if self.failed_at is None else self.failed_at.isoformat(),
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
    #: The earlier attempts of the same work (its ``parent`` chain), oldest first; only
    #: when explained on its own (:func:`explain_instance`), else empty.
    attempts: tuple[Attempt, ...] = ()
    #: Its ``within`` window's deadline and, delayed, when it is scheduled (if any).
    deadline: datetime | None = None
    delayed_until: datetime | None = None
    #: The cooldown (seconds) of a retry's clone waiting for it until ``delayed_until``.
    retry_cooldown: float | None = None

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
            "attempts": [a.to_json() for a in self.attempts],
            "deadline": None if self.deadline is None else self.deadline.isoformat(),
            "delayedUntil": None if self.delayed_until is None else self.delayed_until.isoformat(),
            "retryCooldown": self.retry_cooldown,
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
    index = by_task(state.instances.values())
    instances = [state.instances[name] for name, _ in index.get(task_name, ())]
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
        _explain(state, i, index, now=now, stale_after=stale_after) for i in instances
    )
    for item in explained:
        lines.extend(item.lines)
    return TaskExplanation(task_name, task is not None, explained, tuple(lines))


def explain_instances(
    state: SessionState,
    *,
    now: datetime | None = None,
    stale_after: timedelta | None = None,
    words: bool = True,
) -> list[InstanceExplanation]:
    """Every loaded instance explained, ordered by task, then number (what ``inspect`` shows).

    O(n log n) in the instances (see the module's docstring); the earlier
    attempts of each instance are not walked (each attempt is a row of its own).
    Without ``words`` the explanations have no ``lines`` (a table does not need them).
    """
    index = by_task(state.instances.values())
    return [
        _explain(state, state.instances[name], index, now=now, stale_after=stale_after, words=words)
        for task in sorted(index)
        for name, _ in index[task]
    ]


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
    """Why the instance ``name`` is where it is (see :func:`explain`), with its earlier attempts."""
    instance = state.instances.get(name)
    if instance is None:
        raise UnknownNameError(
            f"no task instance named {name!r} in this session{did_you_mean(name, state.instances)}"
        )
    index = by_task(state.instances.values())
    chain = attempts(state.instances, name)[:-1]
    return _explain(state, instance, index, now=now, stale_after=stale_after, chain=chain)


def _explain(
    state: SessionState,
    instance: TaskInstance,
    index: ByTask,
    *,
    now: datetime | None,
    stale_after: timedelta | None,
    chain: tuple[Attempt, ...] = (),
    words: bool = True,
) -> InstanceExplanation:
    task = state.tasks.get(instance.task_name)
    since = status_since(instance)
    age = None if now is None or since is None else now - since
    stale = (
        instance.status in STALE_STATUSES
        and age is not None
        and stale_after is not None
        and age >= stale_after
    )
    unstarted = instance.status is Status.UNSTARTED
    waiting = _waiting(state, task, instance, index) if unstarted else ()
    fired = unless_recorded(task, instance) if task else tuple(sorted(instance.unless_fired))
    unless_left = missing_unless(task, instance) if task else ()
    failure = None
    ended = failure_of(instance)
    if instance.status is Status.FAILED or (instance.status is Status.REPLAYED and ended.failed):
        failure = FailureInfo(
            exception_type=ended.exception_type,
            message=ended.reason,
            retries=instance.retries,
            log_level=instance.log_level_name,
            failed_at=ended.failed_at,
        )
    parent = instance.metadata.get("parent")
    depth = instance.metadata.get("depth", 0)
    explanation = InstanceExplanation(
        instance=instance.name,
        task=instance.task_name,
        status=instance.status,
        ready=None if not unstarted else not waiting,
        waiting_for=waiting,
        unless_fired=fired,
        unless_missing=unless_left,
        failure=failure,
        parent=parent if isinstance(parent, str) else None,
        depth=depth if isinstance(depth, int) else 0,
        replayed_as=ended.replayed_as,
        since=since,
        age=age,
        stale=stale,
        lines=(),
        attempts=chain,
        deadline=parse_time(instance.metadata.get("deadline")),
        delayed_until=parse_time(instance.metadata.get("delayedUntil")),
        retry_cooldown=_seconds(instance.metadata.get(RETRY_COOLDOWN)),
    )
    if not words:
        return explanation
    lines = _words(state, task, instance, explanation, stale_after)
    lines.extend(_time_lines(explanation, now))
    return attrs.evolve(explanation, lines=tuple(lines))


def _seconds(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _time_lines(e: InstanceExplanation, now: datetime | None) -> list[str]:
    """``within`` and ``delay`` in words: when the window closes, until when it waits."""
    if e.status is not Status.UNSTARTED:
        return []

    def when(moment: datetime, verb: str, past: str) -> str:
        if now is None:
            return f"{verb} at {moment.isoformat()}"
        if moment <= now:
            return f"{past} at {moment.isoformat()} (applied at the next tick of the clock)"
        return f"{verb} in {format_timedelta(moment - now)} (at {moment.isoformat()})"

    if e.delayed_until is not None and e.retry_cooldown is not None:
        return [
            f"  retrying at {e.delayed_until.isoformat()} (a cooldown of "
            f"{e.retry_cooldown:g} s): " + when(e.delayed_until, "scheduled", "due to be scheduled")
        ]
    if e.delayed_until is not None:
        return [
            f"  delayed until {e.delayed_until.isoformat()}: "
            + when(e.delayed_until, "scheduled", "due to be scheduled")
        ]
    if e.deadline is not None:
        return ["  window " + when(e.deadline, "closes", "closed")]
    return []


def _waiting(
    state: SessionState, task: TaskConfig | None, instance: TaskInstance, index: ByTask
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
            task_instances=index.get(lack, ()),
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
        failed_at = "" if e.failure.failed_at is None else f" at {e.failure.failed_at.isoformat()}"
        reason = e.failure.message or e.failure.exception_type or "no reason recorded"
        lines.append(f"{name} failed{failed_at or at}: {reason}")
        lines.append(
            f"  exception type {e.failure.exception_type or '(not recorded)'}, retries "
            f"{e.failure.retries}, log level {e.failure.log_level}; replay it or skip it"
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
        if e.failure is not None:
            failed_at = (
                "" if e.failure.failed_at is None else f" at {e.failure.failed_at.isoformat()}"
            )
            reason = e.failure.message or "no reason recorded"
            lines.append(f"  it failed{failed_at}: {reason}")
            lines.append(
                f"  exception type {e.failure.exception_type or '(not recorded)'}, retries "
                f"{e.failure.retries}"
            )
    elif status is Status.FINISHED:
        lines.append(f"{name} finished{at}; its result fired {instance.task_name!r}")
    elif status is Status.EXPIRED:
        missing = instance.metadata.get("missing")
        what = (
            _and([repr(m) if isinstance(m, str) else json.dumps(m) for m in missing])
            if isinstance(missing, list) and missing
            else "its after condition"
        )
        deadline = instance.metadata.get("deadline")
        closed = f" (deadline {deadline})" if isinstance(deadline, str) else ""
        lines.append(f"{name} expired{at}: its within window closed{closed} before {what} fired")
        on_miss = instance.metadata.get("onMiss")
        if isinstance(on_miss, str):
            lines.append(f"  its expiry fired {on_miss!r}")
    else:
        lines.append(f"{name} is {status}{at}")
    if status is Status.UNSTARTED and task is not None and task.unless:
        unless = _unless_line(e)
        if unless is not None:
            lines.append(unless)
    if e.parent is not None:
        lines.append(f"  a replay of {e.parent} (replay depth {e.depth})")
    if e.attempts:
        lines.append(f"  earlier attempts ({len(e.attempts)}), oldest first:")
        lines.extend(f"    {attempt.words()}" for attempt in e.attempts)
    return lines
