"""The console included in a Django project: Django's sign-in, staff and superusers, CSRF.

Django is configured once per process and this suite's process has other
settings, so a child process runs the project (``django_site.py``) and
reports what each user saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import web_workflow as workflow

from triggers_core import ThreadingTaskRunner, TriggerManager, open_storage

SITE = Path(__file__).resolve().parent / "django_site.py"


def test_the_django_include_uses_djangos_auth_and_csrf(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'triggers.db'}"
    uid = "applicant-4711"
    runner = ThreadingTaskRunner()
    manager = TriggerManager(open_storage(url, uid), runners={"threading": runner})
    workflow.make_failed_session(manager)
    runner.join_all(30)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, str(SITE), url, uid],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["anonymous"] == [302, "/accounts/login/?next=/triggers/"]
    assert report["viewer_list"] == [200, True]
    assert report["viewer_links"] is True
    assert report["viewer_session"] == [200, True]
    assert report["viewer_act"] == 403  # staff may look; acting takes a superuser
    assert report["confirm"] == [200, True]
    assert report["forged"] == 403  # Django's CSRF check
    assert report["done"] == [200, True]
    assert report["actor"] == "django:root"
    assert report["statuses"]["t_score#1"] == "finished"
    assert report["statuses"]["t_report#0"] == "finished"
