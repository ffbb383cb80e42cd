"""A hostile export of the original framework is refused with every problem's path, never a
traceback (issue 23, item 8): deep nesting, huge instance numbers, timestamps no clock shows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from triggers_backends.original import OriginalSessionError, convert_session, load_export

DEEP = "[" * 3000 + "]" * 3000
HUGE_NAME = "t_a#" + "9" * 5000
COMMAND = (sys.executable, "-m", "triggers_backends.original", "import")


def export(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "export.json"
    path.write_text(text)
    return path


def test_a_deep_export_names_where_it_is_too_deep(tmp_path: Path) -> None:
    text = '{"tasks": {}, "instances": {"t_a#0": {"kwargs": {"x": {"y": ' + DEEP + "}}}}}"
    with pytest.raises(OriginalSessionError) as raised:
        load_export(export(tmp_path, text))
    (problem,) = raised.value.problems
    assert problem.startswith("instances.t_a#0.kwargs.x.y[0][0][0]")
    assert "nested more than 100 levels deep" in problem


def test_huge_numbers_and_out_of_range_times_are_problems_with_paths() -> None:
    content = {
        "tasks": {"t_a": {"after": ["x"], "run": "r"}},
        "instances": {
            HUGE_NAME: {"task": "t_a", "status": "unstarted"},
            "t_a#1": {
                "task": "t_a",
                "status": "failed",
                "metadata": {"timestamps": {"failed": "0001-01-01T00:00:00+05:00"}},
            },
            "t_a#2": {
                "task": "t_a",
                "status": "failed",
                "metadata": {"timestamps": {"failed": "9999-12-31T23:00:00-05:00"}},
            },
        },
    }
    with pytest.raises(OriginalSessionError) as raised:
        convert_session(content)
    problems = raised.value.problems
    assert len(problems) == 3
    assert problems[0].startswith("instances.t_a#99999")
    assert problems[0].endswith("(5004 characters): an instance number of 5000 digits (at most 18)")
    assert problems[1].startswith("instances.t_a#1.metadata.timestamps.failed: ")
    assert problems[2].startswith("instances.t_a#2.metadata.timestamps.failed: ")


def test_the_command_prints_one_line_per_problem(tmp_path: Path) -> None:
    content = {
        "tasks": {"t_a": {"after": ["x"], "run": "r"}},
        "instances": {
            HUGE_NAME: {"task": "t_a", "status": "unstarted"},
            "t_a#1": {"task": "t_a\x1b[2J", "status": "nope"},
        },
    }
    path = export(tmp_path, json.dumps(content))
    for target in (path, export(tmp_path, DEEP)):
        done = subprocess.run(
            [*COMMAND, str(target), "--storage", "memory://", "--uid", "hostile"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        lines = done.stderr.splitlines()
        assert all(line.startswith("error: ") for line in lines), lines
        assert "\x1b" not in done.stderr
    assert len(lines) == 1  # the deep one
    assert lines[0].startswith("error: [0][0][0]")


def test_the_importer_refuses_the_expired_status_and_keeps_time_keys_as_extras() -> None:
    """The original framework had no time conditions: ``expired`` is not one of its
    statuses, and ``within``/``onMiss``/``delay`` in its configurations are extras."""
    content = {
        "tasks": {"t_a": {"after": ["x"], "run": "r", "within": "1h", "delay": 3}},
        "instances": {"t_a#0": {"task": "t_a", "status": "expired"}},
    }
    with pytest.raises(OriginalSessionError) as raised:
        convert_session(content)
    (problem,) = raised.value.problems
    assert problem.startswith("instances.t_a#0.status: unknown status 'expired'")
    content["instances"] = {}
    state = convert_session(content)
    assert state.tasks["t_a"].within is None
    assert dict(state.tasks["t_a"].extras) == {"within": "1h", "delay": 3}
