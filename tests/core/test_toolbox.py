"""The shipped testing toolbox: unittest mixin, pytest fixtures, assertions, sample
tasks, and the questionnaire example."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import unittest
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest

from triggers_core import (
    MaxRetriesExceeded,
    MemoryStorage,
    MemoryStore,
    Status,
    Storage,
    TriggerManager,
    registered_tasks,
)
from triggers_core.testing import assertions
from triggers_core.testing.mixin import TriggerManagerTestCaseMixin
from triggers_core.testing.sample_tasks import (
    DevNullTask,
    FailingTask,
    PassThruTask,
    SelfRetryingTask,
    SelfSkippingTask,
)

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "questionnaire.py"

CONFIG = {
    "t_pass": {"after": ["x"], "run": PassThruTask.name},
    "t_null": {"after": ["x"], "run": DevNullTask.name},
    "t_fail": {"after": ["x"], "run": FailingTask.name},
    "t_skip": {"after": ["x"], "run": SelfSkippingTask.name},
    "t_retry": {
        "after": ["x"],
        "run": SelfRetryingTask.name,
        "withParams": {"retries": {"max": 1}},
    },
    "t_wait": {"after": ["x", "y"], "run": DevNullTask.name},
    "t_stop": {"after": ["x", "z"], "unless": ["stop"], "run": DevNullTask.name},
    "t_idle": {"after": ["never"], "run": DevNullTask.name},
}


# -- sample tasks ---------------------------------------------------------------------------------


def test_sample_tasks_are_registered_under_stable_names() -> None:
    samples = [PassThruTask, DevNullTask, FailingTask, SelfSkippingTask, SelfRetryingTask]
    registry = registered_tasks()
    for cls in samples:
        assert cls.name == f"triggers.{cls.__name__}"
        assert registry[cls.name] is cls


# -- the unittest mixin ---------------------------------------------------------------------------


class MixinTests(TriggerManagerTestCaseMixin, unittest.TestCase):
    """The mixin as users use it (pytest collects this TestCase too)."""

    def setUp(self) -> None:
        super().setUp()
        self.manager.update_configuration(CONFIG)
        self.manager.fire("x", {"n": 1})
        self.manager.fire("stop")

    def test_setup_uses_memory_storage_and_the_threading_runner(self) -> None:
        assert isinstance(self.trigger_storage, MemoryStorage)
        assert self.manager.storage is self.trigger_storage
        assert self.manager.get_runner() is self.trigger_runner

    def test_every_assertion_on_a_mixed_session(self) -> None:
        # No join, no sleep: each assertion waits for the runner itself.
        self.assertInstanceFinished("t_pass#0", {"kwargs": {"x": {"n": 1}}})
        self.assertInstanceFinished("t_null#0")
        self.assertInstanceFinished("t_null#0", {})
        self.assertInstanceFailed("t_fail#0", RuntimeError)
        self.assertInstanceFailed("t_fail#0", "builtins.RuntimeError")
        self.assertInstanceSkipped("t_skip#0")
        self.assertInstanceReplayed("t_retry#0")
        self.assertInstanceFinished("t_retry#1", {"count": 1})
        self.assertInstanceUnstarted("t_wait#0")
        self.assertInstanceAbandoned("t_stop#0")
        self.assertInstanceMissing("t_idle#0")
        self.assertInstanceMissing("t_pass#1")
        self.assertUnresolvedTasks(["t_fail", "t_idle", "t_wait"])
        self.assertUnresolvedInstances(["t_wait#0", "t_fail#0"])

    def test_assertions_return_the_instance(self) -> None:
        instance = self.assertInstanceFinished("t_pass#0")
        assert instance.status is Status.FINISHED
        assert instance.metadata["result"] == {"kwargs": {"x": {"n": 1}}}

    def test_wrong_status_shows_status_metadata_and_traceback(self) -> None:
        with pytest.raises(AssertionError) as caught:
            self.assertInstanceFinished("t_fail#0")
        message = str(caught.value)
        assert message.startswith("instance 't_fail#0' is failed, expected finished\n")
        assert '"exceptionType": "builtins.RuntimeError"' in message
        assert '"actualKwargs": {' in message
        assert "traceback (exceptionInfo):\nTraceback (most recent call last):" in message
        assert "RuntimeError: t_fail#0 failed on purpose" in message

    def test_wrong_result_shows_both(self) -> None:
        with pytest.raises(AssertionError) as caught:
            self.assertInstanceFinished("t_pass#0", {"kwargs": {}})
        message = str(caught.value)
        assert "result of 't_pass#0' differs" in message
        assert 'expected: {\n  "kwargs": {}\n}' in message

    def test_wrong_exception_type(self) -> None:
        with pytest.raises(AssertionError) as caught:
            self.assertInstanceFailed("t_fail#0", MaxRetriesExceeded)
        assert str(caught.value).startswith(
            "'t_fail#0' failed with builtins.RuntimeError, expected "
            "triggers_core.errors.MaxRetriesExceeded"
        )

    def test_missing_instance_lists_the_session(self) -> None:
        with pytest.raises(AssertionError) as caught:
            self.assertInstanceUnstarted("t_idle#0")
        message = str(caught.value)
        assert message.startswith("instance 't_idle#0' does not exist; instances: ")
        assert "t_wait#0: unstarted" in message

    def test_instance_that_should_be_missing(self) -> None:
        with pytest.raises(AssertionError) as caught:
            self.assertInstanceMissing("t_wait#0")
        assert "expected no instance 't_wait#0', but it exists" in str(caught.value)

    def test_unresolved_mismatches(self) -> None:
        with pytest.raises(AssertionError) as caught:
            self.assertUnresolvedTasks(["t_idle"])
        assert "unresolved tasks are ['t_fail', 't_idle', 't_wait'], expected ['t_idle']" in str(
            caught.value
        )
        with pytest.raises(AssertionError) as caught:
            self.assertUnresolvedInstances([])
        message = str(caught.value)
        assert "unresolved instances are ['t_fail#0', 't_wait#0'], expected []" in message
        assert "instance 't_fail#0' is failed" in message


class RecordingManager(TriggerManager):
    """A manager subclass, as users write to override hooks."""

    fired: ClassVar[list[str]] = []

    def _post_fire(self, trigger_name: str, scheduled_instances: list[Any]) -> None:
        self.fired.append(trigger_name)


class MixinOverrideTests(TriggerManagerTestCaseMixin, unittest.TestCase):
    """manager_class and make_trigger_storage can be overridden."""

    manager_class = RecordingManager
    store = MemoryStore()

    def make_trigger_storage(self) -> Storage:
        return MemoryStorage("shared-session", self.store)

    def test_overrides_are_used(self) -> None:
        assert type(self.manager) is RecordingManager
        assert self.manager.uid == "shared-session"
        RecordingManager.fired.clear()
        self.manager.update_configuration({"t_a": {"after": ["x"], "run": PassThruTask.name}})
        self.manager.fire("x")
        self.assertInstanceFinished("t_a#0", {"kwargs": {"x": {}}})
        # The cascade's hook runs in the task thread: it may come first.
        assert sorted(RecordingManager.fired) == ["t_a", "x"]


# -- the assertion functions ----------------------------------------------------------------------


def test_assertions_work_on_a_bare_storage() -> None:
    store = MemoryStore()
    manager = TriggerManager(MemoryStorage("bare", store))
    manager.update_configuration({"t_a": {"after": ["x", "y"], "run": DevNullTask.name}})
    manager.fire("x")
    reader = MemoryStorage("bare", store)
    assertions.assert_instance_unstarted(reader, "t_a#0")
    assertions.assert_instance_missing(reader, "t_a#1")
    assertions.assert_unresolved_instances(reader, ["t_a#0"])
    with pytest.raises(AssertionError, match="instance 't_a#0' is unstarted, expected abandoned"):
        assertions.assert_instance_abandoned(reader, "t_a#0")


def test_exception_type_label() -> None:
    assert assertions.exception_type_label(KeyError) == "builtins.KeyError"
    assert assertions.exception_type_label(MaxRetriesExceeded) == (
        "triggers_core.errors.MaxRetriesExceeded"
    )
    assert assertions.exception_type_label("pkg.Error") == "pkg.Error"


# -- the pytest plugin ----------------------------------------------------------------------------


PLUGIN_TESTS = """
import pytest

