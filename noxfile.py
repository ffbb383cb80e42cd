"""Task automation: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck``, ``nox -s bench``,
``nox -s bench-celery``."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTEST_ARGS = ["-p", "no:cacheprovider"]
#: The suite runs on one pytest-xdist worker per core (at most 4: each starts its own Celery
#: workers and memcached), a test file per worker at a time (its module fixtures stay in one
#: process). Every test keeps to tables, key prefixes and queues of its own run, so they do
#: not meet. ``nox -s tests -- -n 0`` runs it in one process.
PARALLEL_ARGS = ["--numprocesses=auto", "--maxprocesses=4", "--dist=loadfile"]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite against real services (see docs/testing.md)."""
    session.install("-e", ".[test]")
    # pytest exits 5 when it collected nothing; that must fail, never pass.
    session.run("pytest", *PYTEST_ARGS, *PARALLEL_ARGS, *session.posargs, success_codes=[0])


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check; the import contracts of docs/architecture.md."""
    session.install("ruff>=0.5", "import-linter>=2.1")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # lint-imports reads the installed packages: install the project (no extras needed).
    session.install("-e", ".")
    session.run("lint-imports", "--no-cache")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the three packages."""
    session.install("-e", ".[test]", "mypy>=1.10")
    session.run(
        "mypy", "--strict", "triggers_core", "triggers_backends", "triggers_celery", "tests/typing"
    )


@nox.session
def example(session: nox.Session) -> None:
    """Run the questionnaire example on the embedded default (SQLite + threads)."""
    session.install("-e", ".[sqlalchemy]")
    session.run("python", "examples/questionnaire.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks of issue 8 on every backend (medians, ratios, targets), the web console's,
    what leases cost (issue 21), what observing a fire costs (issue 25) and async ``fire``
    throughput on PostgreSQL (issue 27); see BENCHMARKS.md."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "benchmarks.run", *session.posargs, env=dict(os.environ))
    session.run("python", "-m", "benchmarks.web", env=dict(os.environ))
    session.run("python", "-m", "benchmarks.leases", env=dict(os.environ))
    session.run("python", "-m", "benchmarks.leases_celery", env=dict(os.environ))
    session.run("python", "-m", "benchmarks.observability", env=dict(os.environ))
    session.run("python", "-m", "benchmarks.async_fire", env=dict(os.environ))


@nox.session(name="bench-celery")
def bench_celery(session: nox.Session) -> None:
    """Issue 22's end-to-end benchmark on real Celery workers (every variant, 200 and 1,000
    sessions, saturated and paced, plus a worker profile); see BENCHMARKS.md.

    Options go after ``--``, e.g. ``nox -s bench-celery -- --variants redis-memcached
    --sessions 20 --modes saturated`` for a smoke run.
    """
    session.install("-e", ".[test]")
    args = session.posargs or ["--profile", "200", "--profile-dir", "benchmarks/results"]
    session.run("python", "-m", "benchmarks.celery_e2e", *args, env=dict(os.environ))
