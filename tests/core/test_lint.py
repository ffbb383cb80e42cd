"""Lint: each rule on a configuration that triggers it and on one that does not."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from questionnaire import QUESTIONNAIRE

from triggers_core import ConfigurationError, Status
from triggers_core.testing.strategies import condition_entries
from triggers_core.tools.lint import RULES, Finding, Severity, lint
from triggers_core.tools.simulation import simulate

REGISTRY = ["app.Create", "app.Page", "app.Score", "app.Report", "app.Remind"]


def rules(config: dict[str, Any], **kwargs: Any) -> list[tuple[str, str]]:
    return [(f.rule, f.path) for f in lint(config, **kwargs)]


def test_a_sound_configuration_has_no_findings() -> None:
    assert lint(QUESTIONNAIRE, task_registry=REGISTRY) == []


def test_every_rule_is_documented_and_tested() -> None:
    tested = {name.removeprefix("test_").split("__")[0] for name in globals()}
    assert {rule.replace("-", "_") for rule in RULES} <= tested


def test_cascade_cycle() -> None:
    config = {
        "t_a": {"after": ["x", "t_b"], "run": "r"},
        "t_b": {"after": ["t_a"], "run": "r"},
        "t_self": {"after": ["t_self", "y"], "run": "r"},
    }
    (loop, own) = lint(config)
    assert loop == Finding(
        "t_a.after[1]",
        "cascade-cycle",
        "tasks wait for each other's cascades (t_a -> t_b -> t_a: each runs only after the "
        "one before it finished), so none of them can ever run",
        Severity.ERROR,
    )
    assert (own.rule, own.path, own.severity) == (
        "cascade-cycle",
        "t_self.after[0]",
        Severity.ERROR,
    )
    assert "t_self waits for its own cascade" in own.message


def test_cascade_cycle__not_for_a_chain() -> None:
    config = {"t_a": {"after": ["x"], "run": "r"}, "t_b": {"after": ["t_a"], "run": "r"}}
    assert lint(config) == []


def test_unknown_task() -> None:
    config = {**QUESTIONNAIRE, "t_sendReport": {"after": ["t_computScore"], "run": "app.Report"}}
    (finding,) = lint(config)
    assert finding == Finding(
        "t_sendReport.after[0]",
        "unknown-task",
        "'t_computScore' is no task of this configuration, so no cascade fires it and "
        "t_sendReport can never run; did you mean the task 't_computeScore'?",
        Severity.ERROR,
    )


def test_unknown_task__not_for_external_triggers_named_like_tasks() -> None:
    # 'startSession' is two edits from 't_startSession': an external trigger, not a typo.
    config = {
        "t_startSession": {"after": ["x"], "run": "r"},
        "t_b": {"after": ["startSession"], "run": "r"},
    }
    assert lint(config) == []


def test_unknown_task__not_for_short_or_numbered_names() -> None:
    # 't_b' next to task 't_a', 'step2' next to task 'step1': different on purpose.
    config = {
        "t_a": {"after": ["x"], "run": "r"},
        "step1": {"after": ["x"], "run": "r"},
        "t_c": {"after": ["t_b", "step2"], "run": "r"},
    }
    assert lint(config) == []


def test_unless_never_completes() -> None:
    config = {
        **QUESTIONNAIRE,
        # t_computeScore runs only after t_createApplicant: too late to abandon it.
        "t_createApplicant": {
            "after": ["startSession", "observationsReceived"],
            "unless": ["t_computeScore"],
            "run": "app.Create",
        },
        # a typo of a task, and a task that can never run (cycle)
        "t_a": {"after": ["t_b"], "unless": ["t_sendReprt"], "run": "r"},
        "t_b": {"after": ["t_a"], "run": "r"},
        "t_c": {"after": ["x"], "unless": ["t_b"], "run": "r"},
    }
    found = {f.path: f for f in lint(config) if f.rule == "unless-never-completes"}
    assert sorted(found) == ["t_a.unless[0]", "t_c.unless[0]", "t_createApplicant.unless[0]"]
    assert "did you mean the task 't_sendReport'?" in found["t_a.unless[0]"].message
    assert found["t_c.unless[0]"].message == (
        "the unless set of t_c can never complete in time: t_b can never run "
        "(it is in a cascade cycle)"
    )
    assert "only unstarted instances are abandoned" in found["t_createApplicant.unless[0]"].message


def test_unless_never_completes__not_with_and_every() -> None:
    # New instances created after the unless fired are seeded with it, and abandoned.
    config = {
        "t_page": {"after": ["x"], "andEvery": "page", "unless": ["t_done"], "run": "r"},
        "t_done": {"after": ["t_page"], "run": "r"},
    }
    assert lint(config) == []


def test_after_and_unless() -> None:
    config = {
        "t_never": {"after": ["x", "y"], "unless": ["y"], "run": "r"},
        "t_maybe": {"after": ["x", "y"], "unless": ["y", "z"], "run": "r"},
    }
    never, maybe = sorted(lint(config), key=lambda f: f.path, reverse=True)
    assert (never.rule, never.path, never.severity) == (
        "after-and-unless",
        "t_never.unless[0]",
        Severity.ERROR,
    )
    assert "it can never run" in never.message
    assert (maybe.rule, maybe.path, maybe.severity) == (
        "after-and-unless",
        "t_maybe.unless[0]",
        Severity.WARNING,
    )


def test_after_and_unless__not_for_disjoint_sets() -> None:
    assert lint({"t_a": {"after": ["x"], "unless": ["y"], "run": "r"}}) == []


def test_and_every_in_unless() -> None:
    config = {"t_a": {"after": ["x"], "andEvery": "page", "unless": ["page"], "run": "r"}}
    (finding,) = lint(config)
    assert (finding.rule, finding.path, finding.severity) == (
        "and-every-in-unless",
        "t_a.unless[0]",
        Severity.ERROR,
    )


def test_and_every_in_unless__not_for_other_unless_triggers() -> None:
    config = {"t_a": {"after": ["x"], "andEvery": "page", "unless": ["stop"], "run": "r"}}
    assert lint(config) == []


def test_unknown_run() -> None:
    (finding,) = lint(QUESTIONNAIRE, task_registry=[r for r in REGISTRY if r != "app.Report"])
    assert finding.path == "t_sendReport.run"
    assert finding.rule == "unknown-run"
    assert finding.message.startswith("no trigger task is registered under 'app.Report'")


def test_unknown_run__only_with_a_registry() -> None:
    assert lint(QUESTIONNAIRE) == []
    assert lint(QUESTIONNAIRE, task_registry=REGISTRY) == []


def test_similar_names() -> None:
    config = {
        **QUESTIONNAIRE,
        "t_archive": {"after": ["sessionfinalized"], "run": "app.Report"},
        "t_other": {"after": ["pageRecieved"], "run": "app.Report"},
    }
    found = {f.path: f.message for f in lint(config) if f.rule == "similar-names"}
    assert found == {
        "t_archive.after[0]": "'sessionfinalized' differs from 'sessionFinalized' only by case; "
        "trigger names are matched exactly, so a typo means a trigger nobody fires",
        "t_other.after[0]": "'pageRecieved' differs from 'pageReceived' by one character; "
        "trigger names are matched exactly, so a typo means a trigger nobody fires",
    }


def test_similar_names__not_for_numbered_or_short_names() -> None:
    config = {
        "t_a": {"after": ["page1"], "run": "r"},
        "t_b": {"after": ["page2"], "run": "r"},
        "t_c": {"after": ["t_a", "t_b"], "run": "r"},
    }
    assert lint(config) == []


def test_extra_like_directive() -> None:
    config = {
        "t_a": {"after": ["x"], "run": "r", "unlessAny": ["y"], "requires": ["x"]},
        "t_b": {"after": ["y"], "run": "r", "runIf": "x"},
    }
    found = {f.path: f.message for f in lint(config)}
    assert set(found) == {"t_a.unlessAny", "t_a.requires", "t_b.runIf"}
    assert "(its name contains 'unless')" in found["t_a.unlessAny"]
    assert "(its value names triggers of this configuration)" in found["t_a.requires"]
    assert "kept verbatim as an extra and never read" in found["t_b.runIf"]


def test_extra_like_directive__not_for_plain_extras() -> None:
    config = {"t_a": {"after": ["x"], "run": "r", "queue": "reports", "runtime": 5, "tags": ["z"]}}
    assert lint(config) == []


def test_invalid_configurations_raise_before_any_lint() -> None:
    with pytest.raises(ConfigurationError, match=r"t_a\.run: required"):
        lint({"t_a": {"after": ["x"]}})


def test_parsed_configurations_lint_the_same() -> None:
    from triggers_core import parse_configuration

    config = {"t_a": {"after": ["x", "t_a"], "run": "r"}}
    assert lint(parse_configuration(config)) == lint(config)


def test_findings_render_with_path_and_rule() -> None:
    finding = Finding("t_a.after[0]", "unknown-task", "message", Severity.ERROR)
    assert str(finding) == "t_a.after[0]: message [unknown-task]"
    assert finding.to_json() == {
        "rule": "unknown-task",
        "path": "t_a.after[0]",
        "message": "message",
        "severity": "error",
    }


# -- condition groups ---------------------------------------------------------------------


def test_cascade_cycle__through_groups() -> None:
    config = {
        "t_a": {"after": [{"anyOf": ["t_b", "t_c"]}], "run": "r"},
        "t_b": {"after": ["t_a"], "run": "r"},
        "t_c": {"after": ["t_a", "x"], "run": "r"},
        # Two of three, but the third can never run.
        "t_self": {"after": [{"atLeast": 2, "of": ["t_self", "y", "t_b"]}], "run": "r"},
    }
    assert lint(config) == [
        Finding(
            "t_a.after[0].anyOf[0]",
            "cascade-cycle",
            "tasks wait for each other's cascades (t_a -> t_b -> t_a: each runs only after the "
            "one before it finished (no other member of their groups can be satisfied first)), "
            "so none of them can ever run",
            Severity.ERROR,
        ),
        Finding(
            "t_self.after[0].of[0]",
            "cascade-cycle",
            "t_self waits for its own cascade (after names t_self), which only fires once an "
            "instance of it finished (no other member of its group can be satisfied first): "
            "it can never run",
            Severity.ERROR,
        ),
    ]


def test_cascade_cycle__not_when_another_member_can_start_it() -> None:
    config = {
        "t_self": {"after": [{"anyOf": ["t_self", "x"]}], "run": "r"},
        "t_most": {"after": [{"atLeast": 2, "of": ["t_most", "x", "y"]}], "run": "r"},
        "t_a": {"after": [{"anyOf": ["t_b", "x"]}], "run": "r"},
        "t_b": {"after": ["t_a"], "run": "r"},
    }
    assert lint(config) == []


def test_unknown_task__inside_groups() -> None:
    config = {
        **QUESTIONNAIRE,
        # The group can do without the typo: a warning, the task still runs.
        "t_archive": {"after": [{"anyOf": ["t_computScore", "sessionFinalized"]}], "run": "r"},
        "t_audit": {"after": [{"atLeast": 2, "of": ["t_sendReprt", "x", "y"]}], "run": "r"},
        "t_late": {"after": ["x"], "unless": [{"anyOf": ["t_sendReprt", "cancel"]}], "run": "r"},
    }
    found = [f for f in lint(config) if f.rule == "unknown-task"]
    assert found == [
        Finding(
            "t_archive.after[0].anyOf[0]",
            "unknown-task",
            "'t_computScore' is no task of this configuration, so no cascade fires it and it "
            "never counts towards the group t_archive.after[0]; did you mean the task "
            "'t_computeScore'?",
            Severity.WARNING,
        ),
        Finding(
            "t_audit.after[0].of[0]",
            "unknown-task",
            "'t_sendReprt' is no task of this configuration, so no cascade fires it and it "
            "never counts towards the group t_audit.after[0]; did you mean the task "
            "'t_sendReport'?",
            Severity.WARNING,
        ),
        Finding(
            "t_late.unless[0].anyOf[0]",
            "unknown-task",
            "'t_sendReprt' is no task of this configuration, so no cascade fires it and it never "
            "counts towards the unless group t_late.unless[0]; did you mean the task "
            "'t_sendReport'?",
            Severity.WARNING,
        ),
    ]
    # Three of four needed, and only two can fire: the task can never run.
    group = {"atLeast": 3, "of": ["t_sendReprt", "x", "y", "t_computScore"]}
    audit, _ = lint({**QUESTIONNAIRE, "t_audit": {"after": [group], "run": "r"}})
    assert (audit.rule, audit.path, audit.severity) == (
        "unknown-task",
        "t_audit.after[0].of[0]",
        Severity.ERROR,
    )
    assert "t_audit can never run" in audit.message


def test_unless_never_completes__with_groups() -> None:
    config = {
        "t_a": {"after": ["x"], "run": "r"},
        "t_b": {"after": ["t_a"], "run": "r"},
        # t_b only runs after t_a finished: the group can still complete through 'stop'.
        "t_c": {"after": ["t_d"], "unless": [{"anyOf": ["t_e", "stop"]}], "run": "r"},
        "t_d": {"after": ["x"], "run": "r"},
        "t_e": {"after": ["t_c"], "run": "r"},
        # ...but not when 'stop' alone is not enough.
        "t_f": {
            "after": ["x"],
            "unless": [{"atLeast": 2, "of": ["t_g", "stop", "t_h"]}],
            "run": "r",
        },
        "t_g": {"after": [{"anyOf": ["t_f", "t_a"]}, "t_f"], "run": "r"},
        "t_h": {"after": [{"atLeast": 1, "of": ["t_g", "t_h"]}], "run": "r"},
    }
    found = [(f.rule, f.path, f.message) for f in lint(config)]
    assert found == [
        (
            "unless-never-completes",
            "t_f.unless[0].of[0]",
            "the unless condition of t_f can never complete in time: t_g runs only after t_f "
            "finished, and t_f has no andEvery: by the time t_g fires, t_f's only instance has "
            "started, and only unstarted instances are abandoned",
        ),
        (
            "unless-never-completes",
            "t_f.unless[0].of[2]",
            "the unless condition of t_f can never complete in time: t_h runs only after t_f "
            "finished, and t_f has no andEvery: by the time t_h fires, t_f's only instance has "
            "started, and only unstarted instances are abandoned",
        ),
    ]


def test_unless_never_completes__a_member_that_can_never_run() -> None:
    config = {
        "t_a": {"after": [{"anyOf": ["t_b", "t_a"]}], "run": "r"},
        "t_b": {"after": ["t_a"], "run": "r"},
        "t_c": {"after": ["x"], "unless": [{"anyOf": ["t_b", "t_a"]}], "run": "r"},
    }
    found = {f.path: f for f in lint(config) if f.rule == "unless-never-completes"}
    assert sorted(found) == ["t_c.unless[0].anyOf[0]", "t_c.unless[0].anyOf[1]"]
    assert found["t_c.unless[0].anyOf[1]"].message == (
        "the unless condition of t_c can never complete in time: t_a can never run "
        "(it is in a cascade cycle)"
    )


def test_after_and_unless__with_groups() -> None:
    config = {
        # Whatever makes it ready also abandons it.
        "t_never": {
            "after": [{"atLeast": 2, "of": ["a", "b", "c"]}],
            "unless": [{"anyOf": ["a", "b"]}],
            "run": "r",
        },
        # 'x' alone makes it ready without abandoning it.
        "t_maybe": {"after": [{"anyOf": ["x", "y"]}], "unless": ["y"], "run": "r"},
    }
    found = [(f.rule, f.path, f.severity) for f in lint(config)]
    assert found == [
        ("after-and-unless", "t_maybe.unless[0]", Severity.WARNING),
        ("after-and-unless", "t_never.unless[0].anyOf[0]", Severity.ERROR),
        ("after-and-unless", "t_never.unless[0].anyOf[1]", Severity.ERROR),
    ]
    never = lint(config)[1]
    assert never.message == (
        "'a' is in both after and unless of t_never; the unless condition of t_never is met "
        "whenever its after condition is, so whenever it could run it is abandoned instead: "
        "it can never run"
    )


def test_simpler_group() -> None:
    config = {
        "t_a": {
            "after": [{"anyOf": ["x"]}, {"atLeast": 2, "of": ["y", {"anyOf": ["z", "w"]}]}],
            "unless": [{"atLeast": 1, "of": [{"anyOf": ["p", "q"]}]}],
            "run": "r",
        },
        # atLeast all members inside another group cannot be written more simply.
        "t_b": {"after": [{"anyOf": ["x", {"atLeast": 2, "of": ["y", "z"]}]}], "run": "r"},
    }
    assert lint(config) == [
        Finding(
            "t_a.after[0]",
            "simpler-group",
            "a group with one member is satisfied exactly when that member is: write 'x' in "
            "its place",
            Severity.HINT,
        ),
        Finding(
            "t_a.after[1]",
            "simpler-group",
            "atLeast 2 of 2 members needs every one, which is what the after list of t_a means "
            "by itself: write the members as entries of the list",
            Severity.HINT,
        ),
        Finding(
            "t_a.unless[0]",
            "simpler-group",
            "a group with one member is satisfied exactly when that member is: write "
            '{"anyOf": ["p", "q"]} in its place',
            Severity.HINT,
        ),
    ]


def test_extra_like_directive__a_group_key_outside_after() -> None:
    config = {"t_a": {"after": ["x"], "run": "r", "anyOf": ["y", "z"]}}
    (finding,) = lint(config)
    assert (finding.rule, finding.path) == ("extra-like-directive", "t_a.anyOf")
    assert "(a group key; a group is an entry of after or unless" in finding.message


def test_similar_names__inside_groups() -> None:
    config = {
        **QUESTIONNAIRE,
        "t_other": {"after": [{"anyOf": ["x", "pageRecieved"]}], "run": "app.Report"},
    }
    assert rules(config) == [("similar-names", "t_other.after[0].anyOf[1]")]


WORDS = ["x", "y"]
TASKS = ["t_a", "t_b", "t_c", "t_d"]


@st.composite
def grouped_configurations(draw: st.DrawFn) -> dict[str, Any]:
    """Tasks whose after lists (with groups) may name any task, themselves included."""
    names = TASKS[: draw(st.integers(1, len(TASKS)))]
    entries = condition_entries(st.sampled_from([*WORDS, *names]))
    return {
        name: {"after": draw(st.lists(entries, min_size=1, max_size=2, unique_by=repr)), "run": "r"}
        for name in names
    }


@given(grouped_configurations())
def test_a_task_can_run_unless_lint_finds_it_stuck(config: dict[str, Any]) -> None:
    # Every trigger that is no task fires: exactly the tasks lint does not call stuck run.
    state = simulate(config, WORDS)
    ran = {i.task_name for i in state.instances.values() if i.status is Status.FINISHED}
    cycles = [f for f in lint(config) if f.rule == "cascade-cycle"]
    assert not [f for f in lint(config) if f.severity is Severity.ERROR and f not in cycles]
    assert (not cycles) == (ran == set(config))
    for finding in cycles:
        assert finding.path.split(".")[0] not in ran


TIMED = {
    "t_pay": {"after": ["ordered", "t_bill"], "run": "x", "within": "1h", "onMiss": "late"},
    "t_bill": {"after": ["ordered"], "run": "x", "delay": "2h"},
    "t_wait": {"after": ["a", "t_chase"], "run": "x", "within": "1d", "onMiss": "gone"},
    "t_chase": {"after": ["gone"], "run": "x"},
}


def _rules(config: dict[str, Any]) -> set[tuple[str, str, Severity]]:
    return {(f.path, f.rule, f.severity) for f in lint(config)}


def test_delay_longer_than_within() -> None:
    assert ("t_pay.within", "delay-longer-than-within", Severity.WARNING) in _rules(TIMED)
    # The task's own delay starts once its window is met: no conflict.
    own = {"t_a": {"after": ["a"], "run": "x", "within": "1h", "delay": "2h"}}
    assert lint(own) == []


def test_unused_on_miss() -> None:
    found = _rules(TIMED)
    assert ("t_pay.onMiss", "unused-on-miss", Severity.WARNING) in found
    assert ("t_wait.onMiss", "unused-on-miss", Severity.WARNING) not in found  # t_chase uses it


def test_window_never_met() -> None:
    assert ("t_wait.within", "window-never-met", Severity.ERROR) in _rules(TIMED)
