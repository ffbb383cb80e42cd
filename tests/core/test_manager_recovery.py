"""End-to-end behaviour: replay, skip and the operators' tools (status, metadata, logs)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import pytest

from triggers_core import (
    InvalidTransitionError,
    Status,
    Storage,
    TaskContext,
    ThreadingTaskRunner,
    TriggerManager,
    TriggerTask,
)
from triggers_core.testing.assertions import (
    assert_instance_failed,
    assert_instance_finished,
    assert_instance_missing,
    assert_instance_replayed,
    assert_instance_skipped,
    assert_instance_unstarted,
    assert_unresolved_instances,
)
from triggers_core.testing.clock import FakeClock
from triggers_core.testing.sample_tasks import DevNullTask, FailingTask, PassThruTask

PASS = PassThruTask.name
FAIL = FailingTask.name


class NeedsTokenTask(TriggerTask):
    """Fails unless its ``x`` kwargs carry a token; returns the token."""

    name: ClassVar[str] = "tests.core.recovery.NeedsTokenTask"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        token = context.trigger_kwargs.get("x", {}).get("token")
        if token is None:
            raise LookupError("no token")
        return {"token": token}


@pytest.fixture
def manager(
    storage_factory: Callable[[str], Storage], session_uid: str, runner: ThreadingTaskRunner
) -> TriggerManager:
    return TriggerManager(
        storage_factory(session_uid),
        runners={"threading": runner},
        clock=FakeClock(step="1s"),  # moves one second per reading
    )


# -- replay ---------------------------------------------------------------------------


def test_replay_with_the_same_kwargs(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x", "y"], "run": FAIL}})
    manager.fire("x", {"n": 1})
    manager.fire("y", {"n": 2})
    assert_instance_failed(manager, "t_a#0", RuntimeError)
    clone = manager.replay_failed_instance("t_a#0")
    assert clone.name == "t_a#1"
    assert clone.status is Status.SCHEDULED
    replayed = assert_instance_replayed(manager, "t_a#0")
    assert replayed.metadata["replayedAs"] == "t_a#1"
    again = assert_instance_failed(manager, "t_a#1", RuntimeError)
    assert again.kwargs == {"x": {"n": 1}, "y": {"n": 2}}
    assert again.metadata["parent"] == "t_a#0"
    assert again.metadata["depth"] == 1
    assert "RuntimeError: t_a#1 failed on purpose" in again.metadata["exceptionInfo"]
    # Replaying the replay goes one level deeper.
    manager.replay_failed_instance(again)
    deeper = assert_instance_failed(manager, "t_a#2", RuntimeError)
    assert (deeper.metadata["parent"], deeper.metadata["depth"]) == ("t_a#1", 2)
    assert_unresolved_instances(manager, ["t_a#2"])


def test_replay_with_replacement_kwargs(manager: TriggerManager) -> None:
    manager.update_configuration(
        {
            "t_a": {"after": ["x", "y"], "run": NeedsTokenTask.name},
            "t_b": {"after": ["t_a"], "run": PASS},
        }
    )
    manager.fire("x", {"n": 1})
    manager.fire("y", {"n": 2})
    assert_instance_failed(manager, "t_a#0", LookupError)
    assert_instance_missing(manager, "t_b#0")
    manager.replay_failed_instance("t_a#0", {"x": {"token": "abc"}})
    # Replacement kwargs replace the recorded ones wholly (y is gone).
    clone = assert_instance_finished(manager, "t_a#1", {"token": "abc"})
    assert clone.kwargs == {"x": {"token": "abc"}}
    assert clone.metadata["actualKwargs"] == {"x": {"token": "abc"}}
    assert_instance_finished(manager, "t_b#0", {"kwargs": {"t_a": {"token": "abc"}}})
    assert_instance_replayed(manager, "t_a#0")


def test_replay_after_a_configuration_change(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x"], "run": FAIL}})
    manager.fire("x", {"n": 1})
    assert_instance_failed(manager, "t_a#0", RuntimeError)
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": PASS, "withParams": {"x": {"fixed": True}}}}
    )
    manager.replay_failed_instance("t_a#0")
    assert_instance_finished(manager, "t_a#1", {"kwargs": {"x": {"n": 1, "fixed": True}}})


@pytest.mark.parametrize("status", ["unstarted", "finished", "replayed"])
def test_replay_refuses_instances_that_did_not_fail(manager: TriggerManager, status: str) -> None:
    manager.update_configuration(
        {
            "t_unstarted": {"after": ["x", "never"], "run": PASS},
            "t_finished": {"after": ["x"], "run": PASS},
            "t_replayed": {"after": ["x"], "run": FAIL},
        }
    )
    manager.fire("x")
    assert_instance_failed(manager, "t_replayed#0", RuntimeError)
    manager.replay_failed_instance("t_replayed#0")
    assert_instance_failed(manager, "t_replayed#1", RuntimeError)
    name = f"t_{status}#0"
    before = manager.storage[name]
    with pytest.raises(ValueError, match=f"'{name}' in status '{status}'") as caught:
        manager.replay_failed_instance(name)
    assert isinstance(caught.value, InvalidTransitionError)
    assert (caught.value.instance, caught.value.status) == (name, status)
    assert manager.storage[name] == before
    assert_instance_missing(manager, "t_replayed#2")


# -- skip -------------------------------------------------------------------------------


def test_skip_failed_instance_without_cascade(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": FAIL}, "t_b": {"after": ["t_a"], "run": PASS}}
    )
    manager.fire("x")
    assert_instance_failed(manager, "t_a#0", RuntimeError)
    skipped = manager.skip_failed_instance("t_a#0")
    assert skipped.status is Status.SKIPPED
    assert_instance_skipped(manager, "t_a#0")
    assert_instance_missing(manager, "t_b#0")
    assert "t_a" not in manager.storage.latest_kwargs
    assert_unresolved_instances(manager, [])


def test_skip_failed_instance_with_cascade(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": FAIL}, "t_b": {"after": ["t_a"], "run": PASS}}
    )
    manager.fire("x")
    assert_instance_failed(manager, "t_a#0", RuntimeError)
    manager.skip_failed_instance("t_a#0", cascade=True, result={"score": 0})
    assert_instance_skipped(manager, "t_a#0")
    assert_instance_finished(manager, "t_b#0", {"kwargs": {"t_a": {"score": 0}}})


def test_skip_with_cascade_and_no_result_fires_empty_kwargs(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": FAIL}, "t_b": {"after": ["t_a"], "run": PASS}}
    )
    manager.fire("x")
    assert_instance_failed(manager, "t_a#0", RuntimeError)
    manager.skip_failed_instance("t_a#0", cascade=True)
    assert_instance_finished(manager, "t_b#0", {"kwargs": {"t_a": {}}})


@pytest.mark.parametrize("cascade", [False, True])
def test_skip_refuses_instances_that_did_not_fail(manager: TriggerManager, cascade: bool) -> None:
    manager.update_configuration(
        {
            "t_a": {"after": ["x"], "run": DevNullTask.name},
            "t_b": {"after": ["t_a"], "run": PASS},
            "t_wait": {"after": ["x", "y"], "run": PASS},
        }
    )
    manager.fire("x")
    assert_instance_finished(manager, "t_b#0")
    with pytest.raises(ValueError, match="'t_a#0' in status 'finished'"):
        manager.skip_failed_instance("t_a#0", cascade=cascade)
    with pytest.raises(ValueError, match="'t_wait#0' in status 'unstarted'"):
        manager.skip_failed_instance("t_wait#0", cascade=cascade)
    assert_instance_finished(manager, "t_a#0")
    assert_instance_unstarted(manager, "t_wait#0")
    assert_instance_missing(manager, "t_b#1")


# -- operators' tools -----------------------------------------------------------------------


def test_update_instance_status_with_metadata(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x", "y"], "run": PASS}})
    manager.fire("x")
    updated = manager.update_instance_status("t_a#0", "skipped", {"reason": "not needed"})
    assert updated.status is Status.SKIPPED
    skipped = assert_instance_skipped(manager, "t_a#0")
    assert skipped.metadata["reason"] == "not needed"
    assert skipped.metadata["lastModified"] == skipped.metadata["timestamps"]["skipped"]
    assert manager.fire("y") == []


def test_update_instance_status_with_cascade(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x", "y"], "run": PASS}, "t_b": {"after": ["t_a"], "run": PASS}}
    )
    manager.fire("x")
    manager.update_instance_status(
        "t_a#0", Status.FINISHED, cascade=True, cascade_kwargs={"manual": True}
    )
    assert_instance_finished(manager, "t_a#0")
    assert_instance_finished(manager, "t_b#0", {"kwargs": {"t_a": {"manual": True}}})


def test_update_instance_status_rejects_unknown_status(manager: TriggerManager) -> None:
    manager.update_configuration({"t_a": {"after": ["x", "y"], "run": PASS}})
    manager.fire("x")
    with pytest.raises(ValueError, match="unknown status 'done'"):
        manager.update_instance_status("t_a#0", "done")
    assert_instance_unstarted(manager, "t_a#0")


def test_update_instance_metadata_keeps_status_and_bumps_last_modified(
    manager: TriggerManager,
) -> None:
    manager.update_configuration({"t_a": {"after": ["x", "y"], "run": PASS}})
    manager.fire("x")
    before = manager.storage["t_a#0"]
    after = manager.update_instance_metadata("t_a#0", {"ticket": "OPS-1"})
    assert after.status is Status.UNSTARTED
    stored = assert_instance_unstarted(manager, "t_a#0")
    assert stored.metadata["ticket"] == "OPS-1"
    assert stored.metadata["lastModified"] > before.metadata["lastModified"]
    assert stored.metadata["timestamps"] == before.metadata["timestamps"]
    assert stored.metadata["created"] == before.metadata["created"]


def test_mark_instance_logs_resolved(manager: TriggerManager) -> None:
    manager.update_configuration(
        {"t_a": {"after": ["x"], "run": FAIL}, "t_b": {"after": ["x"], "run": PASS}}
    )
    manager.fire("x")
    failed = assert_instance_failed(manager, "t_a#0", RuntimeError)
    assert (failed.log_level, failed.log_level_name, failed.logs_resolved) == (
        logging.ERROR,
        "ERROR",
        False,
    )
    assert [i.name for i in manager.storage.get_instances_with_unresolved_logs()] == ["t_a#0"]
    resolved = manager.mark_instance_logs_resolved("t_a#0")
    assert resolved.logs_resolved is True
    assert manager.storage.get_instances_with_unresolved_logs() == []
    stored = assert_instance_failed(manager, "t_a#0", RuntimeError)
    assert stored.logs_resolved is True
    assert stored.log_level == logging.ERROR
