"""Hypothesis properties of the engine. Each test's docstring states the exact property."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from triggers_core import engine
from triggers_core.engine.config import parse_configuration
from triggers_core.engine.effects import InstanceReplayed, ScheduleInstance, TriggerFired
from triggers_core.engine.state import SessionState, Status
from triggers_core.errors import TriggersError
from triggers_core.testing.simulate import run_simulation
from triggers_core.testing.strategies import (
    DEFAULT_TRIGGER_POOL,
    json_kwargs,
    session_states,
    task_configurations,
    trigger_names,
    triggers_used,
    workflows,
)

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
NAIVE = datetime(2024, 5, 6, 7, 8, 9)  # an invalid input on purpose
FAST = settings(max_examples=60, deadline=None)
Config = dict[str, dict[str, Any]]
TIME_KEYS = ("created", "lastModified", "timestamps")


def without_times(state: SessionState) -> dict[str, Any]:
    """Instances as comparable data, minus the simulated clock's timestamps."""
    return {
        name: (
            i.status,
            i.kwargs,
            i.unless_fired,
            {k: v for k, v in i.metadata.items() if k not in TIME_KEYS},
        )
        for name, i in state.instances.items()
    }


# -- outcome does not depend on order ------------------------------------------------------


@FAST
@given(st.data(), workflows())
def test_order_of_a_tasks_after_list_never_changes_the_outcome(
    data: st.DataObject, workflow: tuple[Config, list[tuple[str, dict[str, Any]]]]
) -> None:
    """Property: permuting every task's ``after`` list gives the *identical* simulation.

    Same instances (names, statuses, kwargs, metadata and timestamps), same
    latest kwargs and counters, same effects, same run order.
    """
    config, triggers = workflow
    shuffled = {
        name: {**d, "after": data.draw(st.permutations(d["after"]))} for name, d in config.items()
    }

    a = run_simulation(config, triggers)
    b = run_simulation(shuffled, triggers)

    assert a.state.instances == b.state.instances
    assert (a.state.latest_kwargs, a.state.counters) == (b.state.latest_kwargs, b.state.counters)
    assert (a.effects, a.ran) == (b.effects, b.ran)


@FAST
@given(
    st.data(),
    task_configurations(and_every=False, unless=False, max_tasks=5),
    st.dictionaries(st.sampled_from(DEFAULT_TRIGGER_POOL), json_kwargs(), min_size=1),
)
def test_firing_order_of_after_triggers_never_changes_the_outcome(
    data: st.DataObject, config: Config, kwargs_by_trigger: dict[str, dict[str, Any]]
) -> None:
    """Property: with no ``andEvery``/``unless``, firing a set of triggers once each, in
    any two orders, ends in the same state up to timestamps: same instances with
    the same statuses, kwargs, results and actual kwargs; same latest kwargs and
    counters. (Each task result is fixed per task, so cascades carry equal kwargs.)
    """
    order = list(kwargs_by_trigger.items())
    other = data.draw(st.permutations(order))
    results = {name: {"from": name} for name in config}

    a = run_simulation(config, order, results=results)
    b = run_simulation(config, other, results=results)

    assert without_times(a.state) == without_times(b.state)
    assert (a.state.latest_kwargs, a.state.counters) == (b.state.latest_kwargs, b.state.counters)


# -- scheduling ------------------------------------------------------------------------------


@FAST
@given(workflows(max_tasks=5))
def test_no_instance_is_ever_scheduled_twice(
    workflow: tuple[Config, list[tuple[str, dict[str, Any]]]],
) -> None:
    """Property: across a whole simulated run (cascades included) every instance name
    appears in at most one ``ScheduleInstance`` effect; every scheduled instance ran
    exactly once, in scheduling order, and finished.
    """
    sim = run_simulation(*workflow)

    counts = Counter(sim.scheduled)
    assert all(n == 1 for n in counts.values()), counts
    assert sim.ran == sim.scheduled
    assert {sim.state.instances[name].status for name in sim.ran} <= {Status.FINISHED}


