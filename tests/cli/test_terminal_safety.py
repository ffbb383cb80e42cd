"""Hostile stored data through every command, on a real pseudo-terminal (issue 23, item 1).

A session whose task names, trigger names, UID, kwargs and error messages hold
rich-style markup (``t[/x]``, ``[link=...]``), escape sequences (OSC ``ESC ] 0 ;
... BEL``, CSI ``ESC [ 2 J``), C1 controls, bidirectional overrides, a line break
and NUL is stored in SQLite; every command then runs on a pty (as an operator's
terminal would see it). Nothing the terminal could act on may come out, what
was stored must be shown visibly (``\\x1b``), and ``--json`` must decode to
exactly what was stored.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_transcript import TRIGGERS, environment

ESC = "\x1b"
OSC_TITLE = f"{ESC}]0;pwned\x07"
CLEAR = f"{ESC}[2J"
HYPERLINK = "[link=https://evil.example]click[/link]"
TASK = "t[/x]" + OSC_TITLE
CASCADE_USER = "t_next" + CLEAR
TRIGGER = "go" + CLEAR + "\u202e"
UID = "s" + CLEAR + "[bold]uid[/bold]"
MESSAGE = f"boom {HYPERLINK} {OSC_TITLE} {CLEAR} \x9b31m nul\x00 done\nsecond line"

FIRST_LINE = MESSAGE.partition("\n")[0]

# Bytes a terminal acts on: ESC, BEL, NUL, CSI (C1, as UTF-8 and raw), the bidi override.
UNSAFE = (b"\x1b", b"\x07", b"\x00", "\x9b".encode(), b"\x9b", "\u202e".encode())

TASKS_MODULE = """
from triggers_core import TriggerTask


class Boom(TriggerTask):
    name = "hostile.Boom"

    def _run(self, context):
        raise RuntimeError(MESSAGE)


class Fine(TriggerTask):
    name = "hostile.Fine"

    def _run(self, context):
        return {}
