"""``task_always_eager``: instances run in the caller's thread, correctly, without recursion.

Also proves that the task classes the workers run are plain trigger tasks: the
same workflow passes under the threading runner with no change.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import workflow
from celery import Celery
from worker_app import CeleryTestManager, make_app

from triggers_celery import CeleryTaskRunner
from triggers_core import DispatchError, MemoryStorage, MemoryStore, Status, ThreadingTaskRunner


@pytest.fixture(scope="module")
def eager_app() -> Iterator[Celery]:
    app = make_app("memory://", f"eager-{uuid.uuid4().hex}", task_always_eager=True)
    yield app
    app.close()


def _manager(storage: MemoryStorage | str, app: Celery) -> CeleryTestManager:
    uid = f"eager-{uuid.uuid4().hex}"
    if isinstance(storage, str):
        return CeleryTestManager(storage, uid, runners={"celery": CeleryTaskRunner(app)})
    return CeleryTestManager(
        MemoryStorage(uid, storage.store), runners={"celery": CeleryTaskRunner(app)}
    )


@pytest.mark.parametrize("applicant_first", [True, False])
def test_workflow_in_eager_mode_on_a_private_memory_store(
    eager_app: Celery, applicant_first: bool
) -> None:
    manager = _manager(MemoryStorage("template", MemoryStore()), eager_app)
    # eager: everything has run by the time each call returns, but a retry's cooldown is a
    # timer and no clock runs by itself here: the caller ticks (manager.advance)
    workflow.drive(
        manager,
        applicant_first=applicant_first,
        wait=lambda: workflow.settle(manager.storage, 10, tick=manager.advance),
    )
    workflow.check(manager.storage, cooldowns=True)


def test_workflow_in_eager_mode_on_sqlite(eager_app: Celery, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'eager.db'}?triggers_create_schema=true"
    manager = _manager(url, eager_app)
    workflow.drive(
        manager,
        applicant_first=True,
        wait=lambda: workflow.settle(manager.storage, 10, tick=manager.advance),
    )
    workflow.check(manager.storage, cooldowns=True)


def test_same_task_classes_run_under_the_threading_runner() -> None:
    runner = ThreadingTaskRunner()
    manager = CeleryTestManager(
        MemoryStorage(f"threads-{uuid.uuid4().hex}", MemoryStore()),
        runners={"threading": runner},
        default_runner="threading",
    )

    def wait() -> None:
        runner.join_all()
        workflow.settle(manager.storage, 10)  # the store's clock thread ends the cooldowns
        runner.join_all()

    workflow.drive(manager, applicant_first=False, wait=wait)
    workflow.check(manager.storage, cooldowns=True)


def test_a_long_cascade_chain_does_not_recurse(eager_app: Celery) -> None:
    length = 300  # far deeper than Python's recursion limit allows if each level nested
    config = {"t_0": {"after": ["go"], "run": "triggers.DevNullTask"}}
    for n in range(1, length):
        config[f"t_{n}"] = {"after": [f"t_{n - 1}"], "run": "triggers.DevNullTask"}
    manager = _manager(MemoryStorage("template", MemoryStore()), eager_app)
    manager.update_configuration(config)
    manager.fire("go")
    statuses = {i.status for i in manager.storage.instances.values()}
    assert statuses == {Status.FINISHED}
    assert len(manager.storage) == length


def test_eager_mode_refuses_an_unbound_task_and_the_instance_is_replayable(
    eager_app: Celery,
) -> None:
    bare = Celery("eager-unbound", set_as_current=False)
    bare.conf.update(broker_url="memory://", task_always_eager=True)
    store = MemoryStore()
    manager = _manager(MemoryStorage("template", store), bare)
    manager.update_configuration({"t_a": {"after": ["go"], "run": "triggers.PassThruTask"}})
    with pytest.raises(DispatchError, match="not bound") as caught:
        manager.fire("go", {"x": 1})
    assert [name for name, _ in caught.value.failures] == ["t_a#0"]
    failed = manager.storage["t_a#0"]
    assert failed.status is Status.FAILED
    assert failed.metadata["exceptionType"] == "triggers_celery.errors.BindingError"
    assert failed.metadata["exceptionContext"] == {"dispatch": "celery"}
    # once the task is bound (here: an app that binds it), the replay runs it
    fixed = CeleryTestManager(manager.storage, runners={"celery": CeleryTaskRunner(eager_app)})
    fixed.replay_failed_instance("t_a#0")
    assert manager.storage["t_a#1"].status is Status.FINISHED
    assert manager.storage["t_a#1"].metadata["result"] == {"kwargs": {"go": {"x": 1}}}
    bare.close()
