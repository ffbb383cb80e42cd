"""docs/cli.md shows what the commands really print (see ``cli_transcript.py``)."""

from __future__ import annotations

from pathlib import Path

from cli_transcript import PAGE, TRIGGERS, regenerate


def test_the_cli_transcript_is_what_the_commands_print(tmp_path: Path) -> None:
    assert TRIGGERS.exists(), f"the console script is not installed at {TRIGGERS}"
    text = PAGE.read_text(encoding="utf-8")
    fresh = regenerate(text, tmp_path)
    assert fresh == text, "docs/cli.md is out of date: python tests/docs/cli_transcript.py --write"
    printed = [line for line in fresh.splitlines() if not line.startswith("$ ")]
    assert "hunter2" in fresh  # a command line gives a password...
    assert not any("hunter2" in line for line in printed)  # ...no output shows it
