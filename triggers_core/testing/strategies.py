"""Hypothesis strategies for Triggers: names, kwargs, configurations, trigger sequences, states.

Use them to property-test your own workflows together with
:func:`triggers_core.testing.simulate.simulate`::

    from hypothesis import given
    from triggers_core.testing.strategies import workflows
    from triggers_core.testing.simulate import simulate

    @given(workflows())
    def test_nothing_runs_twice(workflow):
        config, triggers = workflow
        simulate(config, triggers)

Configurations are drawn from a small pool of trigger names so that tasks
share triggers and cascade into each other (a task may wait for the name of a
task drawn *before* it, so cascades never form a cycle). This module needs
``hypothesis``; the rest of ``triggers_core`` does not.
"""

from __future__ import annotations

import json
import logging
import string
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from triggers_core import engine
from triggers_core.engine.config import (
    KNOWN_DIRECTIVES,
    TaskConfig,
    directive_typo,
    parse_configuration,
)
from triggers_core.engine.state import SessionState, Status
from triggers_core.testing.simulate import Advance, Failure

__all__ = [
    "DEFAULT_TRIGGER_POOL",
    "condition_entries",
    "failures",
    "json_kwargs",
    "json_values",
    "session_states",
    "task_configurations",
    "task_names",
    "task_outcomes",
    "timed_sequences",
    "trigger_names",
    "trigger_sequences",
    "triggers_used",
    "workflows",
]

#: Trigger names configurations draw from by default (small, so tasks share them).
DEFAULT_TRIGGER_POOL: tuple[str, ...] = ("a", "b", "c", "d", "e")

_NAME_ALPHABET = string.ascii_letters + string.digits + "_.:-"


def trigger_names(pool: Sequence[str] | None = None) -> st.SearchStrategy[str]:
    """Non-empty trigger names: sampled from ``pool`` if given, else short identifiers.

    Trigger names may be any non-empty string; these avoid ``#`` so that the
    same strategy can feed task names too.
    """
    if pool is not None:
        return st.sampled_from(tuple(pool))
    return st.text(alphabet=_NAME_ALPHABET, min_size=1, max_size=10)


def task_names() -> st.SearchStrategy[str]:
    """Valid task names: ``t_`` plus a short identifier (never ``#``)."""
    return st.text(alphabet=string.ascii_lowercase + string.digits + "_", max_size=6).map(
        lambda suffix: "t_" + suffix
    )


