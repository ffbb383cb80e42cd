"""The end-to-end Celery benchmark of issue 22 (``nox -s bench-celery``).

Real ``celery worker`` processes (prefork pool, 2 nodes x concurrency 2,
``worker_prefetch_multiplier=1``) run the seed's workload, fired by 2 producer
processes with every session's fires shuffled together, on three variants:
Redis broker + ``django-cache://`` on Redis, Redis broker + ``memcached://``,
RabbitMQ + PostgreSQL. Each task body inserts one row into PostgreSQL and
sleeps 5 ms. The run checks that every session ends with exactly its five
finished instances and their five effect rows, and fails otherwise.

Modules (this package imports none of them, so they form no import circle):

* :mod:`~benchmarks.celery_e2e.workload`: the configuration, the fires, the plan.
* :mod:`~benchmarks.celery_e2e.tasks`: the three trigger tasks (an effect row + 5 ms).
* :mod:`~benchmarks.celery_e2e.app`: the Celery app, the manager class, settings by env.
* :mod:`~benchmarks.celery_e2e.worker_app`: what ``celery -A`` loads on the workers.
* :mod:`~benchmarks.celery_e2e.instrument`: round-trip and publish counters.
* :mod:`~benchmarks.celery_e2e.producer`: the producer processes.
* :mod:`~benchmarks.celery_e2e.processes`: starting, watching and stopping processes; CPU.
* :mod:`~benchmarks.celery_e2e.variants`: the three broker/storage set-ups.
* :mod:`~benchmarks.celery_e2e.verify`: the exactness checks (pure).
* :mod:`~benchmarks.celery_e2e.measure`: one measured run; its figures.
* :mod:`~benchmarks.celery_e2e.profiling`: the worker profile and its summary.
* :mod:`~benchmarks.celery_e2e.report`: the Markdown report.
* :mod:`~benchmarks.celery_e2e.run`: the command line (``python -m benchmarks.celery_e2e``).
"""