@FAST
@given(workflows(max_tasks=5))
def test_an_abandoned_instance_is_never_scheduled(
    workflow: tuple[Config, list[tuple[str, dict[str, Any]]]],
) -> None:
    """Property: no instance that ends ``abandoned`` was ever scheduled; its only
    statuses were unstarted then abandoned, and all of its task's ``unless``
    triggers are recorded on it. Conversely no scheduled instance had all of its
    task's (non-empty) ``unless`` triggers recorded: abandoning wins.
    """
    sim = run_simulation(*workflow)
    tasks = sim.state.tasks

    for name in sim.scheduled:
        instance = sim.state.instances[name]
        unless = tasks[instance.task_name].unless_triggers
        assert not (unless and unless <= instance.unless_fired)

    for instance in sim.state.instances.values():
        if instance.status is Status.ABANDONED:
            assert instance.name not in sim.scheduled
            assert set(instance.metadata["timestamps"]) == {"unstarted", "abandoned"}
            assert tasks[instance.task_name].unless_triggers <= instance.unless_fired
            assert tasks[instance.task_name].unless_triggers


@FAST
@given(workflows(max_tasks=5, max_triggers=16))
def test_a_task_without_and_every_has_at_most_one_instance(
    workflow: tuple[Config, list[tuple[str, dict[str, Any]]]],
) -> None:
    """Property: in a simulated run (no replays), a task without ``andEvery`` has
    exactly one instance if any of its after/unless triggers fired, else none:
    re-firing its triggers never creates another.
    """
    sim = run_simulation(*workflow)
    fired = set(sim.fired)

    for task in sim.state.tasks.values():
        if task.and_every is None:
            expected = 1 if fired & (task.required_triggers | task.unless_triggers) else 0
            assert len(list(sim.state.instances_of(task.name))) == expected


@settings(max_examples=150, deadline=None)
@given(workflows(max_tasks=5, max_triggers=16, unless=False))
def test_and_every_instances_match_the_times_its_trigger_fired(
    workflow: tuple[Config, list[tuple[str, dict[str, Any]]]],
) -> None:
    """Property, for every task T with ``andEvery: e`` (no ``unless``) in a simulated run.

    Let P = how many times e fired (cascades included), F = whether any of T's
    triggers (after or e) fired, A = whether every trigger in T.after other than e
    fired at least once. Then:

    - T has exactly max(P, 1) instances if F, and none otherwise;
    - exactly P instances of T were scheduled if A, and none otherwise.

    (Before the first e, one instance collects the after triggers; the first e
    completes it, and each later e creates one more instance.)
    """
    config, triggers = workflow
    sim = run_simulation(config, triggers)
    fired = Counter(sim.fired)

    for task in sim.state.tasks.values():
        if task.and_every is None:
            continue
        every_count = fired[task.and_every]
        any_fired = any(fired[t] for t in task.required_triggers)
        all_after = all(fired[t] for t in task.after if t != task.and_every)
        instances = list(sim.state.instances_of(task.name))
        scheduled = [n for n in sim.scheduled if n.startswith(task.name + "#")]

        event(f"andEvery fired {min(every_count, 3)}+ times, after triggers all fired: {all_after}")
        assert len(instances) == (max(every_count, 1) if any_fired else 0)
        assert sim.state.counters.get(task.name, 0) == len(instances)
        assert len(scheduled) == (every_count if all_after else 0)


# -- fire-path cost ------------------------------------------------------------------------------


@FAST
@given(st.data(), session_states())
def test_fire_never_touches_resolved_history(data: st.DataObject, state: SessionState) -> None:
    """Property: for any reachable state s, trigger X and kwargs K,
    fire(s, X, K) and fire(s.without_resolved(), X, K) give the same header
    (tasks, latest kwargs, counters), the same effects, the same ``changed`` set
    and the same changed instances; every resolved instance of s is carried over
    untouched (the very same object).
    """
    trigger = data.draw(st.sampled_from([*triggers_used(state.tasks), "unused"]))
    kwargs = data.draw(json_kwargs())

    full = engine.fire(state, trigger, kwargs, now=NOW)
    lean = engine.fire(state.without_resolved(), trigger, kwargs, now=NOW)

    assert_same_outside_history(state, full, lean)


