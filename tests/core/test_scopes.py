"""The narrowed working set is exact: properties of :mod:`triggers_core.scopes`.

Each test's docstring states the exact property.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from triggers_core import TriggerManager, engine
from triggers_core.errors import TriggersError
from triggers_core.scopes import (
    HEADER_ONLY,
    Changes,
    Scope,
    Selector,
    configuration_scope,
    fire_scope,
    instance_scope,
    narrowed,
    unsettled_of,
)
from triggers_core.state import SessionState, Status
from triggers_core.storage import Snapshot, Storage, Version
from triggers_core.testing.sample_tasks import DevNullTask
from triggers_core.testing.storage_contract import RecordingRunner
from triggers_core.testing.strategies import (
    json_kwargs,
    session_states,
    task_configurations,
    triggers_used,
)

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
Operation = Callable[[SessionState], engine.Transition]


def draw_scoped_operation(
    data: st.DataObject, state: SessionState
) -> tuple[str, Operation, Scope | Selector]:
    """Any operation the manager performs, with the scope the manager loads for it."""
    kind = data.draw(
        st.sampled_from(
            [
                "fire",
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
                "update_status",
                "update_metadata",
                "mark_logs_resolved",
            ]
        ),
        label="kind",
    )
    name = data.draw(st.sampled_from([*sorted(state.instances), "t_unknown#0"]), label="name")
    own = instance_scope(name, cascade=False)
    if kind == "fire":
        trigger = data.draw(st.sampled_from([*triggers_used(state.tasks), "unused"]))
        kwargs = data.draw(json_kwargs())
        return kind, lambda s: engine.fire(s, trigger, kwargs, now=NOW), fire_scope(trigger)
    if kind == "update_configuration":
        config = data.draw(
            task_configurations(max_tasks=2)
            | st.builds(
                lambda d, n: {n: d},
                task_configurations(min_tasks=1, max_tasks=1).map(lambda c: next(iter(c.values()))),
                st.sampled_from([*sorted(state.tasks), "t_new"]),
            )
        )
        return (
            kind,
            lambda s: engine.update_configuration(s, config),
            configuration_scope(config),
        )
    if kind == "mark_running":
        return kind, lambda s: engine.mark_running(s, name, now=NOW), own
    if kind == "finish":
        result = data.draw(json_kwargs())
        return (
            kind,
            lambda s: engine.finish(s, name, result, now=NOW),
            instance_scope(name, cascade=True),
        )
    if kind == "fail":
        return (
            kind,
            lambda s: engine.fail(s, name, now=NOW, exception_type="x.E", exception_info=""),
            own,
        )
    if kind == "skip_self":
        return kind, lambda s: engine.skip_self(s, name, now=NOW), own
    if kind == "retry_self":
        retries = data.draw(st.integers(0, 2))
        return kind, lambda s: engine.retry_self(s, name, now=NOW, max_retries=retries), own
    if kind == "replay_failed":
        return kind, lambda s: engine.replay_failed(s, name, now=NOW), own
    cascade = data.draw(st.booleans())
    result = data.draw(json_kwargs())
    scope = instance_scope(name, cascade=cascade)
    if kind == "skip_failed":
        return (
            kind,
            lambda s: engine.skip_failed(s, name, now=NOW, cascade=cascade, result=result),
            scope,
        )
    if kind == "update_status":
        # often back to unstarted: the case the unsettled sets exist for
        status = data.draw(st.sampled_from([Status.UNSTARTED, Status.UNSTARTED, *Status]))
        return (
            kind,
            lambda s: engine.update_status(
                s, name, status, now=NOW, cascade=cascade, cascade_kwargs=result
            ),
            scope,
        )
    if kind == "update_metadata":
        return kind, lambda s: engine.update_metadata(s, name, result, now=NOW), own
    return kind, lambda s: engine.mark_logs_resolved(s, name, now=NOW), own


def outcome(operation: Operation, state: SessionState) -> engine.Transition | str:
    try:
        return operation(state)
    except (TriggersError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def assert_unsettled_exact(state: SessionState) -> None:
    """``unsettled`` is what the rules say, and covers what a fire would really change."""
    assert state.unsettled == unsettled_of(state.tasks, state.instances.values())
    assert all(state.unsettled.values()), "empty sets are omitted"
    # The engine as oracle: whatever a fire of a task's andEvery trigger changes among
    # its existing instances (when that trigger is not also one of its unless
    # triggers) must be in its unsettled set.
    for task in state.tasks.values():
        every = task.and_every
        if every is None or every in task.unless:
            continue
        t = engine.fire(state, every, {}, now=NOW)
        touched = {
            n
            for n in t.changed & state.instances.keys()
            if state.instances[n].task_name == task.name
        }
        assert touched <= state.unsettled.get(task.name, frozenset())


@settings(max_examples=150, deadline=None)
@given(st.data(), session_states(min_triggers=2, max_triggers=10))
def test_every_operation_gives_the_same_result_on_its_narrowed_working_set(
    data: st.DataObject, start: SessionState
) -> None:
    """Property: from any reachable state s, for a random sequence of operations (every
    kind the manager performs, valid or not), computing operation o on
    ``narrowed(s, scope(o))`` (the header plus only the instances o's scope names,
    resolved history left out) gives exactly what computing it on the whole of s
    gives: the same error, or the same header (tasks, latest kwargs, counters,
    unsettled), effects, ``changed``, ``created``, ``config_changed`` and the
    same changed instances. After every operation ``unsettled`` equals the set
    recomputed from scratch (the engine keeps it exact).
    """
    state = start
    assert_unsettled_exact(state)
    for _ in range(data.draw(st.integers(1, 12), label="steps")):
        kind, operation, scope = draw_scoped_operation(data, state)
        lean_state = narrowed(state, scope)
        full = outcome(operation, state)
        lean = outcome(operation, lean_state)
        if isinstance(full, str):
            event(f"{kind}: error")
            assert lean == full
            continue
        event(f"{kind}: ok, loaded {min(len(lean_state.instances), 3)}+ instances")
        assert isinstance(lean, engine.Transition), lean
        assert lean.state.tasks == full.state.tasks
        assert lean.state.latest_kwargs == full.state.latest_kwargs
        assert lean.state.counters == full.state.counters
        assert lean.state.unsettled == full.state.unsettled
        assert lean.effects == full.effects
        assert (lean.changed, lean.created) == (full.changed, full.created)
        assert lean.changes == full.changes
        for name in full.changed:
            assert lean.state.instances[name] == full.state.instances[name]
        assert full.created <= full.changed
        assert not full.created & state.instances.keys(), "created names are new"
        state = full.state
        assert_unsettled_exact(state)


def assert_every_fire_exact(state: SessionState) -> None:
    """A fire of every trigger in use gives the same result on its narrowed state."""
    for trigger in [*triggers_used(state.tasks), "unused"]:
        full = engine.fire(state, trigger, {"k": 1}, now=NOW)
        lean = engine.fire(narrowed(state, fire_scope(trigger)), trigger, {"k": 1}, now=NOW)
        assert lean.effects == full.effects
        assert (lean.changed, lean.created) == (full.changed, full.created)
        assert lean.state.unsettled == full.state.unsettled
        assert lean.state.counters == full.state.counters
        for name in full.changed:
            assert lean.state.instances[name] == full.state.instances[name]


@settings(max_examples=100, deadline=None)
@given(st.data(), session_states(min_triggers=2, max_triggers=10))
def test_forcing_an_instance_back_to_unstarted_keeps_every_fire_exact(
    data: st.DataObject, state: SessionState
) -> None:
    """Property: after ``update_status(s, I, unstarted)`` for any instance I of any
    reachable state s (which may leave I complete or abandonable, or without its
    andEvery trigger), ``unsettled`` is exact and a fire of every trigger gives the
    same result on its narrowed working set as on the whole state.
    """
    if not state.instances:
        return
    name = data.draw(st.sampled_from(sorted(state.instances)))
    forced = engine.update_status(state, name, Status.UNSTARTED, now=NOW).state
    event(f"forced instance is unsettled: {name in forced.unsettled.get(name.split('#')[0], ())}")
    assert_unsettled_exact(forced)
    assert_every_fire_exact(forced)


@settings(max_examples=100, deadline=None)
@given(st.data(), session_states(min_triggers=2, max_triggers=10))
def test_replacing_a_task_keeps_every_fire_exact(data: st.DataObject, state: SessionState) -> None:
    """Property: after ``update_configuration`` replaces any task of a reachable state
    with any other valid directives (its waiting instances may become complete,
    abandonable, or lack the new andEvery trigger), ``unsettled`` is exact and a
    fire of every trigger gives the same result on its narrowed working set.
    """
    name = data.draw(st.sampled_from(sorted(state.tasks)))
    directives = data.draw(
        task_configurations(min_tasks=1, max_tasks=1, cascades=False).map(
            lambda c: next(iter(c.values()))
        )
    )
    t = engine.update_configuration(
        narrowed(state, configuration_scope([name])), {name: directives}
    )
    replaced = attrs.evolve(t.state, instances=state.instances)
    assert (
        t.state.unsettled == engine.update_configuration(state, {name: directives}).state.unsettled
    )
    assert_unsettled_exact(replaced)
    assert_every_fire_exact(replaced)


@settings(max_examples=100, deadline=None)
@given(st.data(), session_states(min_triggers=2, max_triggers=10))
def test_a_fire_never_loads_resolved_history_or_settled_every_instances(
    data: st.DataObject, state: SessionState
) -> None:
    """Property: the scope of a fire of X names no resolved instance, and no unstarted
    instance of a task whose only use of X is as its ``andEvery`` trigger, unless
    that instance is unsettled.
    """
    trigger = data.draw(st.sampled_from([*triggers_used(state.tasks), "unused"]))
    lean = narrowed(state, fire_scope(trigger)).instances
    for instance in lean.values():
        assert not instance.is_resolved
        assert instance.status is Status.UNSTARTED
        task = state.tasks[instance.task_name]
        if trigger == task.and_every and trigger not in task.unless:
            assert instance.name in state.unsettled.get(task.name, ())


# -- the unsettled cases, by example -------------------------------------------------------


def configured(config: dict[str, Any]) -> SessionState:
    return engine.update_configuration(SessionState(), config).state


def run(state: SessionState, operation: Operation, scope: Scope | Selector) -> engine.Transition:
    """Compute ``operation`` on the narrowed state, check it matches the full one."""
    lean = operation(narrowed(state, scope))
    full = operation(state)
    assert lean.effects == full.effects
    assert lean.state.unsettled == full.state.unsettled
    assert {n: lean.state.instances[n] for n in lean.changed} == {
        n: full.state.instances[n] for n in full.changed
    }
    return full


def fire(state: SessionState, trigger: str) -> engine.Transition:
    return run(
        state, lambda s: engine.fire(s, trigger, {"t": trigger}, now=NOW), fire_scope(trigger)
    )


def test_an_instance_created_before_its_and_every_trigger_is_unsettled_until_it_fires() -> None:
    state = configured({"t_w": {"after": ["x"], "andEvery": "e", "run": "W"}})
    state = fire(state, "x").state  # t_w#0 waits for e
    assert state.unsettled == {"t_w": frozenset({"t_w#0"})}
    assert narrowed(state, fire_scope("e")).instances.keys() == {"t_w#0"}

    t = fire(state, "e")  # e completes t_w#0 instead of creating t_w#1

    assert t.scheduled == ("t_w#0",)
    assert t.created == frozenset()
    assert t.state.unsettled == {}


def test_waiting_and_every_instances_are_settled_and_not_loaded() -> None:
    state = configured({"t_tick": {"after": ["never"], "andEvery": "tick", "run": "T"}})
    for _ in range(5):
        state = fire(state, "tick").state
    assert state.counters["t_tick"] == 5
    assert state.unsettled == {}

    t = fire(state, "tick")

    assert narrowed(state, fire_scope("tick")).instances == {}
    assert t.created == {"t_tick#5"}
    assert narrowed(state, fire_scope("never")).instances.keys() == set(state.instances)


def test_a_configuration_change_can_make_waiting_instances_complete() -> None:
    state = configured({"t_tick": {"after": ["never"], "andEvery": "tick", "run": "T"}})
    state = fire(state, "tick").state
    state = fire(state, "tick").state
    changed = run(
        state,
        lambda s: engine.update_configuration(
            s, {"t_tick": {"after": [], "andEvery": "tick", "run": "T"}}
        ),
        configuration_scope(["t_tick"]),
    )
    assert changed.config_changed
    assert changed.state.unsettled == {"t_tick": frozenset({"t_tick#0", "t_tick#1"})}

    t = fire(changed.state, "tick")  # schedules the two complete ones, and the new one

    assert t.scheduled == ("t_tick#0", "t_tick#1", "t_tick#2")
    assert t.state.unsettled == {}


def test_a_forced_unstarted_status_is_re_examined_by_the_next_fire() -> None:
    state = configured({"t_tick": {"after": [], "andEvery": "tick", "run": "T"}})
    state = fire(state, "tick").state  # t_tick#0 scheduled at once
    forced = run(
        state,
        lambda s: engine.update_status(s, "t_tick#0", Status.UNSTARTED, now=NOW),
        instance_scope("t_tick#0", cascade=False),
    )
    assert forced.state.unsettled == {"t_tick": frozenset({"t_tick#0"})}

    t = fire(forced.state, "tick")

    assert t.scheduled == ("t_tick#0", "t_tick#1")


def test_an_unchanged_configuration_writes_no_configuration() -> None:
    config = {"t_a": {"after": ["x"], "run": "A"}}
    state = configured(config)
    t = engine.update_configuration(state, config)
    assert not t.config_changed
    assert t.changes == Changes()
    assert engine.update_configuration(state, {"t_a": {"after": ["y"], "run": "A"}}).config_changed


# -- through the manager: what a fire actually loads ---------------------------------------


class CountingStorage(Storage):
    """Wraps a storage and records how many instances each load returned."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner.uid)
        self.inner = inner
        self.loaded: list[int] = []

    def load(self, scope: Scope | Selector = HEADER_ONLY) -> Snapshot:
        snapshot = self.inner.load(scope)
        self.loaded.append(len(snapshot.state.instances))
        return snapshot

    def load_full(self) -> Snapshot:
        return self.inner.load_full()

    def compare_and_swap(
        self, expected: Version | None, state: SessionState, changes: Changes
    ) -> Version:
        return self.inner.compare_and_swap(expected, state, changes)


@pytest.mark.parametrize("waiting", [0, 40])
def test_a_fire_loads_no_waiting_and_every_instance(
    storage_factory: Callable[[str], Storage], session_uid: str, waiting: int
) -> None:
    storage = CountingStorage(storage_factory(session_uid))
    runner = RecordingRunner()
    manager = TriggerManager(storage, runners={"rec": runner}, default_runner="rec")
    manager.update_configuration(
        {
            "t_tick": {"after": ["never"], "andEvery": "tick", "run": DevNullTask.name},
            "t_both": {"after": ["tick"], "andEvery": "tick", "run": DevNullTask.name},
        }
    )
    for n in range(waiting):
        manager.fire("tick", {"n": n})
    storage.loaded.clear()

    manager.fire("tick", {"n": "last"})
    finished = manager.run_instance(runner.dispatched[-1])

    assert storage.loaded == [0, 1, 1]  # the fire; mark_running and finish load their instance
    assert finished is not None
    assert finished.status is Status.FINISHED
    state = storage.load_full().state
    assert state.counters == {"t_tick": waiting + 1, "t_both": waiting + 1}
    assert attrs.evolve(state, instances={}).unsettled == {}
