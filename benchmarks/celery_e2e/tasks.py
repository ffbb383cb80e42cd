"""The three trigger tasks of the workload: each inserts one row into PostgreSQL and sleeps 5 ms.

The row (session, instance, pid) is the task's side effect: the benchmark
counts the rows per (session, instance) afterwards, so an instance whose body
ran twice shows up as a doubled row and one that never ran as a missing row.
Each process keeps one autocommit connection for these rows (opened on first
use, reopened after a fork), as an application keeps its database connection
across requests; it is not the storage's connection and is not counted as a
storage round trip.

The DSN and table come from the environment (:data:`EFFECTS_DSN_ENV`,
:data:`EFFECTS_TABLE_ENV`), set by the benchmark for every process it starts.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from benchmarks.celery_e2e.workload import COMPUTE_SCORE, CREATE_APPLICANT, IMPORT_PAGE
from triggers_core import TaskContext, TriggerTask

EFFECTS_DSN_ENV = "TRIGGERS_BENCH_E2E_EFFECTS_DSN"
EFFECTS_TABLE_ENV = "TRIGGERS_BENCH_E2E_EFFECTS_TABLE"
#: Seconds each task body sleeps after its insert (the issue's 5 ms of "work").
TASK_SLEEP = 0.005

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_connection: Any = None
_connection_pid = -1


def effects_table() -> str:
    """The effect table's name, checked to be a plain SQL identifier."""
    table = os.environ.get(EFFECTS_TABLE_ENV, "")
    if not _IDENTIFIER.fullmatch(table):
        raise RuntimeError(f"{EFFECTS_TABLE_ENV} must be a plain lower-case identifier: {table!r}")
    return table


def create_effects_table(dsn: str, table: str) -> None:
    """Create the effect table (no key: a doubled row must be recorded, not refused)."""
    import psycopg  # noqa: PLC0415 - only where PostgreSQL is used

    if not _IDENTIFIER.fullmatch(table):
        raise ValueError(f"not a plain identifier: {table!r}")
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            f"CREATE TABLE {table} (session text NOT NULL, instance text NOT NULL,"
            " pid integer NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )


def drop_effects_table(dsn: str, table: str) -> None:
    import psycopg  # noqa: PLC0415

    if not _IDENTIFIER.fullmatch(table):
        raise ValueError(f"not a plain identifier: {table!r}")
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def _effects_connection() -> Any:
    global _connection, _connection_pid  # noqa: PLW0603 - one connection per process
    if _connection is None or _connection_pid != os.getpid() or _connection.closed:
        import psycopg  # noqa: PLC0415

        _connection = psycopg.connect(
            os.environ[EFFECTS_DSN_ENV], autocommit=True, connect_timeout=10
        )
        _connection_pid = os.getpid()
    return _connection


def record_effect(session: str, instance: str) -> None:
    """Insert this instance's effect row (one statement, autocommit)."""
    _effects_connection().execute(
        f"INSERT INTO {effects_table()} (session, instance, pid) VALUES (%s, %s, %s)",
        (session, instance, os.getpid()),
    )


class _BenchTask(TriggerTask):
    """Insert the effect row, sleep 5 ms, return a small result."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        record_effect(context.manager.uid, context.instance_name)
        time.sleep(TASK_SLEEP)
        return self.result(context)

    def result(self, context: TaskContext) -> Mapping[str, Any]:
        return {}


class CreateApplicant(_BenchTask):
    name: ClassVar[str] = CREATE_APPLICANT

    def result(self, context: TaskContext) -> Mapping[str, Any]:
        start = context.trigger_kwargs["startSession"]
        return {"applicant": start["applicant"], "answers": len(context.trigger_kwargs)}


class ComputeScore(_BenchTask):
    name: ClassVar[str] = COMPUTE_SCORE

    def result(self, context: TaskContext) -> Mapping[str, Any]:
        applicant = context.trigger_kwargs["t_createApplicant"]
        return {"score": applicant["answers"] * 10, "applicant": applicant["applicant"]}


class ImportPage(_BenchTask):
    name: ClassVar[str] = IMPORT_PAGE

    def result(self, context: TaskContext) -> Mapping[str, Any]:
        return {"page": context.trigger_kwargs["pageReceived"]["page"]}
