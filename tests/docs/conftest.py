"""The executed-documentation tests' summary: how many blocks run, and which cannot."""

from __future__ import annotations

import pytest

#: Filled while collecting: what the terminal summary reports.
SUMMARY: dict[str, object] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print how many documentation blocks run and which are marked not runnable."""
    if not SUMMARY:
        return
    marked = SUMMARY["not_runnable"]
    assert isinstance(marked, list)
    terminalreporter.write_line(
        f"documentation: {SUMMARY['total']} Python and shell blocks in {SUMMARY['pages']} "
        f"pages: {SUMMARY['runnable']} runnable ({SUMMARY['python']} Python, "
        f"{SUMMARY['test_files']} test files run with pytest, {SUMMARY['shell']} shell, "
        f"{SUMMARY['console']} CLI transcripts), {len(marked)} marked not runnable"
    )
    for location, reason in marked:
        terminalreporter.write_line(f"  not runnable: {location}: {reason}")
