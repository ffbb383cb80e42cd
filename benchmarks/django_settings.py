"""``DJANGO_SETTINGS_MODULE`` of the benchmark processes (see ``benchmarks.django_cache``)."""

from __future__ import annotations

import json
import os

SECRET_KEY = "triggers-benchmarks"
USE_TZ = True
INSTALLED_APPS: list[str] = []
CACHES = json.loads(os.environ["TRIGGERS_BENCH_DJANGO_CACHES"])
