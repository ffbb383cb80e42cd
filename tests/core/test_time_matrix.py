"""within / onMiss / delay combined with withParams, groups, replay, skip and idempotent
fires, on the FakeClock, on every backend of the behaviour suite (docs/configuration.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from triggers_core import TriggerManager
from triggers_core.engine.state import Status
from triggers_core.runtime.runners import ThreadingTaskRunner
from triggers_core.runtime.storage import Storage
from triggers_core.testing import FakeClock
from triggers_core.testing.assertions import (
    assert_instance_abandoned,
    assert_instance_expired,
    assert_instance_failed,
    assert_instance_finished,
    assert_instance_missing,
    assert_instance_unstarted,
)
from triggers_core.testing.sample_tasks import FailingTask, PassThruTask

PASS, FAIL = PassThruTask.name, FailingTask.name


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def timed(
    storage_factory: Callable[[str], Storage],
    session_uid: str,
    runner: ThreadingTaskRunner,
    clock: FakeClock,
) -> Iterator[TriggerManager]:
    yield TriggerManager(storage_factory(session_uid), runners={"threading": runner}, clock=clock)
    runner.join_all()


def status(manager: TriggerManager, name: str) -> Status:
    manager.get_runner().join_all()  # type: ignore[attr-defined]
    return manager.storage[name].status


def test_with_params_reach_the_on_miss_task_and_the_delayed_task(
    timed: TriggerManager, clock: FakeClock
) -> None:
    timed.update_configuration(
        {
            "t_pay": {"after": ["ordered", "paid"], "run": PASS, "within": "24h"}
            | {"onMiss": "late", "withParams": {"paid": {"currency": "EUR"}}},
            "t_chase": {"after": ["late"], "run": PASS, "delay": "1h"}
            | {"withParams": {"late": {"channel": "mail", "task": "shadowed"}}},
        }
    )
    timed.fire("ordered", {"order": 1})
    clock.advance("23h")
    assert_instance_unstarted(timed, "t_pay#0")
    clock.advance("1h")
    assert_instance_expired(timed, "t_pay#0")
    assert_instance_unstarted(timed, "t_chase#0")  # delayed an hour
    clock.advance("59m")
    assert_instance_unstarted(timed, "t_chase#0")
    clock.advance("1m")
    late = assert_instance_finished(timed, "t_chase#0").metadata["result"]["kwargs"]["late"]
    assert late["channel"] == "mail"  # from withParams
    assert late["task"] == "t_pay"  # the fire's kwargs win at the leaves
    assert late["missing"] == ["paid"]


def test_groups_complete_a_window_or_name_the_unmet_ones(
    timed: TriggerManager, clock: FakeClock
) -> None:
    timed.update_configuration(
        {
            "t_review": {
                "after": ["submitted", {"anyOf": ["approved", "waived"]}],
                "run": PASS,
                "within": "7d",
                "onMiss": "stale",
            },
            "t_escalate": {"after": [{"atLeast": 1, "of": ["stale", "urgent"]}], "run": PASS},
        }
    )
    timed.fire("submitted")
    clock.advance("6d")
    timed.fire("waived")  # one member of the group is enough, within the window
    assert_instance_finished(timed, "t_review#0")
    clock.advance("7d")
    assert_instance_missing(timed, "t_escalate#0")
    # A second task, the same way but missed: the group is what is missing.
    timed.update_configuration(
        {
            "t_review2": {
                "after": ["resubmitted", {"anyOf": ["approved", "rejected"]}],
                "run": PASS,
                "within": "PT1H",
                "onMiss": "stale",
            }
        }
    )
    timed.fire("resubmitted")
    clock.advance("1h")
    expired = assert_instance_expired(timed, "t_review2#0")
    assert expired.metadata["missing"] == [{"anyOf": ["approved", "rejected"]}]
    assert_instance_finished(timed, "t_escalate#0")


def test_groups_with_delay(timed: TriggerManager, clock: FakeClock) -> None:
    timed.update_configuration(
        {"t_a": {"after": [{"atLeast": 2, "of": ["x", "y", "z"]}], "run": PASS, "delay": "90s"}}
    )
    timed.fire("x")
    timed.fire("z")
    assert_instance_unstarted(timed, "t_a#0")
    timed.fire("y")  # recorded while it waits; it does not move the delay
    clock.advance("89s")
    assert_instance_unstarted(timed, "t_a#0")
    clock.advance("1s")
    kwargs = assert_instance_finished(timed, "t_a#0").metadata["result"]["kwargs"]
    assert set(kwargs) == {"x", "y", "z"}


def test_replay_of_a_delayed_task_is_not_delayed_again(
    timed: TriggerManager, clock: FakeClock
) -> None:
    timed.update_configuration({"t_a": {"after": ["go"], "run": FAIL, "delay": "1h"}})
    timed.fire("go")
    clock.advance("1h")
    assert_instance_failed(timed, "t_a#0", RuntimeError)
    clone = timed.replay_failed_instance("t_a#0")
    assert clone.status is Status.SCHEDULED  # the delay was served once
    timed.get_runner().join_all()  # type: ignore[attr-defined]
    assert_instance_failed(timed, "t_a#1", RuntimeError)


def test_a_skipped_cascade_opens_a_window_and_a_replay_completes_none(
    timed: TriggerManager, clock: FakeClock
) -> None:
    timed.update_configuration(
        {
            "t_a": {"after": ["go"], "run": FAIL},
            "t_b": {"after": ["t_a", "confirmed"], "run": PASS, "within": "2h"}
            | {"onMiss": "missed"},
            "t_c": {"after": ["missed"], "run": PASS},
        }
    )
    timed.fire("go")
    assert status(timed, "t_a#0") is Status.FAILED
    clock.advance("3h")  # no window yet: t_b has recorded nothing
    assert_instance_missing(timed, "t_b#0")
    timed.skip_failed_instance("t_a#0", cascade=True, result={"skipped": True})
    b = assert_instance_unstarted(timed, "t_b#0")
    assert b.metadata["deadline"] == (clock.now + timedelta(hours=2)).isoformat()
    clock.advance("2h")
    assert_instance_expired(timed, "t_b#0")
    assert_instance_finished(timed, "t_c#0")


def test_an_idempotent_duplicate_never_opens_a_window(
    timed: TriggerManager, clock: FakeClock
) -> None:
    timed.update_configuration(
        {"t_a": {"after": ["x", "y"], "run": PASS, "within": "10m", "onMiss": "m"}}
    )
    timed.fire("x", {"n": 1}, idempotency_key="k1")
    clock.advance("10m")
    assert_instance_expired(timed, "t_a#0")
    timed.fire("x", {"n": 2}, idempotency_key="k1")  # a duplicate: nothing happens
    fresh = assert_instance_unstarted(timed, "t_a#1")
    assert fresh.kwargs == {}
    assert "deadline" not in fresh.metadata
    timed.fire("x", {"n": 3}, idempotency_key="k2")
    assert "deadline" in assert_instance_unstarted(timed, "t_a#1").metadata


def test_a_delayed_instance_is_abandoned_by_unless_and_never_runs(
    timed: TriggerManager, clock: FakeClock
) -> None:
    timed.update_configuration(
        {"t_send": {"after": ["signed"], "unless": ["cancelled"], "run": PASS, "delay": "1h"}}
    )
    timed.fire("signed")
    clock.advance("30m")
    timed.fire("cancelled")
    assert_instance_abandoned(timed, "t_send#0")
    assert clock.advance("1h") == []
    assert_instance_abandoned(timed, "t_send#0")