from triggers_core import MemoryStorage, ThreadingTaskRunner, TriggerManager
from triggers_core.testing.assertions import (
    assert_instance_failed,
    assert_instance_finished,
    assert_unresolved_instances,
)


def test_fixtures(trigger_manager, trigger_storage, trigger_runner):
    assert isinstance(trigger_manager, TriggerManager)
    assert isinstance(trigger_storage, MemoryStorage)
    assert isinstance(trigger_runner, ThreadingTaskRunner)
    assert trigger_manager.storage is trigger_storage
    assert trigger_manager.get_runner() is trigger_runner


def test_workflow(trigger_manager):
    trigger_manager.update_configuration({
        "t_a": {"after": ["x"], "run": "triggers.PassThruTask"},
        "t_b": {"after": ["t_a"], "run": "triggers.FailingTask"},
    })
    trigger_manager.fire("x", {"n": 1})
    assert_instance_finished(trigger_manager, "t_a#0", {"kwargs": {"x": {"n": 1}}})
    assert_instance_failed(trigger_manager, "t_b#0", RuntimeError)
    assert_unresolved_instances(trigger_manager, ["t_b#0"])


def test_fresh_session_per_test(trigger_manager):
    assert trigger_manager.storage.instances == {}


def test_failure_message(trigger_manager):
    trigger_manager.update_configuration({"t_a": {"after": ["x"], "run": "triggers.FailingTask"}})
    trigger_manager.fire("x")
    with pytest.raises(AssertionError, match="(?s)is failed.*on purpose"):
        assert_instance_finished(trigger_manager, "t_a#0")
