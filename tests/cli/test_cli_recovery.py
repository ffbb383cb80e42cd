"""``triggers fail``, ``triggers recover``, and what ``inspect``/``explain`` say about runs,
as subprocesses on the SQLite demo of docs/cli.md."""

from __future__ import annotations

from pathlib import Path

from test_cli import DB, data, run


def test_fail_by_hand(demo: Path) -> None:
    done = run(
        demo, "fail", DB, "survey-43", "t_createApplicant#0", "--reason", "stuck", "--actor", "ops"
    )
    assert (done.returncode, done.stdout.strip()) == (0, "t_createApplicant#0 failed"), done.stderr
    rows = {r["instance"]: r for r in data(demo, "inspect", DB, "survey-43")["instances"]}
    failure = rows["t_createApplicant#0"]["failure"]
    assert failure["exceptionType"] == "triggers_core.errors.FailedByOperator"
    assert failure["reason"] == "stuck"
    again = run(demo, "fail", DB, "survey-43", "t_createApplicant#0", "--reason", "stuck")
    assert again.returncode == 1
    assert "failed already" in again.stderr
    empty = run(demo, "fail", DB, "survey-43", "t_createApplicant#0", "--reason", " ")
    assert empty.returncode == 2
