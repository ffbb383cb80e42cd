"""What the shipped contract suites share: a runner that only records, a patient manager."""

from __future__ import annotations

import threading

from triggers_core.effects import ScheduleInstance
from triggers_core.manager import TriggerManager
from triggers_core.runners import TaskRunner

__all__ = ["PatientManager", "RecordingRunner"]


class RecordingRunner(TaskRunner):
    """A runner that only records which instances it was asked to run."""

    name = "contract-recording"

    def __init__(self) -> None:
        self.dispatched: list[str] = []
        self._lock = threading.Lock()

    def dispatch(self, manager: TriggerManager, effect: ScheduleInstance) -> None:
        with self._lock:
            self.dispatched.append(effect.instance_name)


class PatientManager(TriggerManager):
    """A manager for races: they check correctness, not fairness.

    Eight processes on a small machine may lose many rounds in a row, so it
    allows more attempts than the default.
    """

    max_attempts = 2000
