"""``TriggerManagerTestCaseMixin``: unittest assertions about a trigger session.

Mix it into a :class:`unittest.TestCase`::

    class SurveyTests(TriggerManagerTestCaseMixin, unittest.TestCase):
        def test_score(self):
            self.manager.update_configuration({...})
            self.manager.fire("sessionFinalized")
            self.assertInstanceFinished("t_score#0", {"score": 42})

Each test gets a fresh :class:`~triggers_core.MemoryStorage` and a
:class:`~triggers_core.ThreadingTaskRunner`; every assertion first waits for
the runner (and the cascades it runs), so no test needs to sleep. Override
:meth:`make_trigger_storage`, :meth:`make_trigger_runner` or
:attr:`manager_class` to test against another backend or a manager subclass.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import triggers_core.testing.sample_tasks  # noqa: F401 - registers the sample tasks
from triggers_core.engine.state import TaskInstance
from triggers_core.runtime.manager import TriggerManager
from triggers_core.runtime.memory import MemoryStorage, MemoryStore
from triggers_core.runtime.runners import ThreadingTaskRunner
from triggers_core.runtime.storage import Storage
from triggers_core.testing import assertions

__all__ = ["TriggerManagerTestCaseMixin"]


class TriggerManagerTestCaseMixin:
    """Sets up ``self.manager`` and adds instance assertions (SPEC section 8).

    Attributes set by :meth:`setUp`: ``manager``, ``trigger_storage`` and
    ``trigger_runner``. The sample tasks of
    :mod:`triggers_core.testing.sample_tasks` are registered.
    """

    #: The manager class to instantiate (set it to your subclass to test hooks).
    manager_class: ClassVar[type[TriggerManager]] = TriggerManager

    manager: TriggerManager
    trigger_storage: Storage
    trigger_runner: ThreadingTaskRunner

    def setUp(self) -> None:
        """Create a fresh storage, runner and manager (and wait for the runner at cleanup)."""
        super().setUp()  # type: ignore[misc]  # cooperates with unittest.TestCase
        self.trigger_storage = self.make_trigger_storage()
        self.trigger_runner = self.make_trigger_runner()
        self.manager = self.make_trigger_manager(self.trigger_storage, self.trigger_runner)
        # Task threads must not outlive the test that started them.
        self.addCleanup(self.trigger_runner.join_all)  # type: ignore[attr-defined]

    def make_trigger_storage(self) -> Storage:
        """A storage for a new session; default: a fresh, private :class:`MemoryStorage`."""
        return MemoryStorage(f"test-{uuid.uuid4().hex}", MemoryStore())

    def make_trigger_runner(self) -> ThreadingTaskRunner:
        """The runner every task of the manager uses; default: a new ThreadingTaskRunner."""
        return ThreadingTaskRunner()

    def make_trigger_manager(self, storage: Storage, runner: ThreadingTaskRunner) -> TriggerManager:
        """Build :attr:`manager_class` on ``storage``, with ``runner`` as its default runner."""
        return self.manager_class(
            storage, runners={runner.name: runner}, default_runner=runner.name
        )

    # -- assertions (each waits for the runner first) ---------------------------------

    def assertInstanceFinished(
        self, name: str, result: Mapping[str, Any] | None = None
    ) -> TaskInstance:
        """Assert instance ``name`` finished (with exactly ``result``, if given)."""
        return assertions.assert_instance_finished(self.manager, name, result)

    def assertInstanceFailed(self, name: str, exc_type: type[BaseException] | str) -> TaskInstance:
        """Assert instance ``name`` failed with ``exc_type`` (class or ``module.Name``)."""
        return assertions.assert_instance_failed(self.manager, name, exc_type)

    def assertInstanceAbandoned(self, name: str) -> TaskInstance:
        """Assert instance ``name`` was abandoned."""
        return assertions.assert_instance_abandoned(self.manager, name)

    def assertInstanceExpired(self, name: str) -> TaskInstance:
        """Assert instance ``name`` expired (its ``within`` window closed first)."""
        return assertions.assert_instance_expired(self.manager, name)

    def assertInstanceMissing(self, name: str) -> None:
        """Assert there is no instance called ``name``."""
        assertions.assert_instance_missing(self.manager, name)

    def assertInstanceReplayed(self, name: str) -> TaskInstance:
        """Assert instance ``name`` was replayed."""
        return assertions.assert_instance_replayed(self.manager, name)

    def assertInstanceSkipped(self, name: str) -> TaskInstance:
        """Assert instance ``name`` was skipped."""
        return assertions.assert_instance_skipped(self.manager, name)

    def assertInstanceUnstarted(self, name: str) -> TaskInstance:
        """Assert instance ``name`` still waits for triggers."""
        return assertions.assert_instance_unstarted(self.manager, name)

    def assertUnresolvedTasks(self, names: Iterable[str]) -> None:
        """Assert exactly ``names`` are the unresolved tasks."""
        assertions.assert_unresolved_tasks(self.manager, names)

    def assertUnresolvedInstances(self, names: Iterable[str]) -> None:
        """Assert exactly ``names`` are the unresolved instances."""
        assertions.assert_unresolved_instances(self.manager, names)
