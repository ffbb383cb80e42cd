"""The pure engine, one test per rule of SPEC section 3 and per outcome of sections 4-5."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from triggers_core import engine
from triggers_core.engine.effects import (
    InstanceReplayed,
    InstanceSkipped,
    ScheduleInstance,
    TriggerFired,
)
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.errors import (
    ConfigurationError,
    InvalidKwargsError,
    InvalidTransitionError,
    TriggersError,
    UnknownInstanceError,
)

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
T0 = "2024-05-06T07:08:09+00:00"


def later(seconds: int) -> datetime:
    return NOW + timedelta(seconds=seconds)


def stamp(seconds: int) -> str:
    return later(seconds).isoformat()


def configured(config: dict[str, Any]) -> SessionState:
    return engine.update_configuration(SessionState(), config).state


def fire(
    state: SessionState, trigger: str, kwargs: dict[str, Any] | None = None, at: int = 0
) -> engine.Transition:
    return engine.fire(state, trigger, kwargs, now=later(at))


def fire_all(state: SessionState, *triggers: tuple[str, dict[str, Any]]) -> SessionState:
    for trigger, kwargs in triggers:
        state = fire(state, trigger, kwargs).state
    return state


def statuses(state: SessionState) -> dict[str, str]:
    return {name: i.status.value for name, i in sorted(state.instances.items())}


def running(state: SessionState, name: str) -> SessionState:
    return engine.mark_running(state, name, now=NOW).state


def failed(state: SessionState, name: str) -> SessionState:
    return engine.fail(
        running(state, name),
        name,
        now=NOW,
        exception_type="builtins.RuntimeError",
        exception_info="tb",
    ).state


AB = {"t_a": {"after": ["a", "b"], "run": "A"}}
CHAIN = {"t_a": {"after": ["a"], "run": "A"}, "t_b": {"after": ["t_a"], "run": "B"}}


# -- section 3, rule 1: creating instances and recording triggers ------------------------


def test_first_trigger_creates_an_unstarted_instance_recording_its_kwargs() -> None:
    t = fire(configured(AB), "a", {"n": 1})

    instance = t.state.instances["t_a#0"]
    assert instance == TaskInstance(
        name="t_a#0",
        task_name="t_a",
        status=Status.UNSTARTED,
        kwargs={"a": {"n": 1}},
        metadata={"created": T0, "lastModified": T0, "timestamps": {"unstarted": T0}, "depth": 0},
    )
    assert t.state.counters == {"t_a": 1}
    assert t.effects == (TriggerFired("a", ()),)
    assert t.changed == {"t_a#0"}


def test_triggers_complete_in_any_order_and_schedule_the_instance() -> None:
    state = fire(configured(AB), "b", {"y": 2}).state
    t = fire(state, "a", {"x": 1}, at=5)

    assert statuses(t.state) == {"t_a#0": "scheduled"}
    assert t.state.instances["t_a#0"].kwargs == {"a": {"x": 1}, "b": {"y": 2}}
    assert t.effects == (
        ScheduleInstance(
            instance_name="t_a#0",
            task_name="t_a",
            run="A",
            using=None,
            trigger_kwargs={"a": {"x": 1}, "b": {"y": 2}},
            depth=0,
        ),
        TriggerFired("a", ("t_a#0",)),
    )
    assert t.scheduled == ("t_a#0",)
    assert t.state.instances["t_a#0"].metadata["timestamps"] == {
        "unstarted": T0,
        "scheduled": stamp(5),
    }


def test_unstarted_instance_keeps_the_first_kwargs_it_received_for_a_trigger() -> None:
    state = fire_all(configured(AB), ("a", {"v": "first"}), ("a", {"v": "second"}))
    t = fire(state, "b")

    assert t.state.instances["t_a#0"].kwargs == {"a": {"v": "first"}, "b": {}}
    assert t.state.latest_kwargs["a"] == {"v": "second"}


def test_refired_trigger_of_a_task_without_and_every_creates_nothing() -> None:
    state = fire(configured({"t_a": {"after": ["a"], "run": "A"}}), "a", {"n": 1}).state

    t = fire(state, "a", {"n": 2})

    assert statuses(t.state) == {"t_a#0": "scheduled"}
    assert t.state.counters == {"t_a": 1}
    assert t.effects == (TriggerFired("a", ()),)
    assert t.changed == frozenset()


def test_refired_trigger_after_the_instance_finished_creates_nothing() -> None:
    state = fire(configured({"t_a": {"after": ["a"], "run": "A"}}), "a").state
    state = engine.finish(running(state, "t_a#0"), "t_a#0", {}, now=NOW).state

    t = fire(state, "a")

    assert statuses(t.state) == {"t_a#0": "finished"}
    assert t.state.counters == {"t_a": 1}


def test_trigger_no_task_uses_only_records_latest_kwargs() -> None:
    state = configured(AB)

    t = fire(state, "unrelated", {"k": [1, 2]})

    assert t.state.instances == {}
    assert t.state.latest_kwargs == {"unrelated": {"k": [1, 2]}}
    assert t.effects == (TriggerFired("unrelated", ()),)
    assert t.changed == frozenset()


def test_kwargs_default_to_an_empty_mapping_and_are_recorded_as_latest() -> None:
    t = fire(configured(AB), "a")

    assert t.state.instances["t_a#0"].kwargs == {"a": {}}
    assert t.state.latest_kwargs == {"a": {}}


def test_tuple_kwargs_are_stored_as_json_lists() -> None:
    t = fire(configured(AB), "a", {"pair": (1, 2)})

    assert t.state.latest_kwargs["a"] == {"pair": [1, 2]}


def test_and_every_trigger_creates_a_new_instance_each_time_it_fires() -> None:
    state = configured({"t_a": {"after": ["a"], "andEvery": "e", "run": "A"}})
    state = fire_all(state, ("a", {}), ("e", {"i": 0}))
    t = fire(state, "e", {"i": 1})

    assert statuses(t.state) == {"t_a#0": "scheduled", "t_a#1": "scheduled"}
    assert t.state.instances["t_a#1"].kwargs == {"a": {}, "e": {"i": 1}}
    assert t.scheduled == ("t_a#1",)
    assert t.state.counters == {"t_a": 2}


def test_and_every_is_recorded_by_an_unstarted_instance_that_lacks_it_before_creating() -> None:
    state = configured({"t_a": {"after": ["a", "b"], "andEvery": "e", "run": "A"}})
    state = fire_all(state, ("a", {}), ("e", {"i": 0}))
    assert statuses(state) == {"t_a#0": "unstarted"}
    assert state.instances["t_a#0"].kwargs == {"a": {}, "e": {"i": 0}}

    state = fire(state, "e", {"i": 1}).state
    t = fire(state, "b", {})

    assert t.scheduled == ("t_a#0", "t_a#1")
    assert t.state.instances["t_a#1"].kwargs == {"a": {}, "e": {"i": 1}, "b": {}}


def test_and_every_instance_is_seeded_with_the_latest_kwargs_of_other_after_triggers() -> None:
    state = configured({"t_a": {"after": ["a"], "andEvery": "e", "run": "A"}})
    state = fire_all(state, ("a", {"v": 1}), ("e", {}), ("a", {"v": 2}))
    assert state.instances["t_a#0"].kwargs["a"] == {"v": 1}

    t = fire(state, "e", {})

    assert t.state.instances["t_a#1"].kwargs == {"a": {"v": 2}, "e": {}}
    assert t.state.instances["t_a#0"].kwargs == {"a": {"v": 1}, "e": {}}


def test_new_instance_is_seeded_with_unless_triggers_that_already_fired() -> None:
    config = {"t_a": {"after": ["a"], "andEvery": "e", "unless": ["u", "v"], "run": "A"}}
    state = fire_all(configured(config), ("u", {}), ("e", {}), ("e", {}))
    assert statuses(state) == {"t_a#0": "unstarted", "t_a#1": "unstarted"}
    assert state.instances["t_a#1"].unless_fired == {"u"}

    t = fire(state, "v")

    assert statuses(t.state) == {"t_a#0": "abandoned", "t_a#1": "abandoned"}


def test_first_instance_of_a_task_configured_late_is_seeded_from_earlier_triggers() -> None:
    state = fire(SessionState(), "a", {"early": True}).state
    state = engine.update_configuration(state, AB).state
    assert state.instances == {}  # configuring never re-applies old triggers

    t = fire(state, "b")

    assert t.state.instances["t_a#0"].kwargs == {"a": {"early": True}, "b": {}}
    assert t.scheduled == ("t_a#0",)


def test_tasks_sharing_a_trigger_are_handled_in_name_order_with_per_task_numbers() -> None:
    state = configured({"t_b": {"after": ["x"], "run": "B"}, "t_a": {"after": ["x"], "run": "A"}})

    t = fire(state, "x")

    assert [type(e).__name__ for e in t.effects] == [
        "ScheduleInstance",
        "ScheduleInstance",
        "TriggerFired",
    ]
    assert t.scheduled == ("t_a#0", "t_b#0")
    assert t.effects[-1] == TriggerFired("x", ("t_a#0", "t_b#0"))


# -- section 3, rule 3: unless / abandon ---------------------------------------------------

UNLESS = {"t_a": {"after": ["a", "b"], "unless": ["u", "v"], "run": "A"}}


def test_unless_needs_all_of_its_triggers() -> None:
    state = fire_all(configured(UNLESS), ("a", {}), ("u", {}))
    assert statuses(state) == {"t_a#0": "unstarted"}

    t = fire(state, "b")

    assert statuses(t.state) == {"t_a#0": "scheduled"}


def test_unless_fully_fired_abandons_unstarted_instances() -> None:
    state = fire_all(configured(UNLESS), ("a", {}), ("u", {}))

    t = fire(state, "v", at=3)

    instance = t.state.instances["t_a#0"]
    assert instance.status is Status.ABANDONED
    assert instance.unless_fired == {"u", "v"}
    assert instance.metadata["timestamps"]["abandoned"] == stamp(3)
    assert t.effects == (TriggerFired("v", ()),)
    assert fire(t.state, "b").effects == (TriggerFired("b", ()),)


def test_an_unless_trigger_alone_creates_and_abandons_the_first_instance() -> None:
    config = {"t_a": {"after": ["a"], "unless": ["u"], "run": "A"}}
    state = fire(configured(config), "u").state
    assert statuses(state) == {"t_a#0": "abandoned"}  # its first trigger created it

    t = fire(state, "a")

    assert statuses(t.state) == {"t_a#0": "abandoned"}
    assert t.scheduled == ()


def test_abandon_wins_over_schedule_when_both_apply() -> None:
    config = {"t_a": {"after": ["a"], "andEvery": "e", "unless": ["u"], "run": "A"}}
    state = fire_all(configured(config), ("a", {}), ("e", {}), ("u", {}))
    assert statuses(state) == {"t_a#0": "scheduled"}

    t = fire(state, "e")  # seeded with a (ready) and with u (all unless fired)

    assert statuses(t.state) == {"t_a#0": "scheduled", "t_a#1": "abandoned"}
    assert t.scheduled == ()


def test_unless_does_not_touch_an_instance_that_already_started() -> None:
    state = fire_all(configured(UNLESS), ("a", {}), ("b", {}), ("u", {}))

    t = fire(state, "v")

    assert statuses(t.state) == {"t_a#0": "scheduled"}


# -- kwargs a task receives -----------------------------------------------------------------


def test_with_params_deep_merge_under_trigger_kwargs() -> None:
    config = {
        "t_a": {
            "after": ["a"],
            "run": "A",
            "withParams": {
                "a": {"model": "v1", "opts": {"depth": 1, "mode": "fast"}, "n": {"x": 1}},
                "other": {"injected": True},
            },
        }
    }
    t = fire(configured(config), "a", {"opts": {"mode": "slow", "new": 1}, "n": 5})

    assert t.effects[0] == ScheduleInstance(
        instance_name="t_a#0",
        task_name="t_a",
        run="A",
        using=None,
        trigger_kwargs={
            "a": {"model": "v1", "opts": {"depth": 1, "mode": "slow", "new": 1}, "n": 5},
            "other": {"injected": True},
        },
    )
    # the instance keeps the raw trigger kwargs; the merge happens on the way out
    assert t.state.instances["t_a#0"].kwargs == {"a": {"opts": {"mode": "slow", "new": 1}, "n": 5}}


def test_using_and_run_are_passed_on_in_the_schedule_effect() -> None:
    t = fire(configured({"t_a": {"after": ["a"], "run": "A", "using": "celery"}}), "a")

    assert t.effects[0] == ScheduleInstance("t_a#0", "t_a", "A", "celery", {"a": {}})


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ([1], "trigger_kwargs"),
        ({"user": {"tags": ["ok", {1, 2}]}}, "trigger_kwargs.user.tags[1]"),
        ({"x": float("nan")}, "trigger_kwargs.x"),
        ({1: "x"}, "trigger_kwargs[1]"),
    ],
)
def test_kwargs_must_be_a_json_mapping_and_the_error_names_the_key_path(
    kwargs: Any, path: str
) -> None:
    with pytest.raises(InvalidKwargsError) as caught:
        engine.fire(configured(AB), "a", kwargs, now=NOW)

    assert caught.value.path == path
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize("name", ["", None, 3])
def test_trigger_name_must_be_a_non_empty_string(name: Any) -> None:
    with pytest.raises(InvalidKwargsError, match="trigger_name: expected a non-empty string"):
        engine.fire(SessionState(), name, now=NOW)


# -- configuration updates --------------------------------------------------------------------


def test_update_configuration_adds_and_replaces_tasks_by_name() -> None:
    state = configured({"t_a": {"after": ["a"], "run": "A"}, "t_b": {"after": ["b"], "run": "B"}})

    t = engine.update_configuration(state, {"t_a": {"after": ["x"], "run": "A2"}})

    assert t.state.tasks["t_a"].after == ("x",)
    assert t.state.tasks["t_a"].run == "A2"
    assert t.state.tasks["t_b"] == state.tasks["t_b"]
    assert t.effects == ()
    assert t.changed == frozenset()


def test_bad_configuration_changes_nothing() -> None:
    state = configured(AB)

    with pytest.raises(ConfigurationError):
        engine.update_configuration(state, {"t_c": {"after": ["c"], "run": "C"}, "t_d": {}})

    assert set(state.tasks) == {"t_a"}


def test_update_configuration_accepts_parsed_task_configs_with_matching_names() -> None:
    parsed = configured(AB).tasks

    assert engine.update_configuration(SessionState(), parsed).state.tasks == parsed
    with pytest.raises(ConfigurationError, match="t_x: key does not match TaskConfig name 't_a'"):
        engine.update_configuration(SessionState(), {"t_x": parsed["t_a"]})


# -- section 4: running an instance --------------------------------------------------------


def scheduled_chain() -> SessionState:
    config = {**CHAIN, "t_a": {"after": ["a"], "run": "A", "withParams": {"a": {"p": 1}}}}
    return fire(configured(config), "a", {"q": 2}).state


def test_mark_running_records_actual_kwargs_and_timestamp() -> None:
    t = engine.mark_running(scheduled_chain(), "t_a#0", now=later(7))

    instance = t.state.instances["t_a#0"]
    assert instance.status is Status.RUNNING
    assert instance.metadata["actualKwargs"] == {"a": {"p": 1, "q": 2}}
    assert instance.metadata["timestamps"]["running"] == stamp(7)
    assert instance.metadata["lastModified"] == stamp(7)
    assert instance.metadata["created"] == T0
    assert t.effects == ()
    assert t.changed == {"t_a#0"}


def test_only_scheduled_instances_can_run() -> None:
    state = fire(configured(AB), "a").state

    with pytest.raises(InvalidTransitionError) as caught:
        engine.mark_running(state, "t_a#0", now=NOW)

    assert str(caught.value) == (
        "cannot run instance 't_a#0' in status 'unstarted': only scheduled instances can run"
    )
    assert (caught.value.instance, caught.value.status, caught.value.operation) == (
        "t_a#0",
        "unstarted",
        "run",
    )


def test_finish_records_the_result_and_cascades_in_the_same_transition() -> None:
    state = running(scheduled_chain(), "t_a#0")

    t = engine.finish(state, "t_a#0", {"score": 3}, now=later(9), log_level=logging.WARNING)

    finished = t.state.instances["t_a#0"]
    assert finished.status is Status.FINISHED
    assert finished.metadata["result"] == {"score": 3}
    assert finished.metadata["timestamps"]["finished"] == stamp(9)
    assert finished.log_level == logging.WARNING
    assert t.state.instances["t_b#0"].status is Status.SCHEDULED
    assert t.state.instances["t_b#0"].kwargs == {"t_a": {"score": 3}}
    assert t.state.latest_kwargs["t_a"] == {"score": 3}
    assert t.effects == (
        ScheduleInstance("t_b#0", "t_b", "B", None, {"t_a": {"score": 3}}),
        TriggerFired("t_a", ("t_b#0",)),
    )
    assert t.changed == {"t_a#0", "t_b#0"}


def test_finish_with_none_cascades_empty_kwargs() -> None:
    t = engine.finish(running(scheduled_chain(), "t_a#0"), "t_a#0", None, now=NOW)

    assert t.state.instances["t_a#0"].metadata["result"] == {}
    assert t.state.instances["t_b#0"].kwargs == {"t_a": {}}


def test_finish_with_a_non_mapping_result_raises_and_changes_nothing() -> None:
    state = running(scheduled_chain(), "t_a#0")

    with pytest.raises(InvalidKwargsError, match="result: expected a mapping, got list"):
        engine.finish(state, "t_a#0", [1, 2], now=NOW)  # type: ignore[arg-type]

    assert state.instances["t_a#0"].status is Status.RUNNING
    assert "t_b#0" not in state.instances


@pytest.mark.parametrize("status", ["unstarted", "scheduled"])
def test_only_running_instances_can_finish(status: str) -> None:
    state = scheduled_chain()
    if status == "unstarted":
        state = fire(configured(AB), "a").state

    with pytest.raises(
        InvalidTransitionError, match=f"cannot finish instance 't_a#0' in status '{status}'"
    ):
        engine.finish(state, "t_a#0", {}, now=NOW)


def test_fail_records_the_exception_and_does_not_cascade() -> None:
    state = running(scheduled_chain(), "t_a#0")

    t = engine.fail(
        state,
        "t_a#0",
        now=later(4),
        exception_type="builtins.RuntimeError",
        exception_info="Traceback ...\nRuntimeError: boom",
        exception_context={"row": 7},
        log_level=logging.CRITICAL,
    )

    instance = t.state.instances["t_a#0"]
    assert instance.status is Status.FAILED
    assert {
        k: instance.metadata[k]
        for k in ("exceptionType", "exceptionInfo", "exceptionContext", "logLevel")
    } == {
        "exceptionType": "builtins.RuntimeError",
        "exceptionInfo": "Traceback ...\nRuntimeError: boom",
        "exceptionContext": {"row": 7},
        "logLevel": logging.CRITICAL,
    }
    assert instance.metadata["timestamps"]["failed"] == stamp(4)
    assert instance.log_level == logging.CRITICAL
    assert instance.log_level_name == "CRITICAL"
    assert not instance.logs_resolved
    assert "t_b#0" not in t.state.instances
    assert "t_a" not in t.state.latest_kwargs
    assert t.effects == ()


def test_a_scheduled_instance_can_fail_when_dispatch_fails() -> None:
    t = engine.fail(scheduled_chain(), "t_a#0", now=NOW, exception_type="x.Err", exception_info="")

    assert t.state.instances["t_a#0"].status is Status.FAILED
    assert t.state.instances["t_a#0"].metadata["exceptionContext"] == {}


def test_only_running_or_scheduled_instances_can_fail() -> None:
    with pytest.raises(
        InvalidTransitionError, match="only running or scheduled instances can fail"
    ):
        engine.fail(
            fire(configured(AB), "a").state, "t_a#0", now=NOW, exception_type="x", exception_info=""
        )


def test_skip_self_marks_skipped_with_metadata_and_no_cascade() -> None:
    t = engine.skip_self(
        running(scheduled_chain(), "t_a#0"), "t_a#0", now=later(2), metadata={"why": "dup"}
    )

    instance = t.state.instances["t_a#0"]
    assert instance.status is Status.SKIPPED
    assert instance.metadata["why"] == "dup"
    assert instance.metadata["timestamps"]["skipped"] == stamp(2)
    assert set(t.state.instances) == {"t_a#0"}
    assert t.effects == ()


def test_only_running_instances_can_skip_themselves() -> None:
    with pytest.raises(
        InvalidTransitionError, match="cannot skip itself instance 't_a#0' in status 'scheduled'"
    ):
        engine.skip_self(scheduled_chain(), "t_a#0", now=NOW)


def test_retry_fails_the_instance_and_its_clone_waits_for_the_cooldown_timer() -> None:
    state = running(scheduled_chain(), "t_a#0")

    t = engine.retry_self(state, "t_a#0", now=later(1), max_retries=3, cooldown=2.5)

    old, clone = t.state.instances["t_a#0"], t.state.instances["t_a#1"]
    assert old.status is Status.REPLAYED
    assert old.metadata["exceptionType"] == "triggers_core.tasks.RetryTask"
    assert old.metadata["replayedAs"] == "t_a#1"
    assert set(old.metadata["timestamps"]) == {
        "unstarted",
        "scheduled",
        "running",
        "failed",
        "replayed",
    }
    # The cooldown is a durable timer of the unstarted clone, never a delayed dispatch.
    assert clone.status is Status.UNSTARTED
    assert clone.metadata["delayedUntil"] == (later(1) + timedelta(seconds=2.5)).isoformat()
    assert clone.metadata["retryCooldown"] == 2.5
    assert clone.retries == 1
    assert clone.kwargs == old.kwargs == {"a": {"q": 2}}
    assert clone.metadata["parent"] == "t_a#0"
    assert clone.metadata["depth"] == 1
    assert t.effects == (InstanceReplayed("t_a#0", "t_a#1"),)
    assert t.changed == {"t_a#0", "t_a#1"}
    # Not yet due: nothing happens; at the due time it is scheduled, once.
    assert not engine.advance(t.state, later(3.4)).commit
    due = engine.advance(t.state, later(3.5))
    assert due.state.instances["t_a#1"].status is Status.SCHEDULED
    assert due.effects == (
        ScheduleInstance("t_a#1", "t_a", "A", None, {"a": {"p": 1, "q": 2}}, depth=1),
    )
    assert not engine.advance(due.state, later(60)).commit


def test_retry_with_replacement_kwargs_replaces_them_wholly() -> None:
    state = running(scheduled_chain(), "t_a#0")

    t = engine.retry_self(
        state, "t_a#0", now=NOW, max_retries=1, replacement_kwargs={"other": {"z": 1}}
    )

    assert t.state.instances["t_a#1"].kwargs == {"other": {"z": 1}}


def test_retry_past_max_retries_fails_with_max_retries_exceeded() -> None:
    state = running(scheduled_chain(), "t_a#0")
    for name, clone in (("t_a#0", "t_a#1"), ("t_a#1", "t_a#2")):
        state = running(engine.retry_self(state, name, now=NOW, max_retries=2).state, clone)
    assert state.instances["t_a#2"].retries == 2

    t = engine.retry_self(
        state,
        "t_a#2",
        now=NOW,
        max_retries=2,
        exception_type="builtins.IOError",
        exception_info="disk",
    )

    instance = t.state.instances["t_a#2"]
    assert instance.status is Status.FAILED
    assert instance.metadata["exceptionType"] == engine.MAX_RETRIES_EXCEEDED_TYPE
    assert instance.metadata["exceptionType"] == "triggers_core.errors.MaxRetriesExceeded"
    assert instance.metadata["exceptionInfo"] == (
        "t_a#2 asked to retry after 2 retries (max_retries=2); last error builtins.IOError:\ndisk"
    )
    assert instance.log_level == logging.ERROR
    assert t.effects == ()
    assert "t_a#3" not in t.state.instances
    assert t.state.counters["t_a"] == 3


@pytest.mark.parametrize(
    "cooldown", [-1, -0.5, float("nan"), float("inf"), 1e300, 86_400.5, True, "5"]
)
def test_retry_with_a_bad_cooldown_is_rejected(cooldown: Any) -> None:
    with pytest.raises(ValueError, match=r"cooldown must be a number of seconds from 0 to 86400"):
        engine.retry_self(
            running(scheduled_chain(), "t_a#0"), "t_a#0", now=NOW, max_retries=3, cooldown=cooldown
        )


@pytest.mark.parametrize(("cooldown", "seconds"), [(2, 2.0), (86_400, 86_400.0)])
def test_retry_cooldown_range_is_inclusive(cooldown: float, seconds: float) -> None:
    t = engine.retry_self(
        running(scheduled_chain(), "t_a#0"), "t_a#0", now=NOW, max_retries=3, cooldown=cooldown
    )
    clone = t.state.instances["t_a#1"]
    assert clone.metadata["retryCooldown"] == seconds
    assert clone.metadata["delayedUntil"] == (NOW + timedelta(seconds=seconds)).isoformat()


@pytest.mark.parametrize("cooldown", [None, 0, 0.0])
def test_retry_without_a_cooldown_schedules_the_clone_at_once(cooldown: float | None) -> None:
    t = engine.retry_self(
        running(scheduled_chain(), "t_a#0"), "t_a#0", now=NOW, max_retries=3, cooldown=cooldown
    )
    clone = t.state.instances["t_a#1"]
    assert clone.status is Status.SCHEDULED
    assert "delayedUntil" not in clone.metadata
    assert "retryCooldown" not in clone.metadata
    assert t.scheduled == ("t_a#1",)


OPERATIONS = {
    "mark_running": lambda s, n: engine.mark_running(s, n, now=NOW),
    "finish": lambda s, n: engine.finish(s, n, {}, now=NOW),
    "fail": lambda s, n: engine.fail(s, n, now=NOW, exception_type="x", exception_info=""),
    "skip_self": lambda s, n: engine.skip_self(s, n, now=NOW),
    "retry_self": lambda s, n: engine.retry_self(s, n, now=NOW, max_retries=1),
    "replay_failed": lambda s, n: engine.replay_failed(s, n, now=NOW),
    "skip_failed": lambda s, n: engine.skip_failed(s, n, now=NOW),
    "update_status": lambda s, n: engine.update_status(s, n, "failed", now=NOW),
    "update_metadata": lambda s, n: engine.update_metadata(s, n, {}, now=NOW),
    "mark_logs_resolved": lambda s, n: engine.mark_logs_resolved(s, n, now=NOW),
}


# -- section 5: recovery and manual control -------------------------------------------------------


def test_replay_failed_creates_a_scheduled_clone_with_the_same_kwargs() -> None:
    state = failed(scheduled_chain(), "t_a#0")

    t = engine.replay_failed(state, "t_a#0", now=later(6))

    old, clone = t.state.instances["t_a#0"], t.state.instances["t_a#1"]
    assert old.status is Status.REPLAYED
    assert old.metadata["timestamps"]["replayed"] == stamp(6)
    assert clone.status is Status.SCHEDULED
    assert clone.kwargs == {"a": {"q": 2}}
    assert clone.retries == 0
    assert clone.metadata == {
        "created": stamp(6),
        "lastModified": stamp(6),
        "timestamps": {"unstarted": stamp(6), "scheduled": stamp(6)},
        "parent": "t_a#0",
        "depth": 1,
        "runKey": "t_a#0",
    }
    assert t.effects == (
        ScheduleInstance("t_a#1", "t_a", "A", None, {"a": {"p": 1, "q": 2}}, depth=1),
        InstanceReplayed("t_a#0", "t_a#1"),
    )
    assert not any(isinstance(e, TriggerFired) for e in t.effects)


def test_replay_uses_the_current_configuration_of_the_task() -> None:
    state = failed(scheduled_chain(), "t_a#0")
    state = engine.update_configuration(
        state,
        {"t_a": {"after": ["a"], "run": "A2", "using": "celery", "withParams": {"a": {"p": 9}}}},
    ).state

    t = engine.replay_failed(state, "t_a#0", now=NOW)

    assert t.effects[0] == ScheduleInstance(
        "t_a#1", "t_a", "A2", "celery", {"a": {"p": 9, "q": 2}}, depth=1
    )


def test_replacement_kwargs_on_replay_replace_wholly() -> None:
    state = configured({"t_a": {"after": ["a", "b"], "run": "A"}})
    state = failed(fire_all(state, ("a", {"x": 1}), ("b", {"y": 2})), "t_a#0")

    t = engine.replay_failed(state, "t_a#0", {"a": {"z": 3}}, now=NOW)

    assert t.state.instances["t_a#1"].kwargs == {"a": {"z": 3}}
    assert t.effects[0].trigger_kwargs == {"a": {"z": 3}}  # type: ignore[union-attr]


def test_replacement_kwargs_must_map_triggers_to_mappings() -> None:
    state = failed(scheduled_chain(), "t_a#0")

    with pytest.raises(InvalidKwargsError, match=r"replacement_kwargs\.a: expected a mapping"):
        engine.replay_failed(state, "t_a#0", {"a": 1}, now=NOW)


def test_replaying_a_replay_increases_depth() -> None:
    state = engine.replay_failed(failed(scheduled_chain(), "t_a#0"), "t_a#0", now=NOW).state

    t = engine.replay_failed(failed(state, "t_a#1"), "t_a#1", now=NOW)

    assert t.state.instances["t_a#2"].metadata["depth"] == 2
    assert t.state.instances["t_a#2"].metadata["parent"] == "t_a#1"


@pytest.mark.parametrize("operation", ["replay", "skip"])
def test_only_failed_instances_can_be_replayed_or_skipped(operation: str) -> None:
    state = scheduled_chain()

    call = OPERATIONS["replay_failed" if operation == "replay" else "skip_failed"]

    with pytest.raises(InvalidTransitionError) as caught:
        call(state, "t_a#0")

    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == (
        f"cannot {operation} instance 't_a#0' in status 'scheduled': "
        f"only failed instances can {operation}"
    )


def test_skip_failed_without_cascade() -> None:
    state = failed(scheduled_chain(), "t_a#0")

    t = engine.skip_failed(state, "t_a#0", now=later(8))

    assert statuses(t.state) == {"t_a#0": "skipped"}
    assert t.state.instances["t_a#0"].metadata["timestamps"]["skipped"] == stamp(8)
    assert t.effects == (InstanceSkipped("t_a#0", False),)
    assert "t_a" not in t.state.latest_kwargs


def test_skip_failed_with_cascade_fires_the_task_name_with_the_result() -> None:
    state = failed(scheduled_chain(), "t_a#0")

    t = engine.skip_failed(state, "t_a#0", now=NOW, cascade=True, result={"manual": True})

    assert statuses(t.state) == {"t_a#0": "skipped", "t_b#0": "scheduled"}
    assert t.effects == (
        ScheduleInstance("t_b#0", "t_b", "B", None, {"t_a": {"manual": True}}),
        TriggerFired("t_a", ("t_b#0",)),
        InstanceSkipped("t_a#0", True),
    )
    assert t.changed == {"t_a#0", "t_b#0"}


def test_update_status_forces_a_status_with_metadata() -> None:
    t = engine.update_status(
        scheduled_chain(), "t_a#0", "failed", now=later(3), metadata={"by": "ops"}
    )

    instance = t.state.instances["t_a#0"]
    assert instance.status is Status.FAILED
    assert instance.metadata["by"] == "ops"
    assert instance.metadata["timestamps"]["failed"] == stamp(3)
    assert t.effects == ()


def test_update_status_can_cascade_with_kwargs() -> None:
    t = engine.update_status(
        scheduled_chain(), "t_a#0", Status.FINISHED, now=NOW, cascade=True, cascade_kwargs={"k": 1}
    )

    assert statuses(t.state) == {"t_a#0": "finished", "t_b#0": "scheduled"}
    assert t.effects[-1] == TriggerFired("t_a", ("t_b#0",))
    assert t.state.instances["t_b#0"].kwargs == {"t_a": {"k": 1}}


def test_update_status_rejects_an_unknown_status() -> None:
    with pytest.raises(ValueError, match="unknown status 'done'; known: unstarted, scheduled"):
        engine.update_status(scheduled_chain(), "t_a#0", "done", now=NOW)


def test_update_metadata_merges_and_bumps_last_modified_only() -> None:
    state = scheduled_chain()

    t = engine.update_metadata(state, "t_a#0", {"note": "hi"}, now=later(5))

    before, after = state.instances["t_a#0"], t.state.instances["t_a#0"]
    assert after.status is Status.SCHEDULED
    assert after.metadata == {**before.metadata, "note": "hi", "lastModified": stamp(5)}
    assert t.changed == {"t_a#0"}


def test_merged_metadata_never_replaces_the_engines_bookkeeping() -> None:
    state = engine.replay_failed(failed(scheduled_chain(), "t_a#0"), "t_a#0", now=NOW).state
    before = state.instances["t_a#1"].metadata
    junk = {"created": 0, "timestamps": 0, "depth": "x", "parent": None, "note": 1}

    t = engine.update_metadata(state, "t_a#1", junk, now=later(1))

    after = t.state.instances["t_a#1"].metadata
    assert after == {**before, "note": 1, "lastModified": stamp(1)}
    running_clone = engine.mark_running(t.state, "t_a#1", now=later(2)).state
    assert running_clone.instances["t_a#1"].metadata["timestamps"]["running"] == stamp(2)


def test_mark_logs_resolved() -> None:
    state = failed(scheduled_chain(), "t_a#0")
    assert not state.instances["t_a#0"].logs_resolved

    t = engine.mark_logs_resolved(state, "t_a#0", now=later(5))

    instance = t.state.instances["t_a#0"]
    assert instance.logs_resolved
    assert instance.log_level == logging.ERROR
    assert instance.status is Status.FAILED
    assert instance.metadata["lastModified"] == stamp(5)


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_unknown_instance_is_a_key_error_naming_it(operation: str) -> None:
    with pytest.raises(KeyError) as caught:
        OPERATIONS[operation](scheduled_chain(), "t_a#7")

    assert isinstance(caught.value, UnknownInstanceError)
    assert isinstance(caught.value, TriggersError)
    assert caught.value.instance == "t_a#7"
    assert str(caught.value) == "no task instance named 't_a#7'"


# -- time ------------------------------------------------------------------------------------------


def test_timestamps_are_iso_8601_utc_even_for_other_time_zones() -> None:
    plus_two = datetime(2024, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2)))

    t = engine.fire(configured(AB), "a", now=plus_two)

    assert t.state.instances["t_a#0"].metadata["created"] == T0


@pytest.mark.parametrize("operation", ["fire", "mark_running"])
def test_naive_datetimes_are_rejected(operation: str) -> None:
    naive = datetime(2024, 5, 6, 7, 8, 9)
    state = configured(AB) if operation == "fire" else scheduled_chain()
    call = getattr(engine, operation)
    args = ("a",) if operation == "fire" else ("t_a#0",)

    with pytest.raises(ValueError, match="now must be a timezone-aware datetime"):
        call(state, *args, now=naive)


# -- section 6: meta-statuses ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "flags"),
    [
        (Status.UNSTARTED, {"can_schedule", "can_abandon"}),
        (Status.SCHEDULED, {"can_run"}),
        (Status.RUNNING, set()),
        (Status.FINISHED, {"is_resolved"}),
        (Status.FAILED, {"can_replay", "can_skip"}),
        (Status.SKIPPED, {"is_resolved"}),
        (Status.REPLAYED, {"is_resolved"}),
        (Status.ABANDONED, {"is_resolved"}),
    ],
)
def test_meta_statuses(status: Status, flags: set[str]) -> None:
    instance = TaskInstance(name="t_a#0", task_name="t_a", status=status)
    names = ("can_run", "can_schedule", "can_abandon", "can_replay", "can_skip", "is_resolved")

    assert {n for n in names if getattr(instance, n)} == flags


@pytest.mark.parametrize(
    ("level", "name", "resolved"),
    [
        (logging.NOTSET, "NOTSET", True),
        (logging.WARNING, "WARNING", True),
        (logging.ERROR, "ERROR", False),
        (logging.CRITICAL, "CRITICAL", False),
    ],
)
def test_log_level_and_logs_resolved_threshold(level: int, name: str, resolved: bool) -> None:
    instance = TaskInstance(name="t_a#0", task_name="t_a", status=Status.FINISHED, log_level=level)

    assert instance.log_level_name == name
    assert instance.logs_resolved is resolved


@pytest.mark.parametrize("key", ["status", "ts", "instance", "exceptionType", "timestamps"])
@pytest.mark.parametrize("operation", ["skip_self", "fail", "retry_self", "update_status"])
def test_user_metadata_may_use_any_key(operation: str, key: str) -> None:
    state = running(scheduled_chain(), "t_a#0")
    metadata = {key: "user"}
    calls = {
        "skip_self": lambda: engine.skip_self(state, "t_a#0", now=NOW, metadata=metadata),
        "fail": lambda: engine.fail(
            state, "t_a#0", now=NOW, exception_type="x.E", exception_info="", metadata=metadata
        ),
        "retry_self": lambda: engine.retry_self(
            state, "t_a#0", now=NOW, max_retries=0, metadata=metadata
        ),
        "update_status": lambda: engine.update_status(
            state, "t_a#0", "skipped", now=NOW, metadata=metadata
        ),
    }

    recorded = calls[operation]().state.instances["t_a#0"].metadata

    if key == "timestamps":  # the engine's own bookkeeping wins
        assert isinstance(recorded["timestamps"], dict)
    elif key == "exceptionType" and operation in {"fail", "retry_self"}:
        assert recorded["exceptionType"] != "user"  # the recorded exception wins
    else:
        assert recorded[key] == "user"
