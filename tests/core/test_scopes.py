"""The narrowed working set is exact: properties of :mod:`triggers_core.engine.scopes`.

Each test's docstring states the exact property.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from triggers_core import TriggerManager, engine
from triggers_core.engine.scopes import (
    HEADER_ONLY,
    Changes,
    Scope,
    Selector,
    configuration_scope,
    fire_scope,
    instance_scope,
    narrowed,
    read_in_full,
    reads_every_unstarted,
    resolve,
    settled_of,
    settled_triggers,
    still_settled,
    task_triggers,
    unsettled_of,
)
from triggers_core.engine.state import SessionState, Status
from triggers_core.errors import TriggersError
from triggers_core.runtime.storage import Snapshot, Storage, Version
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
            task_configurations(max_tasks=2, groups=True)
            | st.builds(
                lambda d, n: {n: d},
                task_configurations(min_tasks=1, max_tasks=1, groups=True).map(
                    lambda c: next(iter(c.values()))
                ),
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


def assert_settled_sound(state: SessionState) -> None:
    """``settled`` never claims a trigger some unstarted instance has not recorded."""
    true = settled_of(state.tasks, state.instances.values())
    for task_name, triggers in state.settled.items():
        assert triggers, "empty sets are omitted"
        assert triggers <= true.get(task_name, frozenset()), task_name
    # The engine as oracle: a fire of a trigger settled for a task changes none of
    # that task's existing instances except unsettled ones (which a fire reads).
    for trigger in triggers_used(state.tasks):
        assert read_in_full(state.tasks, state.settled, trigger) == [
            t
            for t in state.tasks.using(trigger)
            if reads_every_unstarted(state.tasks[t], trigger, state.settled)
        ]
        t = engine.fire(state, trigger, {}, now=NOW)
        for name in t.changed & state.instances.keys():
            task_name = state.instances[name].task_name
            if trigger in state.settled.get(task_name, ()):
                assert name in state.unsettled.get(task_name, ()), (trigger, name)


def assert_settled_exact_where_recomputed(
    kind: str, before: SessionState, scope: Scope | Selector, t: engine.Transition
) -> None:
    """After an operation that read every unstarted instance of a task (a fire of a
    trigger not settled for it, a configuration change of it), that task's
    ``settled`` equals the value computed from scratch."""
    if kind == "update_configuration" and not t.config_changed:
        return  # nothing changed, nothing recomputed
    read_in_full = resolve(scope, attrs.evolve(before, instances={})).unstarted_of
    true = settled_of(t.state.tasks, t.state.instances.values())
    for task_name in read_in_full:
        assert t.state.settled.get(task_name) == true.get(task_name), task_name


def forget_some_settled(data: st.DataObject, state: SessionState) -> SessionState:
    """``state`` with some settled triggers forgotten (any smaller value is still correct,
    e.g. a header written before ``settled`` existed, where it is absent)."""
    how = data.draw(st.sampled_from(["keep", "keep", "absent", "some"]), label="settled")
    if how == "keep":
        return state
    if how == "absent":
        return attrs.evolve(state, settled={})
    kept = {}
    for task_name, triggers in sorted(state.settled.items()):
        subset = data.draw(st.sets(st.sampled_from(sorted(triggers))), label=task_name)
        if subset:
            kept[task_name] = frozenset(subset)
    return attrs.evolve(state, settled=kept)


@settings(max_examples=150, deadline=None)
@given(st.data(), session_states(min_triggers=2, max_triggers=10, groups=True))
def test_every_operation_gives_the_same_result_on_its_narrowed_working_set(
    data: st.DataObject, start: SessionState
) -> None:
    """Property: from any reachable state s (with any part of ``settled`` forgotten),
    for a random sequence of operations (every kind the manager performs, valid or
    not), computing operation o on ``narrowed(s, scope(o))`` (the header plus only
    the instances o's scope names, resolved history left out) gives exactly what
    computing it on the whole of s gives: the same error, or the same header
    (tasks, latest kwargs, counters, unsettled, settled), effects, ``changed``,
    ``created``, ``config_changed`` and the same changed instances. After every
    operation ``unsettled`` equals the set recomputed from scratch (the engine
    keeps it exact), ``settled`` is a subset of the value recomputed from scratch,
    and equals it for the tasks whose unstarted instances the operation read
    in full (a fire of a trigger not settled for them, a configuration change).
    """
    state = forget_some_settled(data, start)
    assert_unsettled_exact(state)
    assert_settled_sound(state)
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
        assert lean.state.settled == full.state.settled
        assert lean.effects == full.effects
        assert (lean.changed, lean.created) == (full.changed, full.created)
        assert lean.changes == full.changes
        for name in full.changed:
            assert lean.state.instances[name] == full.state.instances[name]
        assert full.created <= full.changed
        assert not full.created & state.instances.keys(), "created names are new"
        assert_settled_exact_where_recomputed(kind, state, scope, full)
        state = full.state
        assert_unsettled_exact(state)
        assert_settled_sound(state)


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
@given(st.data(), session_states(min_triggers=2, max_triggers=10, groups=True))
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
@given(st.data(), session_states(min_triggers=2, max_triggers=10, groups=True))
def test_replacing_a_task_keeps_every_fire_exact(data: st.DataObject, state: SessionState) -> None:
    """Property: after ``update_configuration`` replaces any task of a reachable state
    with any other valid directives (its waiting instances may become complete,
    abandonable, or lack the new andEvery trigger), ``unsettled`` is exact and a
    fire of every trigger gives the same result on its narrowed working set.
    """
    name = data.draw(st.sampled_from(sorted(state.tasks)))
    directives = data.draw(
        task_configurations(min_tasks=1, max_tasks=1, cascades=False, groups=True).map(
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
@given(st.data(), session_states(min_triggers=2, max_triggers=10, groups=True))
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


@settings(max_examples=100, deadline=None)
@given(st.data(), session_states(min_triggers=2, max_triggers=10, groups=True))
def test_still_settled_is_the_intersection_with_what_an_instance_recorded(
    data: st.DataObject, state: SessionState
) -> None:
    """Property: for any instance I of a reachable state and any set S of its task's
    triggers, ``still_settled(task, I, S) == S & settled_triggers(task, I)``."""
    for instance in state.instances.values():
        task = state.tasks[instance.task_name]
        triggers = sorted(task_triggers(task))
        chosen = frozenset(
            data.draw(st.sets(st.sampled_from(triggers)) if triggers else st.just(set()))
        )
        assert still_settled(task, instance, chosen) == chosen & settled_triggers(task, instance)


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


def test_a_repeat_fire_reads_no_instance_that_already_recorded_the_trigger() -> None:
    config = {f"t_{k}": {"after": ["x", f"never{k}"], "run": "T"} for k in range(3)}
    state = configured(config)
    assert state.settled == {f"t_{k}": frozenset({"x", f"never{k}"}) for k in range(3)}
    state = fire(state, "x").state  # one waiting instance per task, x recorded
    assert state.settled == {f"t_{k}": frozenset({"x"}) for k in range(3)}
    assert narrowed(state, fire_scope("x")).instances == {}

    t = fire(state, "x")

    assert t.changed == frozenset()
    assert t.state.settled == state.settled
    # never0 is not settled for t_0: its fire reads t_0#0 (and completes it).
    assert narrowed(state, fire_scope("never0")).instances.keys() == {"t_0#0"}
    assert fire(state, "never0").scheduled == ("t_0#0",)


def test_a_header_without_settled_reads_in_full_once_then_knows() -> None:
    config = {
        f"t_{k}": {"after": ["x", f"never{k}"], "unless": ["u", "v"], "run": "T"} for k in range(3)
    }
    state = fire(configured(config), "x").state
    old = attrs.evolve(state, settled={})  # as a header written before ``settled`` existed
    assert narrowed(old, fire_scope("x")).instances.keys() == set(state.instances)

    t = fire(old, "x")

    assert t.changed == frozenset()
    assert t.state.settled == {f"t_{k}": frozenset({"x"}) for k in range(3)}
    assert narrowed(t.state, fire_scope("x")).instances == {}
    # The unless trigger is recorded on every instance by its first fire, then settled.
    u = fire(t.state, "u")
    assert u.changed == set(state.instances)
    assert u.state.settled == {f"t_{k}": frozenset({"x", "u"}) for k in range(3)}
    assert narrowed(u.state, fire_scope("u")).instances == {}


def test_a_forced_unstarted_instance_unsettles_what_it_has_not_recorded() -> None:
    state = configured({"t_a": {"after": ["x", "y"], "unless": ["u"], "run": "A"}})
    state = fire(state, "x").state  # t_a#0 recorded x
    assert state.settled == {"t_a": frozenset({"x"})}
    state = fire(state, "u").state  # t_a#0 abandoned: no unstarted instance left
    assert state.settled == {"t_a": frozenset({"x", "y", "u"})}
    assert narrowed(state, fire_scope("y")).instances == {}

    forced = run(
        state,
        lambda s: engine.update_status(s, "t_a#0", Status.UNSTARTED, now=NOW),
        instance_scope("t_a#0", cascade=False),
    ).state

    assert forced.settled == {"t_a": frozenset({"x", "u"})}  # it never recorded y
    assert narrowed(forced, fire_scope("y")).instances.keys() == {"t_a#0"}
    t = fire(forced, "y")  # records y, then abandons it (all its unless triggers fired)
    assert t.state.instances["t_a#0"].status is Status.ABANDONED
    assert t.state.settled == {"t_a": frozenset({"x", "y", "u"})}


def test_the_task_table_indexes_users_and_renewers_once_and_after_pickling() -> None:
    tasks = configured(
        {
            "t_b": {"after": ["x"], "andEvery": "e", "run": "B"},
            "t_a": {"after": ["e"], "unless": ["x"], "run": "A"},
            "t_c": {"after": [], "andEvery": "e", "unless": ["e"], "run": "C"},
        }
    ).tasks
    for table in (tasks, pickle.loads(pickle.dumps(tasks))):
        assert table.using("e") == ("t_a", "t_b", "t_c")
        assert table.using("x") == ("t_a", "t_b")
        assert table.renewed_by("e") == {"t_b", "t_c"}
        assert table.renewed_by("x") == frozenset()
        # t_c renews on e but also waits for it in unless: a fire of e reads it in full.
        assert read_in_full(table, {}, "e") == ["t_a", "t_c"]
        assert read_in_full(table, {"t_a": frozenset({"e"})}, "e") == ["t_c"]


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


def test_a_repeat_fire_loads_none_of_the_instances_waiting_for_other_triggers(
    storage_factory: Callable[[str], Storage], session_uid: str
) -> None:
    storage = CountingStorage(storage_factory(session_uid))
    manager = TriggerManager(storage, runners={"rec": RecordingRunner()}, default_runner="rec")
    manager.update_configuration(
        {f"t_{k}": {"after": ["x", f"never{k}"], "run": DevNullTask.name} for k in range(30)}
    )
    manager.fire("x", {"n": 0})
    storage.loaded.clear()

    manager.fire("x", {"n": 1})

    assert storage.loaded == [0]
    state = storage.load_full().state
    assert len(state.instances) == 30
    assert all(i.kwargs == {"x": {"n": 0}} for i in state.instances.values())
    assert state.settled == {f"t_{k}": frozenset({"x"}) for k in range(30)}


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

    # The fire; mark_running loads its instance (and what the finish needs: nothing more
    # here); the finish computes on the snapshot the start left, so it loads nothing.
    assert storage.loaded == [0, 1]
    assert finished is not None
    assert finished.status is Status.FINISHED
    state = storage.load_full().state
    assert state.counters == {"t_tick": waiting + 1, "t_both": waiting + 1}
    assert attrs.evolve(state, instances={}).unsettled == {}
