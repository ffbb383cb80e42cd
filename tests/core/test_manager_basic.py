"""End-to-end behaviour: single and multi-trigger tasks, kwargs, validation, errors.

Every test runs on each storage kind of ``storage_factory`` with the threading
runner; assertions wait for the runner, so nothing sleeps.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from triggers_core import (
    ConfigurationError,
    InvalidKwargsError,
    MemoryStorage,
    Status,
    ThreadingTaskRunner,
    TriggerManager,
)
from triggers_core.testing.assertions import (
    assert_instance_finished,
    assert_instance_missing,
    assert_instance_unstarted,
    assert_unresolved_instances,
    assert_unresolved_tasks,
)
from triggers_core.testing.sample_tasks import DevNullTask, FailingTask, PassThruTask

PASS = PassThruTask.name


def names(instances: Any) -> list[str]:
    return [i.name for i in instances]


# -- single and multi-trigger tasks --------------------------------------------------


def test_single_trigger_task_runs_with_fire_kwargs(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "run": PASS}})
    scheduled = manager.fire("x", {"document_id": 42})
    assert names(scheduled) == ["t_a#0"]
    assert scheduled[0].status is Status.SCHEDULED
    instance = assert_instance_finished(manager, "t_a#0", {"kwargs": {"x": {"document_id": 42}}})
    assert instance.metadata["actualKwargs"] == {"x": {"document_id": 42}}
    assert_unresolved_instances(manager, [])
    assert_unresolved_tasks(manager, [])


def test_fire_without_kwargs_records_an_empty_mapping(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "run": PASS}})
    manager.fire("x")
    assert_instance_finished(manager, "t_a#0", {"kwargs": {"x": {}}})
    # The cascade is a trigger too: the task's name fired with its result.
    assert manager.storage.latest_kwargs == {"x": {}, "t_a": {"kwargs": {"x": {}}}}


def test_multi_trigger_task_waits_for_every_trigger(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x", "y", "z"], "run": PASS}})
    assert manager.fire("x", {"n": 1}) == []
    assert manager.fire("y", {"n": 2}) == []
    waiting = assert_instance_unstarted(manager, "t_a#0")
    assert waiting.kwargs == {"x": {"n": 1}, "y": {"n": 2}}
    assert names(manager.fire("z", {"n": 3})) == ["t_a#0"]
    assert_instance_finished(
        manager, "t_a#0", {"kwargs": {"x": {"n": 1}, "y": {"n": 2}, "z": {"n": 3}}}
    )


def test_multi_trigger_task_in_reverse_order(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x", "y"], "run": PASS}})
    manager.fire("y", {"n": 2})
    assert_instance_unstarted(manager, "t_a#0")
    manager.fire("x", {"n": 1})
    assert_instance_finished(manager, "t_a#0", {"kwargs": {"x": {"n": 1}, "y": {"n": 2}}})


def test_only_tasks_using_the_trigger_are_touched(manager: TriggerManager) -> None:
    manager.update_configuration(
        {
            "t_a": {"after": ["x"], "run": PASS},
            "t_b": {"after": ["y"], "run": PASS},
        }
    )
    manager.fire("x")
    assert_instance_finished(manager, "t_a#0", {"kwargs": {"x": {}}})
    assert_instance_missing(manager, "t_b#0")
    assert_unresolved_tasks(manager, ["t_b"])


def test_trigger_nobody_uses_is_still_recorded(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "run": PASS}})
    assert manager.fire("nobodyListens", {"a": 1}) == []
    assert manager.storage.instances == {}
    assert manager.storage.latest_kwargs == {"nobodyListens": {"a": 1}}


# -- kwargs from fire and withParams --------------------------------------------------


def test_with_params_are_deep_merged_under_trigger_kwargs(manager: TriggerManager) -> None:
    manager.update_configuration(
        {
            "t_a": {
                "after": ["x"],
                "run": PASS,
                "withParams": {
                    "x": {"model": "v1", "options": {"depth": 1, "fast": True}},
                    "static": {"region": "eu"},
                },
            }
        }
    )
    manager.fire("x", {"model": "v2", "options": {"depth": 3}})
    expected = {
        "x": {"model": "v2", "options": {"depth": 3, "fast": True}},
        "static": {"region": "eu"},
    }
    instance = assert_instance_finished(manager, "t_a#0", {"kwargs": expected})
    assert instance.metadata["actualKwargs"] == expected
    # The recorded kwargs stay what was fired; withParams only applies when it runs.
    assert instance.kwargs == {"x": {"model": "v2", "options": {"depth": 3}}}


def test_with_params_alone_when_trigger_has_no_kwargs(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": PASS, "withParams": {"x": {"k": "v"}}}}
    )
    manager.fire("x")
    assert_instance_finished(manager, "t_a#0", {"kwargs": {"x": {"k": "v"}}})


def test_extras_are_kept_verbatim(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": PASS, "description": "demo", "owner": ["ops"]}}
    )
    assert manager.storage.tasks["t_a"].extras == {"description": "demo", "owner": ["ops"]}


# -- redundant triggers ---------------------------------------------------------------


def test_redundant_trigger_keeps_first_kwargs_and_one_instance(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x", "y"], "run": PASS}})
    manager.fire("x", {"n": 1})
    manager.fire("x", {"n": 2})
    assert assert_instance_unstarted(manager, "t_a#0").kwargs == {"x": {"n": 1}}
    manager.fire("y")
    assert_instance_finished(manager, "t_a#0", {"kwargs": {"x": {"n": 1}, "y": {}}})
    assert_instance_missing(manager, "t_a#1")
    assert manager.storage.latest_kwargs == {
        "x": {"n": 2},
        "y": {},
        "t_a": {"kwargs": {"x": {"n": 1}, "y": {}}},
    }


def test_redundant_trigger_after_the_task_ran_does_nothing(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "run": PASS}})
    manager.fire("x", {"n": 1})
    assert_instance_finished(manager, "t_a#0", {"kwargs": {"x": {"n": 1}}})
    assert manager.fire("x", {"n": 2}) == []
    assert_instance_missing(manager, "t_a#1")
    assert list(manager.storage.instances) == ["t_a#0"]


# -- configuration ----------------------------------------------------------------------


def test_update_configuration_adds_and_replaces_by_name(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": PASS}, "t_b": {"after": ["y"], "run": PASS}}
    )
    manager.update_configuration({"t_a": {"after": ["z"], "run": DevNullTask.name}})
    tasks = manager.storage.tasks
    assert sorted(tasks) == ["t_a", "t_b"]
    assert tasks["t_a"].after == ("z",)
    assert tasks["t_a"].run == DevNullTask.name
    assert tasks["t_b"].after == ("y",)


def test_new_configuration_never_replays_old_triggers(manager: TriggerManager) -> None:
    manager.fire("x", {"n": 1})
    manager.update_configuration({"t_a": {"after": ["x", "y"], "run": PASS}})
    assert_instance_missing(manager, "t_a#0")
    # The next trigger creates the instance, seeded with x's latest kwargs.
    manager.fire("y", {"n": 2})
    assert_instance_finished(manager, "t_a#0", {"kwargs": {"x": {"n": 1}, "y": {"n": 2}}})


def test_configuration_error_lists_every_problem_and_stores_nothing(
    manager: TriggerManager,
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        manager.update_configuration(
            {
                "t_good": {"after": ["x"], "run": PASS},
                "t_score": {"after": ["x"], "run": PASS, "withParams": {"model": 3}},
                "t_bad#1": {"run": PASS},
                "t_every": {"after": ["x"], "run": PASS, "andEvery": ["a", "b"]},
            }
        )
    assert caught.value.problems == (
        "t_score.withParams.model: expected a mapping, got int",
        "t_bad#1: task name must not contain '#' (it separates instance numbers)",
        "t_bad#1.after: required (the triggers that must fire)",
        "t_every.andEvery: expected a single trigger name (a string), got list",
    )
    assert manager.storage.tasks == {}
    assert manager.storage.load().version is None
    assert manager.fire("x") == []
    assert manager.storage.instances == {}


def test_configuration_error_keeps_the_previous_configuration(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "run": PASS}})
    before = manager.storage.load().version
    with pytest.raises(ConfigurationError):
        manager.update_configuration({"t_a": {"after": "x", "run": PASS}})
    assert manager.storage.tasks["t_a"].after == ("x",)
    assert manager.storage.load().version == before


# -- fire kwargs validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "path", "problem"),
    [
        (["not", "a", "mapping"], "trigger_kwargs", "expected a mapping, got list"),
        ("text", "trigger_kwargs", "expected a mapping, got str"),
        ({"when": object()}, "trigger_kwargs.when", "object is not JSON-serializable"),
        ({"a": {"b": [1, {1, 2}]}}, "trigger_kwargs.a.b[1]", "set is not JSON-serializable"),
        ({"a": {3: "x"}}, "trigger_kwargs.a[3]", "keys must be strings, got int"),
        ({"nan": float("nan")}, "trigger_kwargs.nan", "nan is not representable in JSON"),
    ],
)
def test_fire_rejects_bad_kwargs_before_writing(
    manager: TriggerManager, kwargs: Any, path: str, problem: str
) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "run": PASS}})
    before = manager.storage.load().version
    with pytest.raises(InvalidKwargsError) as caught:
        manager.fire("x", kwargs)
    assert (caught.value.path, caught.value.problem) == (path, problem)
    assert str(caught.value) == f"{path}: {problem}"
    assert isinstance(caught.value, TypeError)
    assert manager.storage.load().version == before
    assert manager.storage.instances == {}
    assert manager.storage.latest_kwargs == {}


def test_fire_accepts_tuples_as_lists(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "run": PASS}})
    manager.fire("x", {"ids": (1, 2)})
    assert_instance_finished(manager, "t_a#0", {"kwargs": {"x": {"ids": [1, 2]}}})


# -- unknown instances --------------------------------------------------------------------


@pytest.mark.parametrize(
    "operation",
    [
        lambda m: m.replay_failed_instance("t_nope#0"),
        lambda m: m.skip_failed_instance("t_nope#0"),
        lambda m: m.update_instance_status("t_nope#0", "skipped"),
        lambda m: m.update_instance_metadata("t_nope#0", {"a": 1}),
        lambda m: m.mark_instance_logs_resolved("t_nope#0"),
        lambda m: m.storage["t_nope#0"],
    ],
    ids=["replay", "skip", "status", "metadata", "logs", "getitem"],
)
def test_unknown_instance_is_a_key_error_naming_it(
    manager: TriggerManager, operation: Callable[[TriggerManager], object]
) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "run": FailingTask.name}})
    with pytest.raises(KeyError) as caught:
        operation(manager)
    assert caught.value.args == ("t_nope#0",)
    assert "'t_nope#0'" in str(caught.value)
    assert manager.storage.instances == {}


def test_runners_lists_given_and_created_runners_as_a_copy(runner: ThreadingTaskRunner) -> None:
    given = TriggerManager(
        MemoryStorage(f"runners-{uuid.uuid4().hex}"), runners={"threading": runner}
    )
    assert given.runners == {"threading": runner}

    lazy = TriggerManager(MemoryStorage(f"runners-{uuid.uuid4().hex}"))
    assert lazy.runners == {}
    created = lazy.get_runner()  # the default runner is created on first use
    assert lazy.runners == {"threading": created}

    lazy.runners.clear()  # a copy: the manager keeps its runners
    assert lazy.runners == {"threading": created}