"""

CONFIG = {
    TASK: {"after": [TRIGGER], "run": "hostile.Boom"},
    CASCADE_USER: {
        "after": [TASK, {"anyOf": ["x" + CLEAR, "y[/z]\nfake line"]}],
        "run": "hostile.Fine",
    },
}


def run_on_pty(cwd: Path, *args: str, timeout: float = 120) -> tuple[int, bytes]:
    """Run the console script with a pty as its terminal; (exit code, everything it wrote)."""
    controller, terminal = pty.openpty()
    env = {**environment(), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [str(TRIGGERS), *args],
        cwd=cwd,
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    output = bytearray()
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], timeout)
            if not ready:
                process.kill()
                pytest.fail(f"{args} wrote nothing for {timeout} s")
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
    return process.wait(timeout=timeout), bytes(output)


def assert_safe(output: bytes) -> None:
    for unsafe in UNSAFE:
        assert unsafe not in output, (unsafe, output)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the tasks module, the configuration and one failed session."""
    workdir = tmp_path_factory.mktemp("hostile")
    module = TASKS_MODULE.replace("MESSAGE", repr(MESSAGE))
    (workdir / "hostile_tasks.py").write_text(module, encoding="utf-8")
    (workdir / "hostile.json").write_text(json.dumps(CONFIG), encoding="utf-8")
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, ".")
        import hostile_tasks
        from triggers_core import ThreadingTaskRunner, TriggerManager
        runner = ThreadingTaskRunner()
        manager = TriggerManager("sqlite:///hostile.db", uid={UID!r},
                                 runners={{"threading": runner}})
        manager.update_configuration(json.load(open("hostile.json")))
        manager.fire({TRIGGER!r}, {{"note": {MESSAGE!r}}})
        runner.join_all()
        """
    )
    subprocess.run([sys.executable, "-c", script], cwd=workdir, check=True, timeout=120)
    return workdir


DB = "sqlite:///hostile.db"
FAILED = TASK + "#0"


@pytest.mark.parametrize(
    "args",
    [
        ("check", "hostile.json"),
        ("check", "hostile.json", "--app", "hostile_tasks"),
        ("graph", "hostile.json"),
        ("graph", "hostile.json", "--format", "dot", "--session", DB, UID),
        ("simulate", "hostile.json", "--fire", TRIGGER, "--fail", TASK),
        ("sessions", DB),
        ("inspect", DB, UID),
        ("explain", DB, UID, TASK),
        ("explain", DB, UID, FAILED, "--if-fired", TRIGGER),
        ("explain", DB, UID, CASCADE_USER),
        ("explain", DB, UID, "t_nope" + OSC_TITLE),
        ("fire", DB, UID, "nobody" + OSC_TITLE, "--app", "hostile_tasks"),
    ],
    ids=lambda args: args[0] if isinstance(args, tuple) else None,
)
def test_nothing_stored_reaches_the_terminal_raw(hostile: Path, args: tuple[str, ...]) -> None:
    code, output = run_on_pty(hostile, *args)
    assert_safe(output)
    text = output.decode()
    assert code in (0, 1), text
    assert "Traceback" not in text
    assert not any(line.startswith("fake line") for line in text.splitlines())  # no forged line
    shows_names = ("graph", "simulate", "inspect", "explain")
    if args[0] in shows_names and not args[-1].startswith("t_nope"):
        assert "t[/x]" in text  # markup-like text is printed as written
        mermaid = args[0] == "graph" and "dot" not in args  # Mermaid writes entity codes
        shown = "#27;]0;pwned#7;" if mermaid else "\\x1b]0;pwned\\x07"
        assert shown in text  # the sequence is shown, not performed


def test_skip_on_a_pty(hostile: Path, tmp_path: Path) -> None:
    copy = tmp_path / "skip"
    shutil.copytree(hostile, copy)
    code, output = run_on_pty(copy, "skip", DB, UID, FAILED, "--cascade", "--app", "hostile_tasks")
    assert_safe(output)
    assert code == 0, output
    assert "skipped t[/x]\\x1b]0;pwned\\x07#0 and fired its task's name" in output.decode()


def test_replay_prints_the_stored_reason_visibly(hostile: Path, tmp_path: Path) -> None:
    copy = tmp_path / "replay"
    shutil.copytree(hostile, copy)
    code, output = run_on_pty(copy, "replay", DB, UID, FAILED, "--app", "hostile_tasks")
    assert_safe(output)
    assert code == 0, output
    code, output = run_on_pty(copy, "explain", DB, UID, TASK + "#1")
    assert_safe(output)
    text = output.decode()
    assert "earlier attempts (1)" in text
    assert HYPERLINK in text  # literal, never a hyperlink escape
    assert "\\x9b31m nul\\x00 done" in text


def test_inspect_shows_the_error_visibly_and_on_one_line(hostile: Path) -> None:
    code, output = run_on_pty(hostile, "inspect", DB, UID)
    assert code == 0
    text = output.decode()
    row = next(line for line in text.splitlines() if "failed" in line)
    assert f"RuntimeError: boom {HYPERLINK} \\x1b]0;pwned\\x07 \\x1b[2J" in row


def test_sessions_lists_the_uid_visibly(hostile: Path) -> None:
    code, output = run_on_pty(hostile, "sessions", DB)
    assert code == 0
    assert output.decode().split() == ["s\\x1b[2J[bold]uid[/bold]"]


@pytest.mark.parametrize(
    "args",
    [("inspect", DB, UID), ("explain", DB, UID, FAILED), ("sessions", DB)],
    ids=lambda args: args[0] if isinstance(args, tuple) else None,
)
def test_json_stays_exact(hostile: Path, args: tuple[str, ...]) -> None:
    code, output = run_on_pty(hostile, *args, "--json")
    assert code == 0
    assert_safe(output)
    data = json.loads(output.decode().replace("\r\n", "\n"))
    if args[0] == "sessions":
        assert data["sessions"] == [UID]  # the stored string, exactly
    elif args[0] == "inspect":
        assert data["session"] == UID
        assert data["instances"][0]["instance"] == FAILED
        assert data["instances"][0]["failure"]["reason"] == "RuntimeError: " + FIRST_LINE
    else:
        failure = data["explanation"]["failure"]
        assert failure["message"] == "RuntimeError: " + FIRST_LINE
