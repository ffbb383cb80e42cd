"""``exceptionType`` is always ``module.Name`` of a class that exists (``builtins.`` included)."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from triggers_core import (
    MemoryStorage,
    MemoryStore,
    Status,
    TaskContext,
    ThreadingTaskRunner,
    TriggerManager,
    TriggerTask,
)
from triggers_core.runtime.manager import exception_type_name
from triggers_core.testing.sample_tasks import FailingTask, SelfRetryingTask


class Outer:
    class NestedError(Exception):
        pass


class RetriesOnce(TriggerTask):
    """Retries without an exception, then fails with a nested exception class."""

    name: ClassVar[str] = "tests.exception_types.RetriesOnce"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        if context.retries == 0:
            self.retry()
        raise Outer.NestedError("second attempt broke")


def resolve(dotted: str) -> type[BaseException]:
    """Import ``module.Qual.Name`` the way a reader of the metadata would."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            found = getattr(found, attr)
        assert isinstance(found, type)
        assert issubclass(found, BaseException)
        return found
    raise AssertionError(f"{dotted} names no module")


def test_exception_type_name_includes_builtins_and_qualnames() -> None:
    assert exception_type_name(RuntimeError("x")) == "builtins.RuntimeError"
    assert exception_type_name(KeyError) == "builtins.KeyError"
    assert exception_type_name(Outer.NestedError()) == f"{__name__}.Outer.NestedError"


def test_every_recorded_exception_type_names_a_real_class() -> None:
    runner = ThreadingTaskRunner()
    storage = MemoryStorage(f"types-{uuid.uuid4().hex}", MemoryStore())
    manager = TriggerManager(storage, runners={"threading": runner})
    manager.update_configuration(
        {
            "t_fail": {"after": ["x"], "run": FailingTask.name},
            "t_retry": {
                "after": ["x"],
                "run": SelfRetryingTask.name,
                "withParams": {"retries": {"max": 1}},
            },
            "t_nested": {"after": ["x"], "run": RetriesOnce.name},
        }
    )
    manager.fire("x")
    runner.join_all()
    recorded = {
        name: instance.metadata["exceptionType"]
        for name, instance in storage.instances.items()
        if "exceptionType" in instance.metadata
    }
    assert recorded == {
        "t_fail#0": "builtins.RuntimeError",
        "t_retry#0": "triggers_core.tasks.RetryTask",
        "t_nested#0": "triggers_core.tasks.RetryTask",
        "t_nested#1": f"{__name__}.Outer.NestedError",
    }
    for dotted in recorded.values():
        resolve(dotted)
    assert storage["t_retry#0"].status is Status.REPLAYED
    assert "RetryTask: task asked to retry" in storage["t_retry#0"].metadata["exceptionInfo"]
