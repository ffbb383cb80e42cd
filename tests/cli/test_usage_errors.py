"""Input and intent errors of the command line are usage errors: exit 2, one line naming
the problem (issue 23, item 3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_transcript import environment
from test_cli import DB, NOW, run

DEEP = "[" * 3000 + "]" * 3000
HUGE = "9" * 5000


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line that names the problem (after click's usage lines)."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("fire", DB, "survey-41", "pageReceived", '{"a": ' + DEEP + "}"), "nested 3001 levels"),
        (("fire", DB, "survey-41", "pageReceived", '{"a": ' + HUGE + "}"), "5000 digits"),
        (("simulate", "questionnaire.json", "--fire", "x={}".replace("{}", DEEP)), "nested"),
        (("simulate", "questionnaire.json", "--fire", f'x={{"n": {HUGE}}}'), "5000 digits"),
        (("explain", DB, "survey-41", "t_processPage", "--if-fired", f"x={DEEP}"), "nested"),
        (("explain", DB, "survey-41", "t_processPage", "--if-fired", 'x={"n": 1e999}'), "large"),
        (("fire", DB, "survey-41", "pageReceived", '{"n": NaN}'), "NaN is no JSON number"),
        (("replay", DB, "survey-42", "t_sendReport#0", "--kwargs", DEEP), "nested"),
        (("skip", DB, "survey-42", "t_sendReport#0", "--cascade", "--result", DEEP), "nested"),
    ],
)
def test_deep_or_huge_json_arguments(demo: Path, args: tuple[str, ...], problem: str) -> None:
    done = run(demo, *args)
    assert done.returncode == 2, done.stderr
    line = error_line(done)
    assert problem in line
    assert len(line) < 300


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"t_a": {"after": ["x"], "run": "r", "deep": ' + DEEP + "}}", "nested 3002 levels"),
        ('{"t_a": {"after": ["x"], "run": "r", "n": ' + HUGE + "}}", "5000 digits"),
    ],
)
def test_deep_or_huge_configuration_files(demo: Path, text: str, problem: str) -> None:
    (demo / "hostile.json").write_text(text)
    done = run(demo, "check", "hostile.json")
    assert done.returncode == 2, done.stderr
    assert problem in error_line(done)


def test_a_huge_at_least_is_one_problem_among_all(demo: Path) -> None:
    config = (
        '{"t_a": {"after": [{"atLeast": ' + HUGE + ', "of": ["x", "y"]}], "run": "r"},'
        ' "t_b": {"after": "x", "run": "r"}}'
    )
    (demo / "groups.json").write_text(config)
    done = run(demo, "check", "groups.json")
    assert done.returncode == 2  # the number itself is no value a storage can hold
    (demo / "groups.json").write_text(config.replace(HUGE, "3"))
    done = run(demo, "check", "groups.json")
    assert done.returncode == 1
    assert "t_a.after[0].atLeast: must be from 1 to 2" in done.stderr
    assert "t_b.after: expected a list" in done.stderr


def test_a_runner_without_its_app_changes_nothing(demo: Path) -> None:
    before = json.loads(run(demo, "inspect", DB, "survey-41", "--json", NOW).stdout)
    for args in (
        ("fire", DB, "survey-41", "pageReceived", "--runner", "celery"),
        ("replay", DB, "survey-42", "t_sendReport#0", "--runner", "celery"),
        ("skip", DB, "survey-42", "t_sendReport#0", "--cascade", "--runner", "celery"),
    ):
        done = run(demo, *args)
        assert done.returncode == 2, done.stderr
        line = error_line(done)
        assert "--runner celery: no Celery app is configured" in line
        assert "--app MODULE" in line
    assert json.loads(run(demo, "inspect", DB, "survey-41", "--json", NOW).stdout) == before
    unknown = run(demo, "fire", DB, "survey-41", "pageReceived", "--runner", "carrier-pigeon")
    assert unknown.returncode == 2
    assert "carrier-pigeon" in error_line(unknown)


def test_django_settings_are_named_when_missing(demo: Path) -> None:
    done = run(demo, "inspect", "django-cache://default", "s1")
    assert done.returncode == 2, done.stderr
    line = error_line(done)
    assert "--settings" in line
    assert "DJANGO_SETTINGS_MODULE" in line
    missing = run(demo, "sessions", "django-cache://x", DJANGO_SETTINGS_MODULE="site_settings")
    assert missing.returncode == 2, missing.stderr
    line = error_line(missing)
    assert "cannot import the Django settings module 'site_settings'" in line
    assert "pip install" not in line


def test_every_storage_command_takes_settings(demo: Path) -> None:
    (demo / "demo_settings.py").write_text(
        'SECRET_KEY = "x"\nCACHES = {"default": '
        '{"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}\n'
    )
    # A local-memory cache is empty in a new process: the session is not found, which
    # is how far a command gets once Django is set up.
    for args in (
        ("inspect", "django-cache://default", "s1"),
        ("explain", "django-cache://default", "s1", "t_a"),
        ("fire", "django-cache://default", "s1", "go"),
        ("replay", "django-cache://default", "s1", "t_a#0"),
        ("skip", "django-cache://default", "s1", "t_a#0"),
        ("graph", "questionnaire.json", "--session", "django-cache://default", "s1"),
    ):
        done = run(demo, *args, "--settings", "demo_settings")
        assert done.returncode == 1, (args, done.stderr)
        assert "no session 's1'" in error_line(done)


def test_the_missing_cli_extra_is_named(tmp_path: Path) -> None:
    code = "import sys; sys.modules['click'] = None; from triggers_core.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "triggers: the command line needs the 'cli' extra (click is not installed): "
        "pip install -e '.[cli]' in a checkout of celery-triggers "
        "(pip install 'celery-triggers[cli]' once it is on PyPI)"
    ]


def test_check_without_app_names_what_it_did_not_verify(demo: Path) -> None:
    done = run(demo, "check", "questionnaire.json")
    assert done.returncode == 0
    assert done.stderr.strip() == (
        "note: without --app, the run targets were not checked (survey.Nothing, "
        "survey.Report, survey.Score): pass --app MODULE to check that each is a "
        "registered trigger task"
    )
    with_app = run(demo, "check", "questionnaire.json", "--app", "survey_tasks")
    assert (with_app.returncode, with_app.stderr) == (0, "")


def test_a_keyed_fire_reports_what_the_engine_decided(demo: Path) -> None:
    args = ("fire", DB, "survey-41", "pageReceived", '{"page": 3}', "--app", "survey_tasks")
    first = run(demo, *args, "--idempotency-key", "k-1")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("fired 'pageReceived': scheduled t_processPage#1")
    # Another writer changes the session in between: the repeat is still a duplicate.
    other = run(demo, "fire", DB, "survey-41", "reminderDue", "--app", "survey_tasks")
    assert other.returncode == 0, other.stderr
    again = run(demo, *args, "--idempotency-key", "k-1")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == (
        "not fired 'pageReceived': a duplicate (this key was used before; that fire "
        "scheduled t_processPage#1)"
    )


def test_strict_refuses_a_trigger_no_task_mentions(demo: Path) -> None:
    before = run(demo, "inspect", DB, "survey-41", "--json", NOW).stdout
    strict = run(demo, "fire", DB, "survey-41", "pageRecieved", "--strict")
    assert strict.returncode == 1
    assert "did you mean 'pageReceived'?" in error_line(strict)
    assert run(demo, "inspect", DB, "survey-41", "--json", NOW).stdout == before
    loose = run(demo, "fire", DB, "survey-41", "pageRecieved")
    assert loose.returncode == 0
    assert "WARNING triggers.fire: fired 'pageRecieved'" in loose.stderr
    assert "did you mean 'pageReceived'?" in loose.stderr
