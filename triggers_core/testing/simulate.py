"""A pure simulation of a session: fire triggers, and every ready instance runs at once.

``simulate(config, triggers)`` applies the configuration to an empty session,
then fires each trigger through :mod:`triggers_core.engine`. Every instance a
transition schedules immediately runs (``mark_running`` then ``finish``) with
the result the caller chose, and its cascade is processed breadth-first
(instances run in the order the engine scheduled them) before the next trigger
fires. There is no storage, no runner, no thread and no clock: the same inputs
always give the same state, so users can property-test their own workflows
without a broker or a database::

    state = simulate(
        {"t_a": {"after": ["x"], "run": "a"}, "t_b": {"after": ["t_a"], "run": "b"}},
        [("x", {"n": 1})],
        results={"t_a": {"score": 3}},
    )
    assert state.instances["t_b#0"].kwargs == {"t_a": {"score": 3}}

:func:`run_simulation` returns the same state plus the order instances ran,
every trigger fired (cascades included) and every effect.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from triggers_core import engine
from triggers_core.config import TaskConfig
from triggers_core.effects import Effect, ScheduleInstance, TriggerFired
from triggers_core.errors import TriggersError
from triggers_core.state import SessionState

__all__ = [
    "DEFAULT_START",
    "ResultFunction",
    "Results",
    "Simulation",
    "SimulationLimitExceeded",
    "TriggerSpec",
    "run_simulation",
    "simulate",
]

#: The simulated clock starts here unless ``now`` is given; it advances 1 µs per step.
DEFAULT_START = datetime(2000, 1, 1, tzinfo=UTC)

_TICK = timedelta(microseconds=1)

#: ``(instance_name, trigger_kwargs) -> result``; ``None`` means ``{}``.
ResultFunction = Callable[[str, Mapping[str, Any]], Mapping[str, Any] | None]

#: Either ``{task_name: result}`` (tasks not listed return ``{}``) or a :data:`ResultFunction`.
Results = Mapping[str, Mapping[str, Any] | None] | ResultFunction

#: A trigger to fire: its name alone (kwargs ``{}``) or ``(name, kwargs)``.
TriggerSpec = str | tuple[str, Mapping[str, Any] | None]


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

        def lookup(name: str, _kwargs: Mapping[str, Any]) -> Mapping[str, Any] | None:
            return table.get(name.rsplit("#", 1)[0])

        return lookup
    return results


def run_simulation(
    config: Mapping[str, Any] | Mapping[str, TaskConfig],
    triggers: Iterable[TriggerSpec],
    *,
    results: Results | None = None,
    now: datetime | None = None,
    state: SessionState | None = None,
    max_runs: int = 10_000,
) -> Simulation:
    """Simulate a session and report every step (see the module docstring).

    ``config`` is applied with :func:`~triggers_core.engine.update_configuration`
    on ``state`` (default: an empty session). ``results`` gives each task's
    result: ``{task_name: mapping}`` or ``fn(instance_name, trigger_kwargs)``
    where ``trigger_kwargs`` are the kwargs the task would receive (merged with
    ``withParams``). ``now`` (timezone-aware) starts the simulated clock.

    Raises whatever the engine raises for bad input (``ConfigurationError``,
    ``InvalidKwargsError``, ...), and :class:`SimulationLimitExceeded` once more
    than ``max_runs`` instances have run.
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

    for spec in triggers:
        trigger_name, trigger_kwargs = _split(spec)
        current = apply(engine.fire(current, trigger_name, trigger_kwargs, now=clock()))
        while queue:
            if len(ran) >= max_runs:
                raise SimulationLimitExceeded(
                    f"more than {max_runs} instances ran after firing {trigger_name!r}; "
                    "pass a larger max_runs for a larger workflow"
                )
            name = queue.popleft()
            current = apply(engine.mark_running(current, name, now=clock()))
            result = result_for(name, pending.pop(name))
            current = apply(engine.finish(current, name, result, now=clock()))
            ran.append(name)

    fired = tuple(e.trigger_name for e in effects if isinstance(e, TriggerFired))
    return Simulation(state=current, ran=tuple(ran), fired=fired, effects=tuple(effects))


def simulate(
    config: Mapping[str, Any] | Mapping[str, TaskConfig],
    triggers: Iterable[TriggerSpec],
    *,
    results: Results | None = None,
    now: datetime | None = None,
) -> SessionState:
    """Apply ``config``, fire ``triggers`` in order, run everything; return the final state.

    Each trigger is a name or a ``(name, kwargs)`` pair. Every scheduled instance
    runs immediately and finishes with its result from ``results``
    (``{task_name: mapping}``, or ``fn(instance_name, trigger_kwargs)``;
    default ``{}``); cascades are processed breadth-first, deterministically.
    Pure: no I/O, no threads, no clock (``now`` starts a simulated one).
    Use :func:`run_simulation` to also see the order instances ran.
    """
    return run_simulation(config, triggers, results=results, now=now).state
