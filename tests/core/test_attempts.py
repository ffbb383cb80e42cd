"""Every attempt's reason, exception type and time in explain and inspect (issue 23, item 5)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from triggers_core import Status, TaskInstance, ThreadingTaskRunner, TriggerManager
from triggers_core.engine.state import SessionState
from triggers_core.testing.sample_tasks import FailingTask
from triggers_core.tools.attempts import attempts, failure_of, summary_line
from triggers_core.tools.explain import explain, explain_instances

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def failed_twice() -> SessionState:
    ticks = iter(range(1000))
    clock = lambda: T0 + timedelta(minutes=next(ticks))  # noqa: E731
    runner = ThreadingTaskRunner()
    manager = TriggerManager(
        "memory://", uid=f"attempts-{uuid.uuid4().hex}", runners={"threading": runner}, clock=clock
    )
    manager.update_configuration({"t_fail": {"after": ["go"], "run": FailingTask.name}})
    manager.fire("go")
    runner.join_all()
    manager.replay_failed_instance("t_fail#0")
    runner.join_all()
    manager.replay_failed_instance("t_fail#1")
    runner.join_all()
    return manager.storage.load_full().state


def test_explain_lists_every_earlier_attempt() -> None:
    state = failed_twice()
    report = explain(state, "t_fail#2", now=T0 + timedelta(hours=1))
    assert [a.instance for a in report.attempts] == ["t_fail#0", "t_fail#1"]  # type: ignore[union-attr]
    first = report.attempts[0]  # type: ignore[union-attr]
    assert first.exception_type == "builtins.RuntimeError"
    assert first.reason.startswith("RuntimeError: ")
    assert first.failed_at is not None
    assert first.failed_at > T0
    assert first.replayed_as == "t_fail#1"
    lines = report.lines  # type: ignore[union-attr]
    assert "  earlier attempts (2), oldest first:" in lines
    assert any(
        line.startswith("    t_fail#0 failed at ")
        and "(builtins.RuntimeError); replayed as t_fail#1" in line
        for line in lines
    )
    assert report.to_json()["attempts"][1]["replayedAs"] == "t_fail#2"


def test_a_replayed_instance_says_why_it_failed() -> None:
    state = failed_twice()
    report = explain(state, "t_fail#0")
    assert report.failure is not None  # type: ignore[union-attr]
    assert report.failure.exception_type == "builtins.RuntimeError"  # type: ignore[union-attr]
    lines = report.lines  # type: ignore[union-attr]
    assert lines[0].startswith("t_fail#0 failed and was replayed as t_fail#1, which is replayed")
    assert lines[1].startswith("  it failed at ")
    assert "RuntimeError" in lines[1]


def test_inspect_rows_carry_each_failure() -> None:
    state = failed_twice()
    rows = {e.instance: e for e in explain_instances(state, words=False)}
    assert set(rows) == {"t_fail#0", "t_fail#1", "t_fail#2"}
    for row in rows.values():
        failure = row.failure
        assert failure is not None
        assert failure.failed_at is not None
        assert failure.message.startswith("RuntimeError: ")
    assert rows["t_fail#1"].parent == "t_fail#0"
    assert rows["t_fail#0"].replayed_as == "t_fail#1"
    assert all(rows[name].lines == () for name in rows)


def test_hostile_metadata_and_parent_loops_are_read_safely() -> None:
    looped = {
        "t#0": TaskInstance(
            "t#0", "t", Status.REPLAYED, metadata={"parent": "t#1", "timestamps": "x"}
        ),
        "t#1": TaskInstance(
            "t#1", "t", Status.FAILED, metadata={"parent": "t#0", "exceptionInfo": 7}
        ),
    }
    chain = attempts(looped, "t#1")
    assert [a.instance for a in chain] == ["t#0", "t#1"]
    assert failure_of(looped["t#0"]).failed_at is None


def test_the_reason_is_the_first_line_of_the_last_exception() -> None:
    info = (
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "    raise RuntimeError('a\\nb')\n"
        "RuntimeError: a\n"
        "b\n"
    )
    assert summary_line(info) == "RuntimeError: a"
    assert summary_line("plain message\nmore") == "plain message"