@FAST
@given(st.data(), session_states())
def test_finish_cascade_never_touches_resolved_history(
    data: st.DataObject, state: SessionState
) -> None:
    """Property: for any reachable state s with a running instance I and result R,
    finish(s, I, R) and finish(s.without_resolved(), I, R) agree exactly as in
    ``test_fire_never_touches_resolved_history``.
    """
    running = sorted(n for n, i in state.instances.items() if i.status is Status.RUNNING)
    if not running:
        return
    name = data.draw(st.sampled_from(running))
    result = data.draw(json_kwargs())

    full = engine.finish(state, name, result, now=NOW)
    lean = engine.finish(state.without_resolved(), name, result, now=NOW)

    assert_same_outside_history(state, full, lean)


def assert_same_outside_history(
    state: SessionState, full: engine.Transition, lean: engine.Transition
) -> None:
    assert full.state.tasks == lean.state.tasks
    assert full.state.latest_kwargs == lean.state.latest_kwargs
    assert full.state.counters == lean.state.counters
    assert full.effects == lean.effects
    assert full.changed == lean.changed
    for name in full.changed:
        assert full.state.instances[name] == lean.state.instances[name]
    for name, instance in state.instances.items():
        if instance.is_resolved:
            assert name not in full.changed
            assert full.state.instances[name] is instance


# -- totality: every operation raises a documented error or keeps the invariants --------------

Operation = Callable[[SessionState], engine.Transition]

BAD_KWARGS = st.sampled_from([[1], {"x": {1, 2}}, {"x": float("nan")}, {3: "k"}, "text"])

#: The statuses each operation applies to (the drawn instance has one most of the time).
FITS = {
    "mark_running": {Status.SCHEDULED},
    "finish": {Status.RUNNING},
    "fail": {Status.RUNNING, Status.SCHEDULED},
    "skip_self": {Status.RUNNING},
    "retry_self": {Status.RUNNING},
    "replay_failed": {Status.FAILED},
    "skip_failed": {Status.FAILED},
}


KINDS = [
    "fire",
    "fire",
    "update_configuration",
    "mark_running",
    "finish",
    "fail",
    "skip_self",
    "retry_self",
    "replay_failed",
    "skip_failed",
    "update_status",
    "update_metadata",
    "mark_logs_resolved",
]


#: Metadata whose keys sometimes collide with the engine's own parameters and fields.
METADATA = st.dictionaries(
    st.sampled_from(
        ["status", "ts", "instance", "exceptionType", "timestamps", "depth", "created", "result"]
    )
    | st.text(max_size=5),
    st.integers() | st.text(max_size=3),
    max_size=3,
)


