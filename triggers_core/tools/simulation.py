"""A pure simulation of a session: fire triggers, and every ready instance runs at once.

``simulate(config, steps)`` applies the configuration to an empty session, then
performs each step through :mod:`triggers_core.engine`: a step fires a trigger
(``"name"`` or ``("name", kwargs)``), or acts as an operator on a failed
instance (:class:`ReplayFailed`, :class:`SkipFailed`), or moves the simulated
clock on (:class:`Advance`: ``within`` windows close, delays end). Every instance a step
schedules immediately runs (``mark_running`` then its outcome) and its cascade
is processed breadth-first (instances run in the order the engine scheduled
them) before the next step. There is no storage, no runner, no thread and no
clock: the same inputs always give the same state, so users can property-test
their own workflows -- failure and recovery paths included -- without a broker
or a database::

    state = simulate(
        {"t_a": {"after": ["x"], "run": "a"}, "t_b": {"after": ["t_a"], "run": "b"}},
        [("x", {"n": 1})],
        results={"t_a": {"score": 3}},
    )
    assert state.instances["t_b#0"].kwargs == {"t_a": {"score": 3}}

An instance's outcome comes from ``results``: ``{name: outcome}`` keyed by
instance name (``"t_a#0"``) or task name (``"t_a"``), or a function
``fn(instance_name, trigger_kwargs)``. An outcome is a mapping (the result;
``None`` means ``{}``) or a :class:`Failure`; a function may also raise, as a
task would: ``task.skip()``'s :class:`~triggers_core.tasks.SkipTask` skips,
``task.retry()``'s :class:`~triggers_core.tasks.RetryTask` retries (up to
``max_retries``; a retry with a cooldown runs at the first :class:`Advance`
step that reaches the end of its cooldown), any other exception fails the
instance with its ``module.Name``, traceback and ``with_context`` dict::

    state = simulate(
        CONFIG,
        ["x", ReplayFailed("t_a#0"), "y"],
        results={"t_a#0": Failure("builtins.TimeoutError"), "t_a": {"score": 3}},
    )

:func:`run_simulation` returns the same state plus the order instances ran,
every trigger fired (cascades included) and every effect.

The testing toolbox offers the same names (:mod:`triggers_core.testing`,
:mod:`triggers_core.testing.simulate`); this module is where they live, so that
:mod:`~triggers_core.tools.explain` and the command line use them without importing
the toolbox (which registers the sample tasks).

Cost: each step and each instance run is one engine transition, whose cost
is the engine's (the instances the fire reaches, not the session's size);
the simulation adds O(1) per effect and keeps the triggers fired and the
instances run in lists.
"""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from triggers_core import engine
from triggers_core.engine.config import TaskConfig
from triggers_core.engine.durations import parse_duration
from triggers_core.engine.effects import Effect, ScheduleInstance, TriggerFired
from triggers_core.engine.state import SessionState
from triggers_core.errors import TriggersError
from triggers_core.runtime.manager import exception_type_name
from triggers_core.runtime.tasks import RetryTask, SkipTask, exception_context

__all__ = [
    "DEFAULT_START",
    "Advance",
    "Failure",
    "Outcome",
    "ReplayFailed",
    "ResultFunction",
    "Results",
    "Simulation",
    "SimulationLimitExceeded",
    "SkipFailed",
    "Step",
    "TriggerSpec",
    "run_simulation",
    "simulate",
]

#: The simulated clock starts here unless ``now`` is given; it advances 1 µs per step.
DEFAULT_START = datetime(2000, 1, 1, tzinfo=UTC)

_TICK = timedelta(microseconds=1)


@attrs.frozen
class Failure:
    """A simulated task failure: the instance ends ``failed`` with these details.

    ``exception_type`` is recorded as ``exceptionType`` (``module.Name``),
    ``message`` ends the recorded ``exceptionInfo``, ``context`` becomes
    ``exceptionContext``.
    """

    exception_type: str = "builtins.RuntimeError"
    message: str = "simulated failure"
    context: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ReplayFailed:
    """A step: an operator replays a failed instance (``replay_failed_instance``)."""

    instance: str
    replacement_kwargs: Mapping[str, Any] | None = None


@attrs.frozen
class SkipFailed:
    """A step: an operator skips a failed instance (``skip_failed_instance``)."""

    instance: str
    cascade: bool = False
    result: Mapping[str, Any] | None = None


