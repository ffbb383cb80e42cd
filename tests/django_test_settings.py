"""``DJANGO_SETTINGS_MODULE`` of the processes the tests start: the test run's settings.

The test process puts them in an environment variable (``django_env.process_environment``);
a spawned racer or a Celery worker then configures Django as any application
process does, from its settings module.
"""

from __future__ import annotations

import json
import os

# django_env.SETTINGS_ENV (not imported: this module must stay light for workers)
globals().update(json.loads(os.environ["TRIGGERS_TEST_DJANGO_SETTINGS"]))