def maybe_bad(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``good`` values, one time in eight a value JSON cannot represent."""
    return st.integers(0, 7).flatmap(lambda i: BAD_KWARGS if i == 0 else good)


def draw_operation(data: st.DataObject, state: SessionState) -> tuple[str, str | None, Operation]:
    """Draw one operation (possibly invalid): its kind, the trigger it fires, the call."""
    # often an operation that applies to some instance's status, else any operation
    fitting_kinds = [k for k in FITS if any(i.status in FITS[k] for i in state.instances.values())]
    kinds = st.sampled_from(KINDS)
    if fitting_kinds:
        kinds = st.sampled_from(fitting_kinds) | kinds
    kind = data.draw(kinds, label="kind")
    now = data.draw(st.sampled_from([NOW] * 9 + [NAIVE]), label="now")
    # mostly an instance the operation applies to, sometimes any name (or an unknown one)
    fitting = sorted(n for n, i in state.instances.items() if i.status in FITS.get(kind, Status))
    names = [*sorted(state.instances), "t_unknown#0"]
    if fitting and data.draw(st.integers(0, 4), label="fitting") > 0:
        names = fitting
    name = data.draw(st.sampled_from(names), label="instance")
    task_name = name.rsplit("#", 1)[0]

    if kind == "fire":
        trigger = data.draw(maybe_bad(st.sampled_from([*triggers_used(state.tasks), "unused"])))
        trigger = "" if isinstance(trigger, dict | list) else trigger  # the bad name
        kwargs = data.draw(maybe_bad(json_kwargs()))
        return kind, trigger, lambda s: engine.fire(s, trigger, kwargs, now=now)
    if kind == "update_configuration":
        config = data.draw(
            task_configurations(max_tasks=2)
            | st.builds(
                lambda d, n: {n: d},
                task_configurations(min_tasks=1, max_tasks=1).map(lambda c: next(iter(c.values()))),
                st.sampled_from([*sorted(state.tasks), "t_new"]),
            )
            | st.just({"t_bad": {"run": 1}})
        )
        return kind, None, lambda s: engine.update_configuration(s, config)
    if kind == "mark_running":
        return kind, None, lambda s: engine.mark_running(s, name, now=now)
    if kind == "finish":
        result = data.draw(maybe_bad(json_kwargs()) | st.none())
        return kind, task_name, lambda s: engine.finish(s, name, result, now=now)
    meta = data.draw(maybe_bad(METADATA))
    if kind == "fail":
        context = data.draw(maybe_bad(json_kwargs()))
        return (
            kind,
            None,
            lambda s: engine.fail(
                s,
                name,
                now=now,
                exception_type="x.E",
                exception_info="",
                exception_context=context,
                metadata=meta,
            ),
        )
    if kind == "skip_self":
        return kind, None, lambda s: engine.skip_self(s, name, now=now, metadata=meta)
    if kind == "retry_self":
        max_retries = data.draw(st.integers(0, 2))
        cooldown = data.draw(st.none() | st.floats(-1, 5, allow_nan=False))
        replacement = data.draw(
            st.none() | maybe_bad(st.dictionaries(trigger_names(), json_kwargs(), max_size=2))
        )
        return (
            kind,
            None,
            lambda s: engine.retry_self(
                s,
                name,
                now=now,
                max_retries=max_retries,
                cooldown=cooldown,
                replacement_kwargs=replacement,
                metadata=meta,
            ),
        )
    if kind == "replay_failed":
        replacement = data.draw(
            st.none()
            | maybe_bad(st.dictionaries(trigger_names(), json_kwargs(), max_size=2))
            | st.just({"a": 1})
        )
        return kind, None, lambda s: engine.replay_failed(s, name, replacement, now=now)
    if kind == "skip_failed":
        cascade = data.draw(st.booleans())
        result = data.draw(maybe_bad(json_kwargs()))
        return (
            kind,
            task_name if cascade else None,
            lambda s: engine.skip_failed(s, name, now=now, cascade=cascade, result=result),
        )
    if kind == "update_status":
        status = data.draw(st.sampled_from([*Status, *(s.value for s in Status), "bogus"]))
        cascade = data.draw(st.booleans())
        cascade_kwargs = data.draw(maybe_bad(json_kwargs()))
        return (
            kind,
            task_name if cascade else None,
            lambda s: engine.update_status(
                s,
                name,
                status,
                now=now,
                metadata=meta,
                cascade=cascade,
                cascade_kwargs=cascade_kwargs,
            ),
        )
    if kind == "update_metadata":
        return kind, None, lambda s: engine.update_metadata(s, name, meta, now=now)
    return kind, None, lambda s: engine.mark_logs_resolved(s, name, now=now)


def check_structure(state: SessionState) -> None:
    """Invariants every state the engine returns satisfies."""
    for name, instance in state.instances.items():
        assert name == instance.name
        task, _, number = name.rpartition("#")
        assert task == instance.task_name
        assert task in state.tasks
        assert number.isdigit()
        assert 0 <= int(number) < state.counters[task]
        assert isinstance(instance.status, Status)
        meta = instance.metadata
        assert {"created", "lastModified", "timestamps"} <= meta.keys()
        assert isinstance(meta["timestamps"], dict)
        assert instance.status.value in meta["timestamps"]
        assert isinstance(meta["depth"], int)
        assert all(isinstance(v, Mapping) for v in instance.kwargs.values())
    assert all(isinstance(v, Mapping) for v in state.latest_kwargs.values())


def check_transition(
    old: SessionState, t: engine.Transition, kind: str, trigger: str | None
) -> None:
    """Invariants of one successful transition ``old -> t.state``."""
    new = t.state
    check_structure(new)
    # nothing disappears; only `changed` instances differ, and all that differ are in it
    assert old.instances.keys() <= new.instances.keys()
    differing = {n for n, i in new.instances.items() if old.instances.get(n) != i}
    assert differing <= t.changed <= new.instances.keys()
    for name in new.instances.keys() - t.changed:
        assert new.instances[name] is old.instances[name]
    assert all(new.counters.get(k, 0) >= v for k, v in old.counters.items())

    schedules = [e for e in t.effects if isinstance(e, ScheduleInstance)]
    assert len({e.instance_name for e in schedules}) == len(schedules)
    for effect in schedules:
        instance = new.instances[effect.instance_name]
        task = new.tasks[instance.task_name]
        assert instance.status is Status.SCHEDULED
        assert effect.task_name == task.name
        assert (effect.run, effect.using) == (task.run, task.using)
        assert effect.trigger_kwargs == engine.task_kwargs(task, instance.kwargs)
        assert effect.depth == instance.metadata["depth"]
        if effect.depth == 0:  # replay clones may carry replacement kwargs instead
            assert task.required_triggers <= instance.kwargs.keys()
            assert not (task.unless and task.unless_triggers <= instance.unless_fired)

    fired = [e for e in t.effects if isinstance(e, TriggerFired)]
    replayed = [e for e in t.effects if isinstance(e, InstanceReplayed)]
    if replayed:
        # A clone is scheduled at once, or (a retry with a cooldown) waits on its timer.
        cooling = {
            e.clone_name
            for e in replayed
            if new.instances[e.clone_name].status is Status.UNSTARTED
            and "retryCooldown" in new.instances[e.clone_name].metadata
            and "delayedUntil" in new.instances[e.clone_name].metadata
        }
        assert [e.clone_name for e in replayed if e.clone_name not in cooling] == [
            e.instance_name for e in schedules
        ]
        for e in replayed:
            assert new.instances[e.instance_name].status is Status.REPLAYED
    if trigger is None:
        assert fired == []
        return
    assert [e.trigger_name for e in fired] == [trigger]
    assert fired[0].scheduled == tuple(e.instance_name for e in schedules)
    # after a fire, no unstarted instance of a task using the trigger is ready or abandonable
    for task in new.tasks.values():
        if not task.uses(trigger):
            continue
        for instance in new.instances_of(task.name):
            if instance.status is Status.UNSTARTED:
                assert not (task.unless and task.unless_triggers <= instance.unless_fired)
                if "delayedUntil" not in instance.metadata:  # else its timer schedules it
                    assert not task.required_triggers <= instance.kwargs.keys()
            elif (
                instance.status is Status.ABANDONED and old.instances.get(instance.name) != instance
            ):
                assert task.unless_triggers <= instance.unless_fired
    for name, instance in old.instances.items():
        if instance.is_resolved and kind == "fire":
            assert new.instances[name] is instance


DOCUMENTED_ERRORS = (TriggersError, ValueError)


@settings(max_examples=100, deadline=None)
@given(st.data(), session_states(min_triggers=3, max_triggers=10))
def test_every_transition_raises_a_documented_error_or_keeps_the_invariants(
    data: st.DataObject, start: SessionState
) -> None:
    """Property: from any reachable state, each of a random sequence of operations
    (any kind, valid or not: unknown instances, wrong statuses, bad kwargs, bad
    configs, naive datetimes, unknown statuses, negative cooldowns) either

    - raises a ``TriggersError`` or ``ValueError`` and leaves its input state
      equal to what it was, or
    - returns a transition whose state satisfies ``check_structure`` and whose
      changes satisfy ``check_transition``: no instance lost, only ``changed``
      instances differ, counters never decrease, every ``ScheduleInstance``
      names a scheduled instance with kwargs merged over ``withParams`` (and,
      unless it is a replay clone, every required trigger recorded), and after
      any fire (direct or cascade) no unstarted instance of a task using the
      trigger is ready or abandonable.

    The input state of a successful operation is never mutated either.
    """
    state = start
    for _ in range(data.draw(st.integers(1, 20), label="steps")):
        kind, trigger, operation = draw_operation(data, state)
        before = copy.deepcopy(state)
        try:
            t = operation(state)
        except DOCUMENTED_ERRORS as exc:
            event(f"{kind}: {type(exc).__name__}")
            assert state == before
            continue
        event(f"{kind}: ok")
        assert state == before
        check_transition(state, t, kind, trigger)
        if kind == "update_configuration":
            assert t.effects == ()
            assert t.state.instances == state.instances
        state = t.state


def test_parse_configuration_is_used_for_task_lookup() -> None:
    """Guard: the property helpers read the same parsed configs the engine does."""
    config = {"t_a": {"after": ["x"], "run": "A"}}
    assert triggers_used(parse_configuration(config)) == triggers_used(config) == ["t_a", "x"]
