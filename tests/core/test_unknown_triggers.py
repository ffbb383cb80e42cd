"""Fires of triggers no task mentions (issue 23, item 6), and what a keyed fire did (item 3)."""

from __future__ import annotations

import logging
import uuid

import pytest

from triggers_core import ThreadingTaskRunner, TriggerManager
from triggers_core.errors import UnknownTriggerError
from triggers_core.runtime import firing
from triggers_core.testing.sample_tasks import DevNullTask

CONFIG = {
    "t_score": {"after": ["score"], "run": DevNullTask.name},
    "t_report": {"after": ["t_score"], "run": DevNullTask.name},
}


@pytest.fixture
def manager() -> TriggerManager:
    runner = ThreadingTaskRunner()
    manager = TriggerManager(
        "memory://", uid=f"unknown-{uuid.uuid4().hex}", runners={"threading": runner}
    )
    manager.update_configuration(CONFIG)
    return manager


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(firing, "_warned", set())


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == firing.UNKNOWN_TRIGGER_LOGGER]


def test_a_typo_warns_once_per_process_and_trigger_with_did_you_mean(
    manager: TriggerManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, firing.UNKNOWN_TRIGGER_LOGGER)
    assert manager.fire("scroe") == []
    assert manager.fire("scroe", {"again": True}) == []
    assert manager.fire("unrelated") == []
    found = warnings_of(caplog)
    assert len(found) == 2
    assert "fired 'scroe'" in found[0]
    assert "did you mean 'score'?" in found[0]
    assert "did you mean" not in found[1]
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]


def test_known_triggers_and_cascades_never_warn(
    manager: TriggerManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, firing.UNKNOWN_TRIGGER_LOGGER)
    manager.fire("score")
    manager.get_runner().join_all()  # t_report's cascade has no listener: no warning
    assert manager.storage["t_report#0"].status.value == "finished"
    assert warnings_of(caplog) == []


def test_strict_raises_and_stores_nothing(manager: TriggerManager) -> None:
    version = manager.storage.load().version
    with pytest.raises(UnknownTriggerError, match="did you mean 'score'") as raised:
        manager.fire("scroe", {"x": 1}, strict=True)
    assert (raised.value.trigger, raised.value.session) == ("scroe", manager.uid)
    assert manager.storage.load().version == version
    assert "scroe" not in manager.storage.load().state.latest_kwargs
    assert [i.name for i in manager.fire("score", strict=True)] == ["t_score#0"]


def test_fire_result_tells_a_duplicate_whatever_happened_in_between(
    manager: TriggerManager,
) -> None:
    first = manager.fire_result("score", {"n": 1}, idempotency_key="k")
    assert (first.duplicate, [i.name for i in first.scheduled]) == (False, ["t_score#0"])
    manager.get_runner().join_all()
    manager.fire("other-writer")  # the session changes between the two keyed fires
    again = manager.fire_result("score", {"n": 2}, idempotency_key="k")
    assert again.duplicate
    assert [i.name for i in again.scheduled] == ["t_score#0"]
    # fire() still returns what it always did.
    assert [i.name for i in manager.fire("score", idempotency_key="k")] == ["t_score#0"]
    assert manager.fire_result("score").duplicate is False