"""


def test_pytest_plugin_fixtures(pytester: pytest.Pytester, request: pytest.FixtureRequest) -> None:
    pytester.makepyfile(test_plugin=PLUGIN_TESTS)
    # Installed, the plugin loads through its pytest11 entry point; in a bare
    # source checkout it has to be named.
    installed = request.config.pluginmanager.has_plugin("triggers")
    args = [] if installed else ["-p", "triggers_core.testing.pytest_plugin"]
    result = pytester.runpytest_inprocess(*args, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_pytest_plugin_imports_no_optional_dependency() -> None:
    code = (
        "import sys\n"
        "import triggers_core.testing.pytest_plugin\n"
        "heavy = ('hypothesis', 'sqlalchemy', 'celery', 'pymemcache', 'django', 'kombu')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert out.stdout.strip() == "[]"


# -- the example ----------------------------------------------------------------------------------


EXPECTED_LINES = [
    "t_computeScore#0       finished   {'applicantId': 'A-17', 'model': 'psychometric-v2', "
    "'score': 87}",
    "t_createApplicant#0    finished   {'applicantId': 'A-17', 'respondent': 'r-42'}",
    "t_processPage#0        finished   {'answers': 3, 'page': 1}",
    "t_processPage#1        finished   {'answers': 2, 'page': 2}",
    "t_processPage#2        finished   {'answers': 1, 'page': 3}",
    "t_sendReminder#0       abandoned",
    "t_sendReport#0         replayed",
    "t_sendReport#1         finished   {'channel': 'email', 'sentTo': 'r42@example.org'}",
]


def run_example(*args: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRIGGERS_STORAGE_URL"}
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [line.rstrip() for line in out.stdout.splitlines()]
    start = lines.index("instance               status     result")
    assert lines[start + 1 : start + 1 + len(EXPECTED_LINES)] == EXPECTED_LINES
    assert lines[-1] == "the workflow ended as expected"
    assert "t_sendReport#0 failed: builtins.LookupError" in lines
    return lines


def test_example_runs_on_memory_storage() -> None:
    lines = run_example("memory://")
    assert lines[0].startswith("storage: <MemoryStorage uid='questionnaire-")


def test_example_runs_on_the_embedded_default() -> None:
    pytest.importorskip("sqlalchemy")
    lines = run_example()
    assert lines[0].startswith("storage: <SQLAlchemyStorage uid='questionnaire-")
    assert lines[0].endswith("questionnaire.db> (sqlite)")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://app:s3cret@127.0.0.1", "no storage named 'redis'"),
        ("triggers.db", "not a storage URL: 'triggers.db'"),
        ("sqlite://triggers.db", "sqlite:///triggers.db"),
    ],
)
def test_example_says_in_one_line_which_storage_it_cannot_open(url: str, problem: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRIGGERS_STORAGE_URL"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT), "TRIGGERS_STORAGE_URL": url},
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()  # no traceback
    assert line.startswith("cannot open the storage: ")
    assert problem in line
    assert "s3cret" not in line


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("questionnaire_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_exits_non_zero_when_the_workflow_goes_wrong(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    example = _load_example()
    wrong = dict(example.EXPECTED)
    wrong["t_sendReminder#0"] = (Status.FINISHED, None)
    monkeypatch.setattr(example, "EXPECTED", wrong)
    assert example.main(["questionnaire.py", "memory://"]) == 1
    out = capsys.readouterr().out
    assert "t_sendReminder#0: abandoned, expected finished" in out
    assert "the workflow did not end as expected" in out