def json_values(*, max_leaves: int = 6) -> st.SearchStrategy[Any]:
    """JSON-compatible values (no NaN/infinity) that survive a JSON round trip unchanged."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**53), max_value=2**53)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8)
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=5), children, max_size=3)
        ),
        max_leaves=max_leaves,
    )


def json_kwargs(*, max_size: int = 3) -> st.SearchStrategy[dict[str, Any]]:
    """Trigger kwargs (or task results): a JSON-compatible mapping with string keys."""
    return st.dictionaries(st.text(max_size=5), json_values(), max_size=max_size)


@st.composite
def task_configurations(
    draw: st.DrawFn,
    /,
    *,
    trigger_pool: Sequence[str] = DEFAULT_TRIGGER_POOL,
    min_tasks: int = 1,
    max_tasks: int = 4,
    and_every: bool = True,
    unless: bool = True,
    cascades: bool = True,
    with_params: bool = True,
    using: bool = True,
    extras: bool = True,
    groups: bool = False,
    timed: bool = False,
) -> dict[str, dict[str, Any]]:
    """Valid configurations ``{task_name: directives}`` that ``parse_configuration`` accepts.

    Each task waits for 1-3 triggers from ``trigger_pool`` and, with
    ``cascades``, the names of tasks drawn before it (so cascades are acyclic
    and every simulation terminates). The flags switch the optional directives
    on or off: ``andEvery``, ``unless``, ``withParams``, ``using`` and extra
    keys (kept verbatim as extras). With ``groups``, ``after`` and ``unless``
    entries may be condition groups (``anyOf``, ``atLeast``; see
    :func:`condition_entries`). With ``timed`` (off by default, so existing
    properties keep their meaning), tasks may get ``within`` (and then maybe an
    ``onMiss`` trigger from the pool, never one of their own) and ``delay``,
    of a few seconds to a few hours: pair it with :func:`timed_sequences`.
    """
    names = draw(st.lists(task_names(), min_size=min_tasks, max_size=max_tasks, unique=True))
    config: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(names):
        available = [*trigger_pool, *(names[:index] if cascades else [])]
        pick = st.sampled_from(available)
        directives: dict[str, Any] = {}
        every = draw(st.none() | pick) if and_every else None
        entries = condition_entries(pick) if groups else pick
        after = draw(
            st.lists(entries, min_size=0 if every else 1, max_size=3, unique_by=_entry_key)
        )
        directives["after"] = after
        directives["run"] = draw(st.sampled_from(("PassThruTask", "DevNullTask", "score.Compute")))
        if every is not None:
            directives["andEvery"] = every
        if unless and draw(st.booleans()):
            directives["unless"] = draw(
                st.lists(entries, min_size=1, max_size=2, unique_by=_entry_key)
            )
        if with_params and draw(st.booleans()):
            named = [e for e in after if isinstance(e, str)]
            targets = st.sampled_from([*named, *([every] if every else []), *trigger_pool])
            directives["withParams"] = draw(st.dictionaries(targets, json_kwargs(), max_size=2))
        if using and draw(st.booleans()):
            directives["using"] = draw(st.sampled_from(("threading", "celery")))
        if timed:
            _timed_directives(draw, directives, trigger_pool)
        if extras and draw(st.booleans()):
            keys = st.text(alphabet=string.ascii_letters, min_size=1, max_size=6).filter(
                lambda key: key not in KNOWN_DIRECTIVES and directive_typo(key) is None
            )
            directives.update(draw(st.dictionaries(keys, json_values(), max_size=2)))
        config[name] = directives
    return config


def _entry_key(entry: Any) -> str:
    return json.dumps(entry, sort_keys=True)


def condition_entries(
    names: st.SearchStrategy[str], *, max_depth: int = 2
) -> st.SearchStrategy[Any]:
    """``after``/``unless`` entries in JSON form: a name from ``names``, or a group.

    Groups (``{"anyOf": [...]}``, ``{"atLeast": N, "of": [...]}``) hold 1-3
    distinct members and nest up to ``max_depth`` deep.
    """
    if max_depth <= 0:
        return names
    members = st.lists(
        condition_entries(names, max_depth=max_depth - 1),
        min_size=1,
        max_size=3,
        unique_by=_entry_key,
    )

    def group(items: list[Any]) -> st.SearchStrategy[dict[str, Any]]:
        return st.just({"anyOf": items}) | st.integers(1, len(items)).map(
            lambda n: {"atLeast": n, "of": items}
        )

    return names | members.flatmap(group)


def _parsed(config: Mapping[str, Any]) -> dict[str, TaskConfig]:
    if config and all(isinstance(v, TaskConfig) for v in config.values()):
        return dict(config)
    return parse_configuration(config)


#: Durations timed configurations and sequences draw from.
_DURATIONS = ("5s", "90s", "15m", "PT1H", "2h")


def _timed_directives(
    draw: st.DrawFn, directives: dict[str, Any], trigger_pool: Sequence[str]
) -> None:
    if draw(st.booleans()):
        directives["within"] = draw(st.sampled_from(_DURATIONS))
        # onMiss may not be one of the task's own after (or andEvery) names.
        candidates = [t for t in trigger_pool if not _names_in(directives, t)]
        wants_on_miss: bool = draw(st.booleans())
        if candidates and wants_on_miss:
            directives["onMiss"] = draw(st.sampled_from(candidates))
    if draw(st.booleans()):
        directives["delay"] = draw(st.sampled_from(_DURATIONS))


def _names_in(directives: Mapping[str, Any], trigger: str) -> bool:
    """True if ``trigger`` is a name anywhere in ``after`` (groups too) or ``andEvery``."""
    return json.dumps(trigger) in json.dumps([directives["after"], directives.get("andEvery")])


def timed_sequences(
    config: Mapping[str, Any],
    *,
    min_size: int = 0,
    max_size: int = 12,
    kwargs: st.SearchStrategy[dict[str, Any]] | None = None,
) -> st.SearchStrategy[list[Any]]:
    """Steps for :func:`~triggers_core.testing.simulate`: fires (as
    :func:`trigger_sequences` draws them) mixed with clock moves
    (:class:`~triggers_core.testing.Advance`, a few seconds to a day), so that
    windows close and delays end between fires."""
    names = [*triggers_used(config), "unused"]
    kwargs_strategy = json_kwargs() if kwargs is None else kwargs
    fire = st.tuples(st.sampled_from(names), kwargs_strategy)
    move = st.builds(Advance, st.sampled_from((*_DURATIONS, "1d")))
    return st.lists(fire | move, min_size=min_size, max_size=max_size)


def triggers_used(config: Mapping[str, Any]) -> list[str]:
    """Every trigger name ``config`` reacts to, plus its task names (cascades), sorted.

    ``config`` is raw directives or parsed :class:`TaskConfig` values.
    """
    tasks = _parsed(config)
    names: set[str] = set(tasks)
    for task in tasks.values():
        names.update(task.after_names)
        names.update(task.unless_names)
        if task.and_every is not None:
            names.add(task.and_every)
    return sorted(names)


def trigger_sequences(
    config: Mapping[str, Any],
    *,
    min_size: int = 0,
    max_size: int = 12,
    kwargs: st.SearchStrategy[dict[str, Any]] | None = None,
    extra_names: Sequence[str] = ("unused",),
) -> st.SearchStrategy[list[tuple[str, dict[str, Any]]]]:
    """Lists of ``(trigger_name, kwargs)`` to fire against ``config``.

    Names are drawn from :func:`triggers_used` (so task names fire too, as if
    by hand, beside their cascades) plus ``extra_names`` that no task uses.
    """
    names = [*triggers_used(config), *extra_names]
    kwargs_strategy = json_kwargs() if kwargs is None else kwargs
    return st.lists(
        st.tuples(st.sampled_from(names), kwargs_strategy), min_size=min_size, max_size=max_size
    )


def failures() -> st.SearchStrategy[Failure]:
    """Simulated task failures (built-in and custom exception types, with a context)."""
    return st.builds(
        Failure,
        exception_type=st.sampled_from(
            ("builtins.RuntimeError", "builtins.TimeoutError", "myapp.errors.RemoteError")
        ),
        message=st.text(max_size=10),
        context=json_kwargs(max_size=2),
    )


def task_outcomes(
    config: Mapping[str, Any], *, failure_rate: float = 0.3
) -> st.SearchStrategy[dict[str, dict[str, Any] | Failure]]:
    """``{task_name: outcome}`` for ``simulate(results=...)``: a result mapping or a Failure.

    About ``failure_rate`` of the tasks fail (every instance of a task gets the
    same outcome; key instance names such as ``"t_a#0"`` to fail one attempt only).
    """
    if not 0 <= failure_rate <= 1:
        raise ValueError(f"failure_rate must be between 0 and 1, got {failure_rate!r}")

    def pick(roll: float) -> st.SearchStrategy[dict[str, Any] | Failure]:
        return failures() if roll < failure_rate else json_kwargs()

    outcome = st.floats(0, 1, exclude_max=True).flatmap(pick)
    return st.fixed_dictionaries(dict.fromkeys(sorted(_parsed(config)), outcome))


@st.composite
def workflows(
    draw: st.DrawFn,
    /,
    *,
    min_triggers: int = 0,
    max_triggers: int = 12,
    **config_options: Any,
) -> tuple[dict[str, dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    """``(config, triggers)`` pairs: a :func:`task_configurations` and a sequence for it.

    ``config_options`` are passed to :func:`task_configurations`.
    """
    config = draw(task_configurations(**config_options))
    triggers = draw(trigger_sequences(config, min_size=min_triggers, max_size=max_triggers))
    return config, triggers


# -- session states -------------------------------------------------------------------

#: What happens to an instance once it is scheduled, when drawing session states.
_OUTCOMES = ("finish", "fail", "skip", "retry", "stay scheduled", "stay running")


@st.composite
def session_states(
    draw: st.DrawFn,
    /,
    *,
    min_triggers: int = 0,
    max_triggers: int = 8,
    max_runs: int = 30,
    **config_options: Any,
) -> SessionState:
    """Reachable session states, covering every status.

    Draws a configuration and a trigger sequence, fires it through the engine,
    and gives each scheduled instance a drawn outcome (finish with a result,
    fail, skip itself, retry, or stay scheduled/running); afterwards an operator
    may replay or skip failed instances, force statuses, edit metadata and mark
    logs resolved. Between ``min_triggers`` and ``max_triggers`` triggers fire
    and at most ``max_runs`` instances run. ``config_options`` go to
    :func:`task_configurations`.
    """
    config, triggers = draw(
        workflows(min_triggers=min_triggers, max_triggers=max_triggers, **config_options)
    )
    clock = _clock()
    state = engine.update_configuration(SessionState(), config).state
    queue: deque[str] = deque()

    def apply(transition: engine.Transition) -> None:
        nonlocal state
        state = transition.state
        queue.extend(transition.scheduled)

    runs = 0
    for trigger_name, trigger_kwargs in triggers:
        apply(engine.fire(state, trigger_name, trigger_kwargs, now=clock()))
        while queue and runs < max_runs:
            runs += 1
            _run_one(draw, state, queue.popleft(), clock, apply)

    for name in sorted(state.instances):
        action = draw(st.sampled_from(("none", "none", "operator", "force")))
        instance = state.instances[name]
        if action == "operator" and instance.status is Status.FAILED:
            if draw(st.booleans()):
                replacement = draw(st.none() | st.dictionaries(trigger_names(), json_kwargs()))
                apply(engine.replay_failed(state, name, replacement, now=clock()))
            else:
                cascade = draw(st.booleans())
                result = draw(json_kwargs())
                apply(engine.skip_failed(state, name, now=clock(), cascade=cascade, result=result))
        elif action == "operator":
            apply(engine.update_metadata(state, name, draw(json_kwargs()), now=clock()))
            if draw(st.booleans()):
                apply(engine.mark_logs_resolved(state, name, now=clock()))
        elif action == "force":
            status = draw(st.sampled_from(Status))
            apply(engine.update_status(state, name, status, now=clock()))
    return state


def _clock() -> Callable[[], datetime]:
    ticks = iter(range(10**9))
    start = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    return lambda: start + timedelta(microseconds=next(ticks))


def _run_one(
    draw: st.DrawFn,
    state: SessionState,
    name: str,
    clock: Callable[[], datetime],
    apply: Callable[[engine.Transition], None],
) -> None:
    outcome = draw(st.sampled_from(_OUTCOMES))
    if outcome == "stay scheduled":
        return
    running = engine.mark_running(state, name, now=clock())
    apply(running)
    state = running.state
    level = draw(st.sampled_from((logging.NOTSET, logging.INFO, logging.WARNING, logging.ERROR)))
    if outcome == "finish":
        result = draw(json_kwargs())
        apply(engine.finish(state, name, result, now=clock(), log_level=level))
    elif outcome == "fail":
        apply(
            engine.fail(
                state,
                name,
                now=clock(),
                exception_type="builtins.RuntimeError",
                exception_info="Traceback (most recent call last):\nRuntimeError: boom",
                exception_context=draw(json_kwargs()),
                log_level=max(level, logging.ERROR),
            )
        )
    elif outcome == "skip":
        apply(engine.skip_self(state, name, now=clock(), metadata=draw(json_kwargs())))
    elif outcome == "retry":
        apply(
            engine.retry_self(
                state,
                name,
                now=clock(),
                max_retries=draw(st.integers(0, 2)),
                cooldown=draw(st.none() | st.floats(0, 60)),
            )
        )
