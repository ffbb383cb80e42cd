"""Hypothesis properties of condition groups. Each test's docstring states the property.

The readiness oracle below is written from docs/configuration.md, independently
of :mod:`triggers_core.engine.conditions`, on the raw JSON configuration.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from triggers_core.engine.state import SessionState, Status
from triggers_core.testing.simulate import run_simulation
from triggers_core.testing.strategies import (
    DEFAULT_TRIGGER_POOL,
    json_kwargs,
    task_configurations,
    workflows,
)

FAST = settings(max_examples=80, deadline=None)
Config = dict[str, dict[str, Any]]
Triggers = list[tuple[str, dict[str, Any]]]


def holds(entry: Any, recorded: Any) -> bool:
    """The documented rule: a name holds once recorded; a group once enough members hold."""
    if isinstance(entry, str):
        return entry in recorded
    if "anyOf" in entry:
        return any(holds(member, recorded) for member in entry["anyOf"])
    return sum(holds(member, recorded) for member in entry["of"]) >= entry["atLeast"]


def ready(directives: dict[str, Any], recorded: Any) -> bool:
    every = directives.get("andEvery")
    return all(holds(e, recorded) for e in directives["after"]) and (
        every is None or every in recorded
    )


def abandons(directives: dict[str, Any], fired: Any) -> bool:
    unless = directives.get("unless") or []
    return bool(unless) and all(holds(e, fired) for e in unless)


def shuffled_entry(data: st.DataObject, entry: Any) -> Any:
    """The same entry with the members of every group (at every depth) permuted."""
    if isinstance(entry, str):
        return entry
    key = "anyOf" if "anyOf" in entry else "of"
    members = [shuffled_entry(data, m) for m in data.draw(st.permutations(entry[key]))]
    return {**entry, key: members}


def shuffled(data: st.DataObject, config: Config) -> Config:
    out = {}
    for name, directives in config.items():
        d = dict(directives)
        for key in ("after", "unless"):
            if key in d:
                d[key] = [shuffled_entry(data, e) for e in data.draw(st.permutations(d[key]))]
        out[name] = d
    return out


def wrapped(config: Config) -> Config:
    """Every plain list of names wrapped in the equivalent ``{"atLeast": len, "of": list}``."""
    out = {}
    for name, directives in config.items():
        d = dict(directives)
        for key in ("after", "unless"):
            if d.get(key):
                d[key] = [{"atLeast": len(d[key]), "of": list(d[key])}]
        out[name] = d
    return out


@FAST
@given(st.data(), workflows(max_tasks=4, groups=True))
def test_member_order_never_changes_the_outcome(
    data: st.DataObject, workflow: tuple[Config, Triggers]
) -> None:
    """Property: permuting the members of every group, and every after/unless list,
    gives the *identical* simulation (instances, header, effects, run order)."""
    config, triggers = workflow
    a = run_simulation(config, triggers)
    b = run_simulation(shuffled(data, config), triggers)

    assert a.state.instances == b.state.instances
    assert (a.state.latest_kwargs, a.state.counters) == (b.state.latest_kwargs, b.state.counters)
    assert (a.effects, a.ran) == (b.effects, b.ran)


@FAST
@given(
    st.data(),
    task_configurations(and_every=False, unless=False, max_tasks=5, groups=True),
    st.dictionaries(st.sampled_from(DEFAULT_TRIGGER_POOL), json_kwargs(), min_size=1),
)
def test_firing_order_never_changes_the_outcome(
    data: st.DataObject, config: Config, kwargs_by_trigger: dict[str, dict[str, Any]]
) -> None:
    """Property: with groups (no andEvery/unless), firing a set of triggers once each in
    any two orders ends with the same instances in the same statuses and the same
    instances scheduled. (What an instance recorded may differ: a member that
    fires after its instance started is not recorded.)"""
    order = list(kwargs_by_trigger.items())
    other = data.draw(st.permutations(order))
    results = {name: {"from": name} for name in config}

    a = run_simulation(config, order, results=results)
    b = run_simulation(config, other, results=results)

    def shape(state: SessionState) -> dict[str, Any]:
        return {n: (i.status, i.task_name) for n, i in state.instances.items()}

    assert shape(a.state) == shape(b.state)
    assert a.state.counters == b.state.counters
    # Both runs schedule the same instances, each once.
    assert sorted(a.scheduled) == sorted(b.scheduled)


@FAST
@given(workflows(max_tasks=4, groups=True))
def test_plain_lists_behave_exactly_as_their_at_least_len_groups(
    workflow: tuple[Config, Triggers],
) -> None:
    """Property: a configuration of plain lists and the same configuration with every
    list wrapped in ``{"atLeast": len, "of": list}`` give the identical simulation
    (every instance, header mapping other than the configuration, effect and run)."""
    config, triggers = workflow
    plain = {
        name: {
            **d,
            "after": [e for e in d["after"] if isinstance(e, str)]
            or ([] if d.get("andEvery") else ["a"]),
            **(
                {"unless": [e for e in d["unless"] if isinstance(e, str)] or ["b"]}
                if "unless" in d
                else {}
            ),
        }
        for name, d in config.items()
    }
    a = run_simulation(plain, triggers)
    b = run_simulation(wrapped(plain), triggers)

    assert a.state.instances == b.state.instances
    assert (a.state.latest_kwargs, a.state.counters) == (b.state.latest_kwargs, b.state.counters)
    assert (a.effects, a.ran) == (b.effects, b.ran)
    assert a.state.unsettled == b.state.unsettled


@FAST
@given(workflows(max_tasks=4, max_triggers=16, groups=True))
def test_every_instance_follows_the_documented_rules(workflow: tuple[Config, Triggers]) -> None:
    """Property, against an independent oracle of the documented rules:

    - an instance that was scheduled had, when scheduled, a satisfied ``after``
      condition (and andEvery) and no satisfied ``unless`` condition;
    - an abandoned instance has a satisfied ``unless`` condition and was never scheduled;
    - an instance still unstarted at the end satisfies neither;
    - no instance is scheduled twice; a task without andEvery has at most one instance.
    """
    config, triggers = workflow
    sim = run_simulation(config, triggers)
    counts = Counter(sim.scheduled)
    assert all(n == 1 for n in counts.values()), counts

    for instance in sim.state.instances.values():
        directives = config[instance.task_name]
        recorded, fired = instance.kwargs.keys(), instance.unless_fired
        if instance.name in counts:
            assert ready(directives, recorded)
            assert not abandons(directives, fired)
        elif instance.status is Status.ABANDONED:
            assert abandons(directives, fired)
        else:
            assert instance.status is Status.UNSTARTED
            assert not ready(directives, recorded)
            assert not abandons(directives, fired)

    for name, directives in config.items():
        if "andEvery" not in directives:
            assert sim.state.counters.get(name, 0) <= 1
