"""Properties of time conditions over random timed sequences (pure engine)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from triggers_core import engine
from triggers_core.engine.effects import ScheduleInstance
from triggers_core.engine.leases import DueKind, due_of
from triggers_core.engine.state import SessionState, Status
from triggers_core.engine.timers import due_timers

NOW = datetime(2024, 1, 1, tzinfo=UTC)
TRIGGERS = ("a", "b", "c", "u", "late")

CONFIG: dict[str, Any] = {
    "t_win": {"after": ["a", "b", "c"], "run": "x", "within": "100s", "onMiss": "late"},
    "t_del": {"after": ["a", "b"], "unless": ["u"], "run": "x", "delay": "50s"},
    "t_both": {"after": ["b", "c"], "run": "x", "within": "60s", "delay": "30s"},
    "t_every": {"after": ["a"], "andEvery": "c", "run": "x", "within": "40s"},
    "t_late": {"after": ["late"], "run": "x"},
}

steps = st.lists(
    st.one_of(
        st.tuples(st.just("fire"), st.sampled_from(TRIGGERS), st.integers(0, 80)),
        st.tuples(st.just("tick"), st.just(""), st.integers(0, 120)),
    ),
    max_size=25,
)


def run(
    steps: list[tuple[str, str, int]], nows: list[datetime] | None = None
) -> tuple[SessionState, list[engine.Transition]]:
    state = engine.update_configuration(SessionState(), CONFIG).state
    now = NOW
    transitions = []
    for kind, trigger, gap in steps:
        now += timedelta(seconds=gap)
        if kind == "fire":
            t = engine.fire(state, trigger, {"at": str(now)}, now=now)
        else:
            t = engine.advance(state, now)
        transitions.append(t)
        if nows is not None:
            nows.append(now)
        state = t.state
    return state, transitions


@settings(max_examples=200, deadline=None)
@given(steps)
def test_every_due_timer_fires_exactly_once(sequence: list[tuple[str, str, int]]) -> None:
    nows: list[datetime] = []
    state, transitions = run(sequence, nows)
    far = NOW + timedelta(days=30)
    done = engine.advance(state, far)
    nows.append(far)
    # Applying the same time again never does anything more: each timer fired once.
    assert engine.advance(done.state, far).commit is False
    assert due_timers(done.state, far) == []
    # A timer fires when a transition at or after its due time takes it away; an
    # instance gets at most a deadline and then a delay, each firing once.
    fired: dict[tuple[str, datetime], int] = {}
    history = [*transitions, done]
    for index, (t, now) in enumerate(zip(history, nows, strict=True)):
        for name, due in t.due.items():
            before = None if name in t.created else due_of(_before(history, index, name))
            if before is not None and before.kind is DueKind.TIMER and before.at <= now:
                assert due != before
                fired[name, before.at] = fired.get((name, before.at), 0) + 1
    assert all(count == 1 for count in fired.values()), fired


def _before(history: list[engine.Transition], index: int, name: str) -> Any:
    for earlier in reversed(history[:index]):
        if name in earlier.state.instances:
            return earlier.state.instances[name]
    raise AssertionError(name)


@settings(max_examples=200, deadline=None)
@given(steps)
def test_an_expired_instance_never_runs(sequence: list[tuple[str, str, int]]) -> None:
    state, transitions = run(sequence)
    done = engine.advance(state, NOW + timedelta(days=30))
    assert all(
        i.status is not Status.UNSTARTED
        or "deadline" not in i.metadata
        or "delayedUntil" in i.metadata
        for i in done.state.instances.values()
    )
    expired = {n for n, i in done.state.instances.items() if i.status is Status.EXPIRED}
    for t in [*transitions, done]:
        for effect in t.effects:
            if isinstance(effect, ScheduleInstance):
                assert effect.instance_name not in expired
    for name in expired:
        instance = done.state.instances[name]
        assert "scheduled" not in instance.metadata["timestamps"]
        assert instance.metadata["missing"]  # it expired because something was missing


@settings(max_examples=200, deadline=None)
@given(
    st.permutations(["a", "b", "c"]),
    st.lists(st.integers(0, 33), min_size=3, max_size=3),
    st.integers(0, 120),
)
def test_the_outcome_does_not_depend_on_the_order_of_fires_within_a_window(
    order: list[str], gaps: list[int], tick: int
) -> None:
    config = {"t_win": {"after": ["a", "b", "c"], "run": "x", "within": "100s", "onMiss": "m"}}
    outcomes = set()
    for triggers in (order, sorted(order)):
        state = engine.update_configuration(SessionState(), config).state
        now = NOW
        for trigger, gap in zip(triggers, gaps, strict=True):
            now += timedelta(seconds=gap)
            state = engine.fire(state, trigger, {}, now=now).state
        state = engine.advance(state, now + timedelta(seconds=tick)).state
        outcomes.add(
            tuple(
                sorted(
                    (n, i.status.value, tuple(sorted(i.kwargs))) for n, i in state.instances.items()
                )
            )
        )
    assert len(outcomes) == 1
    ((_, status, _),) = next(iter(outcomes))
    assert status == "scheduled"  # all three within 99 s: never expired


def test_simulate_accepts_clock_advances() -> None:
    from triggers_core.testing import Advance, simulate

    config = {
        "t_pay": {"after": ["ordered", "paid"], "run": "x", "within": "24h", "onMiss": "late"},
        "t_chase": {"after": ["late"], "run": "y", "delay": "1h"},
    }
    state = simulate(config, ["ordered", Advance("23h"), Advance("1h")])
    assert state.instances["t_pay#0"].status is Status.EXPIRED
    assert state.instances["t_chase#0"].status is Status.UNSTARTED  # delayed an hour
    state = simulate(config, ["ordered", Advance("24h"), Advance(3600)])
    assert state.instances["t_chase#0"].status is Status.FINISHED
    on_time = simulate(config, ["ordered", Advance(timedelta(hours=23)), "paid", Advance("7d")])
    assert on_time.instances["t_pay#0"].status is Status.FINISHED
    assert "t_chase#0" not in on_time.instances


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_timed_workflows_simulate_and_every_expired_instance_never_ran(data: st.DataObject) -> None:
    from triggers_core.testing import simulate
    from triggers_core.testing.strategies import task_configurations, timed_sequences

    config = data.draw(task_configurations(timed=True, groups=True))
    steps = data.draw(timed_sequences(config))
    state = simulate(config, steps)
    for instance in state.instances.values():
        if instance.status is Status.EXPIRED:
            assert "running" not in instance.metadata["timestamps"]
    assert engine.advance(state, datetime(2000, 1, 1, tzinfo=UTC) + timedelta(days=400)).state


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_timed_fires_and_ticks_are_exact_on_their_narrowed_working_set(
    data: st.DataObject,
) -> None:
    """A fire that expires closed windows (and fires their onMiss) and a tick of one
    instance give on their narrowed working set exactly what they give on the whole state."""
    from triggers_core.engine.leases import timer_of
    from triggers_core.engine.scopes import fire_scope, narrowed
    from triggers_core.engine.timers import timer_scope
    from triggers_core.testing.strategies import session_states, triggers_used

    state = data.draw(session_states(min_triggers=2, max_triggers=10, groups=True, timed=True))
    start = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    now = start + timedelta(seconds=data.draw(st.sampled_from((0, 10, 100, 4000, 90_000))))
    for trigger in [*triggers_used(state.tasks), "unused"]:
        full = engine.fire(state, trigger, {"k": 1}, now=now)
        lean = engine.fire(narrowed(state, fire_scope(trigger)), trigger, {"k": 1}, now=now)
        assert lean.effects == full.effects
        assert (lean.changed, lean.created) == (full.changed, full.created)
        assert lean.state.latest_kwargs == full.state.latest_kwargs
        assert lean.state.unsettled == full.state.unsettled
        assert lean.due == full.due
        for name in full.changed:
            assert lean.state.instances[name] == full.state.instances[name]
    for name, instance in state.instances.items():
        if timer_of(instance) is None:
            continue
        full = engine.advance(state, now, only=(name,))
        lean = engine.advance(narrowed(state, timer_scope(name)), now, only=(name,))
        assert lean.effects == full.effects
        assert (lean.changed, lean.created, lean.commit) == (
            full.changed,
            full.created,
            full.commit,
        )
        assert lean.due == full.due
        for changed in full.changed:
            assert lean.state.instances[changed] == full.state.instances[changed]
