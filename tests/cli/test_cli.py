"""The installed ``triggers`` console script, as a subprocess, on SQLite (see docs/cli.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from cli_transcript import TRIGGERS, environment

NOW = "--now=2024-05-01T11:00:00+00:00"
DB = "sqlite:///demo.db"


def run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TRIGGERS), *args],
        cwd=cwd,
        env={**environment(), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def data(cwd: Path, *args: str) -> Any:
    done = run(cwd, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_importing_the_core_imports_no_cli_dependency() -> None:
    code = "import sys, triggers_core; print(sorted({'click', 'rich'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_command_line_registers_no_sample_task() -> None:
    code = (
        "import sys, triggers_core.cli; from triggers_core.runtime.tasks import registered_tasks; "
        "print(sorted(registered_tasks()), 'triggers_core.testing' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[] False"


def test_check(demo: Path) -> None:
    assert data(demo, "check", "questionnaire.json") == {
        "valid": True,
        "problems": [],
        "findings": [],
        "unverifiedRuns": ["survey.Nothing", "survey.Report", "survey.Score"],
    }
    typos = run(demo, "check", "typos.json", "--json")
    assert typos.returncode == 1
    found = json.loads(typos.stdout)["findings"]
    assert [(f["rule"], f["path"]) for f in found] == [
        ("extra-like-directive", "t_createApplicant.unlessAny"),
        ("unknown-task", "t_score.after[0]"),
    ]
    # With the application's modules, run names are checked too.
    (demo / "bad_run.json").write_text('{"t_a": {"after": ["x"], "run": "survey.Scor"}}')
    bad = run(demo, "check", "bad_run.json", "--app", "survey_tasks")
    assert bad.returncode == 1
    assert (
        "no trigger task is registered under 'survey.Scor'; did you mean 'survey.Score'?"
        in bad.stdout
    )


def test_check_counts_only_the_tasks_the_application_registers(demo: Path) -> None:
    # The command line registers no sample task; an application that does not
    # import them does not have them.
    (demo / "samples.json").write_text('{"t_a": {"after": ["x"], "run": "triggers.DevNullTask"}}')
    without = run(demo, "check", "samples.json", "--app", "survey_tasks")
    assert without.returncode == 1
    assert "no trigger task is registered under 'triggers.DevNullTask'" in without.stdout
    with_samples = run(demo, "check", "samples.json", "--app", "triggers_core.testing")
    assert with_samples.returncode == 0, with_samples.stdout


def test_check_bad_input(demo: Path) -> None:
    (demo / "broken.json").write_text('{"t_a": {"after": ["x"],}')
    broken = run(demo, "check", "broken.json")
    assert (broken.returncode, broken.stderr.strip()) == (
        1,
        "Error: broken.json: not valid JSON: Expecting property name enclosed in double "
        "quotes at line 1, column 25",
    )
    (demo / "invalid.json").write_text('{"t_a": {"after": "x"}}')
    invalid = run(demo, "check", "invalid.json")
    assert invalid.returncode == 1
    assert "t_a.after: expected a list of trigger names, got a single string" in invalid.stderr
    assert "t_a.run: required" in invalid.stderr
    missing = run(demo, "check", "nope.json")
    assert missing.returncode == 2
    assert "File 'nope.json' does not exist" in missing.stderr
    assert run(demo, "check", "questionnaire.json", "--app", "no_such_module").returncode == 2
    assert run(demo, "check", "questionnaire.json", "--bogus").returncode == 2


def test_graph(demo: Path) -> None:
    dot = run(demo, "graph", "questionnaire.json", "--format", "dot")
    assert dot.returncode == 0
    assert dot.stdout.startswith("digraph triggers {")
    coloured = run(demo, "graph", "questionnaire.json", "--session", DB, "survey-42")
    assert coloured.returncode == 0
    assert '["t_sendReport (1 failed)"]' in coloured.stdout
    assert "classDef failed" in coloured.stdout
    edges = data(demo, "graph", "questionnaire.json")["edges"]
    assert {"source": "t_computeScore", "target": "t_sendReport", "kind": "cascade"} in edges
    # A storage URL in the environment changes nothing for commands on files.
    assert run(demo, "graph", "questionnaire.json", TRIGGERS_STORAGE_URL=DB).returncode == 0
    assert run(demo, "check", "questionnaire.json", TRIGGERS_STORAGE_URL=DB).returncode == 0
    bad = run(demo, "graph", "questionnaire.json", "--session", "nope", "survey-42")
    assert bad.returncode == 2
    assert "--session" in bad.stderr


def test_simulate(demo: Path) -> None:
    result = data(
        demo,
        "simulate",
        "questionnaire.json",
        "--fire",
        'startSession={"r": 1}',
        "--fire",
        "observationsReceived",
        "--fire",
        "sessionFinalized",
        "--fail",
        "t_sendReport",
    )
    assert result["ran"] == ["t_createApplicant#0", "t_computeScore#0", "t_sendReport#0"]
    assert result["instances"]["t_sendReport#0"] == "failed"
    assert result["instances"]["t_sendReminder#0"] == "abandoned"
    bad = run(demo, "simulate", "questionnaire.json", "--fire", "startSession={oops")
    assert bad.returncode == 2
    assert "--fire startSession: not valid JSON" in bad.stderr


def test_sessions(demo: Path) -> None:
    everything = data(demo, "sessions", DB)
    assert sorted(everything["sessions"]) == ["survey-41", "survey-42", "survey-43"]
    assert everything["cursor"] is None
    assert data(demo, "sessions", DB, "--failed")["sessions"] == ["survey-42"]
    assert data(demo, "sessions", DB, "--stale", "1h", NOW)["sessions"] == ["survey-43"]
    assert data(demo, "sessions", DB, "--stale", "3h", NOW)["sessions"] == []
    first = data(demo, "sessions", DB, "--limit", "2")
    assert len(first["sessions"]) == 2
    rest = data(demo, "sessions", DB, "--cursor", first["cursor"])
    assert sorted(first["sessions"] + rest["sessions"]) == sorted(everything["sessions"])
    from_env = run(demo, "sessions", "--failed", TRIGGERS_STORAGE_URL=DB)
    assert from_env.stdout == "survey-42\n"


def test_bad_urls(demo: Path) -> None:
    unknown = run(demo, "sessions", "nosql://admin:hunter2@db/x")
    assert unknown.returncode == 2
    assert "no storage named 'nosql'" in unknown.stderr
    no_url = run(demo, "inspect", "survey-42")
    assert no_url.returncode == 2
    assert "not a storage URL: 'survey-42'" in no_url.stderr
    assert "or set TRIGGERS_STORAGE_URL" in no_url.stderr
    missing = run(demo, "inspect", "sqlite:///elsewhere.db", "survey-42")
    assert missing.returncode == 2
    assert "no SQLite database at 'elsewhere.db'" in missing.stderr
    assert not (demo / "elsewhere.db").exists()
    kv = run(demo, "sessions", "memcached://127.0.0.1:1")
    assert kv.returncode == 1
    assert "memcached 127.0.0.1:1" in kv.stderr  # listed through its index: unreachable
    dead = run(demo, "sessions", "postgresql://ops:hunter2@127.0.0.1:1/app")
    assert dead.returncode == 1
    assert "postgresql+psycopg://ops@127.0.0.1:1/app" in dead.stderr
    assert "hunter2" not in dead.stderr + dead.stdout


def test_inspect(demo: Path) -> None:
    table = run(demo, "inspect", DB, "survey-43", "--stale", "1h", NOW)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["instance", "status", "waiting", "for", "age", "log", "level"]
    assert lines[2].split() == ["t_createApplicant#0", "scheduled", "(stale)", "2h", "NOTSET"]
    rows = {r["instance"]: r for r in data(demo, "inspect", DB, "survey-42", NOW)["instances"]}
    assert rows["t_sendReport#0"]["error"] == "LookupError: no e-mail address for the report"
    assert rows["t_processPage#0"]["waitingFor"] == ["pageReceived"]
    assert rows["t_processPage#0"]["ageSeconds"] == 7200
    # Options before the arguments, URL from the environment.
    env_url = run(demo, "inspect", "--stale", "1h", NOW, "survey-43", TRIGGERS_STORAGE_URL=DB)
    assert env_url.stdout == table.stdout
    unknown = run(demo, "inspect", DB, "survey-99")
    assert (unknown.returncode, unknown.stderr.strip()) == (
        1,
        "Error: no session 'survey-99' in sqlite:///demo.db",
    )


def test_explain(demo: Path) -> None:
    result = data(
        demo, "explain", DB, "survey-41", "t_computeScore#0", "--if-fired", "sessionFinalized"
    )
    assert [w["trigger"] for w in result["explanation"]["waitingFor"]] == ["sessionFinalized"]
    assert result["whatIf"]["scheduled"] == ["t_computeScore#0"]
    assert result["whatIf"]["abandoned"] == ["t_sendReminder#0"]
    unknown = run(demo, "explain", DB, "survey-41", "t_computeScore#7")
    assert unknown.returncode == 1
    assert "no task instance named 't_computeScore#7'" in unknown.stderr


def test_replay_and_skip(demo: Path) -> None:
    refused = run(demo, "replay", DB, "survey-42", "t_sendReport#0")
    assert refused.returncode == 1
    assert "nothing was changed" in refused.stderr
    assert data(demo, "inspect", DB, "survey-42")["instances"][-1]["status"] == "failed"
    again = run(demo, "replay", DB, "survey-42", "t_sendReport#0", "--app", "survey_tasks")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        "replayed t_sendReport#0 as t_sendReport#1",
        "t_sendReport#0 replayed",
        "t_sendReport#1 failed",
    ]
    skipped = run(
        demo,
        "skip",
        DB,
        "survey-42",
        "t_sendReport#1",
        "--cascade",
        "--result",
        "{}",
        "--app",
        "survey_tasks",
    )
    assert skipped.stdout.splitlines() == [
        "skipped t_sendReport#1 and fired its task's name",
        "t_sendReport#1 skipped",
    ]
    not_failed = run(demo, "replay", DB, "survey-42", "t_sendReport#1")
    assert not_failed.returncode == 1
    assert "cannot replay instance 't_sendReport#1' in status 'skipped'" in not_failed.stderr
    bad_json = run(demo, "replay", DB, "survey-42", "t_sendReport#1", "--kwargs", "[1]")
    assert bad_json.returncode == 2
    no_cascade = run(demo, "skip", DB, "survey-42", "t_sendReport#1", "--result", "{}")
    assert no_cascade.returncode == 2


def test_fire(demo: Path) -> None:
    done = run(
        demo, "fire", DB, "survey-41", "pageReceived", '{"page": 2}', "--app", "survey_tasks"
    )
    assert done.stdout.splitlines() == [
        "fired 'pageReceived': scheduled t_processPage#1",
        "t_processPage#1 finished",
    ]
    bad = run(demo, "fire", DB, "survey-41", "pageReceived", "{not json")
    assert bad.returncode == 2
    assert "JSON: not valid JSON" in bad.stderr


def test_fire_with_an_idempotency_key(demo: Path) -> None:
    args = ("fire", DB, "survey-41", "pageReceived", '{"page": 3}', "--app", "survey_tasks")
    first = run(demo, *args, "--idempotency-key", "upload-77")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "fired 'pageReceived': scheduled t_processPage#1",
        "t_processPage#1 finished",
    ]
    again = run(demo, *args, "--idempotency-key", "upload-77")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        "not fired 'pageReceived': a duplicate (this key was used before; "
        "that fire scheduled t_processPage#1)"
    ]
    other = run(demo, *args, "--idempotency-key", "upload-78")
    assert other.stdout.splitlines()[0] == "fired 'pageReceived': scheduled t_processPage#2"
    bad = run(demo, *args, "--idempotency-key", "")
    assert bad.returncode == 1
    assert bad.stderr.startswith("Error: ")
    assert "idempotency_key" in bad.stderr
    assert "Traceback" not in bad.stderr


GROUPED = {
    "t_fetch": {"after": ["start"], "run": "survey.Nothing"},
    "t_notify": {
        "after": ["start", {"anyOf": ["email", "sms"]}],
        "unless": [{"atLeast": 2, "of": ["optOut", "bounced", "cancelled"]}],
        "run": "survey.Nothing",
    },
    "t_single": {"after": [{"anyOf": ["t_fetch"]}], "run": "survey.Nothing"},
}
STORE_GROUPED = """
from datetime import UTC, datetime
from triggers_core import TriggerManager
import survey_tasks
manager = TriggerManager(
    "sqlite:///demo.db", uid="grouped-1", clock=lambda: datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
)
manager.update_configuration({config})
manager.fire("start", {{}})
manager.fire("bounced", {{}})
manager.get_runner().join_all()
"""


def test_condition_groups(demo: Path) -> None:
    (demo / "grouped.json").write_text(json.dumps(GROUPED))
    # Only a hint: printed, but the configuration passes.
    check = run(demo, "check", "grouped.json")
    assert (check.returncode, check.stdout.splitlines()) == (
        0,
        [
            "hint: t_single.after[0]: a group with one member is satisfied exactly when that "
            "member is: write 't_fetch' in its place [simpler-group]",
            "1 finding",
        ],
    )
    simulated = run(demo, "simulate", "grouped.json", "--fire", "start")
    assert "t_notify#0  unstarted  any one of (email, sms)" in simulated.stdout
    graph = data(demo, "graph", "grouped.json")
    assert graph["groups"][0] == {
        "path": "t_notify.after[1]",
        "task": "t_notify",
        "directive": "after",
        "parent": None,
        "label": "any of",
    }
    assert {
        "source": "sms",
        "target": "t_notify",
        "kind": "after",
        "group": "t_notify.after[1]",
    } in (graph["edges"])
    script = demo / "store_grouped.py"
    script.write_text(STORE_GROUPED.format(config=repr(GROUPED)))
    subprocess.run(
        [sys.executable, script.name], cwd=demo, env=environment(), check=True, timeout=120
    )
    table = run(demo, "inspect", DB, "grouped-1", NOW).stdout.splitlines()
    assert table[2].split()[:7] == [
        "t_notify#0",
        "unstarted",
        "any",
        "one",
        "of",
        "(email,",
        "sms)",
    ]
    explained = run(demo, "explain", DB, "grouped-1", "t_notify#0")
    assert explained.stdout.splitlines() == [
        "t_notify#0 is not ready: it waits for",
        "  - any one of: 'email', 'sms'",
        "    - 'email': never fired in this session",
        "    - 'sms': never fired in this session",
        "  unless: 'bounced' fired; it is abandoned if one more of ('optOut', 'cancelled') fires "
        "too before it runs",
    ]