@attrs.frozen
class Advance:
    """A step: the simulated clock moves on by ``by`` (``"2h"``, ``"PT15M"``, seconds or a
    timedelta), then every timer due then applies (``within`` windows close and fire
    their ``onMiss``, delays end), and what that schedules runs."""

    by: str | float | timedelta

    @property
    def delta(self) -> timedelta:
        """``by`` as a timedelta (a duration string is parsed like a directive's)."""
        by = self.by
        if isinstance(by, timedelta):
            delta = by
        elif isinstance(by, str):
            delta = parse_duration(by).delta
        elif isinstance(by, int | float) and not isinstance(by, bool):
            delta = timedelta(seconds=by)
        else:
            raise TypeError(f"Advance by a duration ('2h'), seconds or a timedelta, got {by!r}")
        if delta < timedelta(0):
            raise ValueError(f"the simulated clock only moves forward, got {by!r}")
        return delta


#: What a simulated task does: return a result (``None`` means ``{}``) or fail.
Outcome = Mapping[str, Any] | Failure | None

#: ``(instance_name, trigger_kwargs) -> outcome``; may also raise like a task (see module doc).
ResultFunction = Callable[[str, Mapping[str, Any]], Outcome]

#: ``{instance_or_task_name: outcome}`` (others return ``{}``) or a :data:`ResultFunction`.
Results = Mapping[str, Outcome] | ResultFunction

#: A trigger to fire: its name alone (kwargs ``{}``) or ``(name, kwargs)``.
TriggerSpec = str | tuple[str, Mapping[str, Any] | None]

#: One step of a simulation: fire a trigger, or replay or skip a failed instance.
Step = TriggerSpec | ReplayFailed | SkipFailed | Advance


class SimulationLimitExceeded(TriggersError, RuntimeError):
    """More than ``max_runs`` instances ran (a guard for very large workflows).

    Configurations in which tasks would create each other without end
    (``andEvery`` cycles through task names) are refused before anything runs,
    with a :class:`~triggers_core.errors.ConfigurationError` naming the cycle.
    """


@attrs.frozen
class Simulation:
    """What a simulation did, step by step."""

    #: The final session state.
    state: SessionState
    #: Instance names in the order they ran (each ran exactly once).
    ran: tuple[str, ...]
    #: Trigger names in the order they fired, cascades included.
    fired: tuple[str, ...]
    #: Every effect of every transition, in order.
    effects: tuple[Effect, ...]

    @property
    def scheduled(self) -> tuple[str, ...]:
        """Names of every instance scheduled, in the order they were scheduled."""
        return tuple(e.instance_name for e in self.effects if isinstance(e, ScheduleInstance))


class _Clock:
    def __init__(self, start: datetime) -> None:
        self._next = start

    def move(self, delta: timedelta) -> None:
        self._next += delta

    def __call__(self) -> datetime:
        now = self._next
        self._next = now + _TICK
        return now


def _split(spec: TriggerSpec) -> tuple[str, Mapping[str, Any] | None]:
    if isinstance(spec, str):
        return spec, None
    name, kwargs = spec
    return name, kwargs


def _result_function(results: Results | None) -> ResultFunction:
    if results is None:
        return lambda _name, _kwargs: {}
    if isinstance(results, Mapping):
        table = results

        def lookup(name: str, _kwargs: Mapping[str, Any]) -> Outcome:
            if name in table:
                return table[name]
            return table.get(name.rsplit("#", 1)[0])

        return lookup
    return results


def _outcome(
    state: SessionState,
    name: str,
    result_for: ResultFunction,
    kwargs: Mapping[str, Any],
    *,
    now: datetime,
    max_retries: int,
) -> engine.Transition:
    """What the engine records when instance ``name`` runs with its simulated outcome."""
    try:
        outcome = result_for(name, kwargs)
    except SkipTask as skip:
        return engine.skip_self(state, name, now=now, metadata=skip.metadata)
    except RetryTask as retry:
        cause = retry.exc
        return engine.retry_self(
            state,
            name,
            now=now,
            max_retries=max_retries,
            exception_type=exception_type_name(cause or retry),
            exception_info="".join(traceback.format_exception(cause or retry)),
            exception_context=exception_context(cause) if cause else None,
            metadata=retry.metadata,
            replacement_kwargs=retry.replacement_kwargs,
            cooldown=retry.cooldown,
        )
    except Exception as exc:
        return engine.fail(
            state,
            name,
            now=now,
            exception_type=exception_type_name(exc),
            exception_info="".join(traceback.format_exception(exc)),
            exception_context=exception_context(exc),
        )
    if isinstance(outcome, Failure):
        return engine.fail(
            state,
            name,
            now=now,
            exception_type=outcome.exception_type,
            exception_info=f"{outcome.exception_type}: {outcome.message} (simulated)",
            exception_context=outcome.context,
        )
    return engine.finish(state, name, outcome, now=now)


