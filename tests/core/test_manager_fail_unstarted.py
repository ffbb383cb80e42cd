"""``fail_unstarted_instance``: a runner that cannot start a scheduled instance says so.

(A Celery worker that lacks the manager class or the trigger task uses it; the
end-to-end tests are in ``tests/celery/test_worker_failures.py``.)
"""

from __future__ import annotations

import uuid
from typing import ClassVar

import pytest

from triggers_core import (
    MemoryStorage,
    ScheduleInstance,
    Status,
    TaskRunner,
    TriggerManager,
    UnknownInstanceError,
)
from triggers_core.runtime.ports import SessionManager


class Parking(TaskRunner):
    """Accepts instances and runs nothing: they stay ``scheduled``."""

    name: ClassVar[str] = "parking"

    def dispatch(self, manager: SessionManager, effect: ScheduleInstance) -> None:
        pass


@pytest.fixture
def manager() -> TriggerManager:
    manager = TriggerManager(
        MemoryStorage(f"s-{uuid.uuid4().hex}"),
        runners={"parking": Parking()},
        default_runner="parking",
    )
    manager.update_configuration({"t_a": {"after": ["go"], "run": "triggers.DevNullTask"}})
    manager.fire("go", {"n": 1})
    return manager


def test_a_scheduled_instance_is_failed_with_the_error_and_can_be_replayed(
    manager: TriggerManager,
) -> None:
    error = LookupError("worker w1 has no manager 'x'; register it in a module the worker imports")
    failed = manager.fail_unstarted_instance("t_a#0", error, context={"worker": "w1"})
    assert failed is not None
    assert failed == manager.storage["t_a#0"]
    assert failed.status is Status.FAILED
    assert failed.metadata["exceptionType"].endswith("LookupError")
    assert "register it in a module the worker imports" in failed.metadata["exceptionInfo"]
    assert failed.metadata["exceptionContext"] == {"worker": "w1"}
    clone = manager.replay_failed_instance("t_a#0")
    assert clone.status is Status.SCHEDULED
    assert clone.kwargs == {"go": {"n": 1}}


@pytest.mark.parametrize("status", ["running", "finished", "failed"])
def test_an_instance_that_is_no_longer_scheduled_is_left_alone(
    manager: TriggerManager, status: str
) -> None:
    before = manager.update_instance_status("t_a#0", status)
    assert manager.fail_unstarted_instance("t_a#0", RuntimeError("too late")) is None
    assert manager.storage["t_a#0"] == before


def test_an_unknown_instance_is_named(manager: TriggerManager) -> None:
    with pytest.raises(UnknownInstanceError, match="t_a#9"):
        manager.fail_unstarted_instance("t_a#9", RuntimeError("x"))
