"""A Celery runner says when it has no app to publish through (issue 23, item 3)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
from triggers_celery.runner import CeleryTaskRunner
print(CeleryTaskRunner().setup_problem() is not None)
from celery import Celery
app = Celery("mine", broker="memory://")
print(CeleryTaskRunner().setup_problem(), CeleryTaskRunner(app).setup_problem())
"""


def test_a_runner_without_an_app_has_a_setup_problem() -> None:
    # A fresh process: no test has bound an app, Celery has made no current app yet.
    done = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split() == ["True", "None", "None"]