def run_simulation(
    config: Mapping[str, Any] | Mapping[str, TaskConfig],
    triggers: Iterable[Step],
    *,
    results: Results | None = None,
    now: datetime | None = None,
    state: SessionState | None = None,
    max_runs: int = 10_000,
    max_retries: int = 3,
) -> Simulation:
    """Simulate a session and report every step (see the module docstring).

    ``config`` is applied with :func:`~triggers_core.engine.update_configuration`
    on ``state`` (default: an empty session). ``triggers`` are the steps:
    trigger names, ``(name, kwargs)`` pairs, :class:`ReplayFailed` and
    :class:`SkipFailed`. ``results`` gives each instance's outcome:
    ``{instance_or_task_name: outcome}`` or ``fn(instance_name,
    trigger_kwargs)`` where ``trigger_kwargs`` are the kwargs the task would
    receive (merged with ``withParams``); an outcome is a mapping or a
    :class:`Failure`, and a function may raise like a task. ``max_retries`` is
    every task's retry limit. ``now`` (timezone-aware) starts the simulated clock.

    Raises whatever the engine raises for bad input (``ConfigurationError``,
    ``InvalidKwargsError``, ``InvalidTransitionError`` for replaying or
    skipping an instance that has not failed, ...), and
    :class:`SimulationLimitExceeded` once more than ``max_runs`` instances have run.
    """
    start = DEFAULT_START if now is None else now
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError(f"now must be a timezone-aware datetime, got naive {start!r}")
    clock = _Clock(start)
    result_for = _result_function(results)
    current = engine.update_configuration(state or SessionState(), config).state
    ran: list[str] = []
    effects: list[Effect] = []
    pending: dict[str, Mapping[str, Any]] = {}
    queue: deque[str] = deque()

    def apply(transition: engine.Transition) -> SessionState:
        for effect in transition.effects:
            if isinstance(effect, ScheduleInstance):
                pending[effect.instance_name] = effect.trigger_kwargs
                queue.append(effect.instance_name)
        effects.extend(transition.effects)
        return transition.state

    for step in triggers:
        if isinstance(step, ReplayFailed):
            label = f"replaying {step.instance!r}"
            transition = engine.replay_failed(
                current, step.instance, step.replacement_kwargs, now=clock()
            )
        elif isinstance(step, SkipFailed):
            label = f"skipping {step.instance!r}"
            transition = engine.skip_failed(
                current, step.instance, now=clock(), cascade=step.cascade, result=step.result
            )
        elif isinstance(step, Advance):
            label = f"advancing the clock by {step.by!r}"
            clock.move(step.delta)
            transition = engine.advance(current, clock())
        else:
            trigger_name, trigger_kwargs = _split(step)
            label = f"firing {trigger_name!r}"
            transition = engine.fire(current, trigger_name, trigger_kwargs, now=clock())
        current = apply(transition)
        while queue:
            if len(ran) >= max_runs:
                raise SimulationLimitExceeded(
                    f"more than {max_runs} instances ran after {label}; "
                    "pass a larger max_runs for a larger workflow"
                )
            name = queue.popleft()
            current = apply(engine.mark_running(current, name, now=clock()))
            kwargs = pending.pop(name)
            current = apply(
                _outcome(current, name, result_for, kwargs, now=clock(), max_retries=max_retries)
            )
            ran.append(name)

    fired = tuple(e.trigger_name for e in effects if isinstance(e, TriggerFired))
    return Simulation(state=current, ran=tuple(ran), fired=fired, effects=tuple(effects))


def simulate(
    config: Mapping[str, Any] | Mapping[str, TaskConfig],
    triggers: Iterable[Step],
    *,
    results: Results | None = None,
    now: datetime | None = None,
    max_retries: int = 3,
) -> SessionState:
    """Apply ``config``, perform ``triggers`` in order, run everything; return the final state.

    Each step is a trigger name, a ``(name, kwargs)`` pair, or an operator's
    :class:`ReplayFailed` / :class:`SkipFailed`. Every scheduled instance runs
    immediately with its outcome from ``results`` (``{instance_or_task_name:
    mapping or Failure}``, or ``fn(instance_name, trigger_kwargs)`` that
    returns one or raises like a task; default ``{}``); cascades are
    processed breadth-first, deterministically. Pure: no I/O, no threads, no
    clock (``now`` starts a simulated one). Use :func:`run_simulation` to also
    see the order instances ran.
    """
    return run_simulation(config, triggers, results=results, now=now, max_retries=max_retries).state
