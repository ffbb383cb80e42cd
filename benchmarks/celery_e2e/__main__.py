"""``python -m benchmarks.celery_e2e``: see :mod:`benchmarks.celery_e2e.run`."""

from benchmarks.celery_e2e.run import main

raise SystemExit(main())
