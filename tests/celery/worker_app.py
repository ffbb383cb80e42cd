"""The Celery app and trigger tasks that the test workers import (``-A worker_app``).

A worker subprocess is configured entirely through environment variables, so
one module serves every broker and storage:

``TRIGGERS_TEST_BROKER``     broker URL
``TRIGGERS_TEST_QUEUE``      default queue (``<queue>.slow`` takes ``celerytest.Sleep*``)
``TRIGGERS_TEST_STORAGES``   JSON ``{name: storage URL}`` -> ``triggers_storages``
``TRIGGERS_TEST_EFFECTS``    libpq DSN of the database holding the side-effect table
``TRIGGERS_TEST_CONF``       JSON of extra Celery settings (optional)

The test process builds its own sender apps with :func:`make_app`. The same
task classes run under the threading runner unchanged (see test_eager.py).

Not named ``celery_*``/``test_*``: pytest must not collect it, and it must not
shadow the ``celery`` package.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from celery import Celery, bootsteps, signals

import triggers_core.testing.sample_tasks  # noqa: F401 - registers the sample tasks
from triggers_celery import CeleryTaskRunner, bind_tasks, trigger_task
from triggers_core import TaskContext, TriggerManager, TriggerTask, managers, with_context

EFFECTS_TABLE = "triggers_celery_effects"


class CeleryTestManager(TriggerManager):
    """The manager the tests fire with; workers rebuild it from ``registry_key``."""

    registry_key: ClassVar[str] = "celery-tests"
    default_runner = "celery"


managers.register(CeleryTestManager.registry_key, CeleryTestManager)


def make_app(
    broker: str, queue: str, storages: Mapping[str, str] | None = None, **conf: Any
) -> Celery:
    """A Celery app on ``broker`` whose tasks default to ``queue``; trigger tasks bound."""
    app = Celery(f"triggers-tests-{queue}", set_as_current=False)
    app.conf.update(
        broker_url=broker,
        broker_connection_retry_on_startup=True,
        task_default_queue=queue,
        task_routes={
            "celerytest.Sleep": {"queue": f"{queue}.slow"},
            "celerytest.SleepOnce": {"queue": f"{queue}.slow"},
        },
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=True,
        triggers_storages=dict(storages or {}),
        **conf,
    )
    bind_tasks(app)
    return app


def _effects_connection() -> Any:
    import psycopg

    return psycopg.connect(os.environ["TRIGGERS_TEST_EFFECTS"], autocommit=True)


class Record(TriggerTask):
    """INSERTs one row per instance (primary key: session + instance): proves run-once."""

    name: ClassVar[str] = "celerytest.Record"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        with _effects_connection() as conn:
            conn.execute(
                f"INSERT INTO {EFFECTS_TABLE} (session, instance, pid) VALUES (%s, %s, %s)",
                (context.manager.uid, context.instance_name, os.getpid()),
            )
        return {"pid": os.getpid()}


class RecordThenSleep(Record):
    """Records its row, then sleeps ``sleepRequested.seconds`` before returning."""

    name: ClassVar[str] = "celerytest.RecordThenSleep"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        result = super()._run(context)
        time.sleep(float(context.trigger_kwargs["sleepRequested"]["seconds"]))
        return result


#: Body executions of :class:`Body` (no key: a body that runs twice writes two rows).
RUNS_TABLE = "triggers_celery_runs"
#: Deliveries of trigger task messages to pool processes (sessions named ``death-*``).
DELIVERIES_TABLE = "triggers_celery_deliveries"
#: Seconds a :class:`Body` sleeps in its first execution of a run key, on a worker
#: started with this environment variable (the worker the test kills).
SLOW_ENV = "TRIGGERS_TEST_SLOW_BODY"
#: The sessions whose bodies are slow there.
SLOW_SESSIONS = ("death-body-", "death-node-")


class Body(TriggerTask):
    """Counts its executions (one row each, with ``ctx.run_key``); 2 s leases.

    On a worker with ``TRIGGERS_TEST_SLOW_BODY`` set, the first execution of a
    run key of a ``death-body-*`` or ``death-node-*`` session sleeps that many
    seconds (long enough to be killed in); a clone replayed after a lost run
    finishes at once. There, a ``death-drop-*`` session's body takes 4 s.
    """

    name: ClassVar[str] = "celerytest.Body"
    lease_seconds: ClassVar[float] = 2.0

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        with _effects_connection() as conn:
            earlier = conn.execute(
                f"SELECT count(*) FROM {RUNS_TABLE} WHERE run_key = %s", (context.run_key,)
            ).fetchone()[0]
            conn.execute(
                f"INSERT INTO {RUNS_TABLE} (session, instance, run_key, pid) "
                "VALUES (%s, %s, %s, %s)",
                (context.manager.uid, context.instance_name, context.run_key, os.getpid()),
            )
        slow = float(os.environ.get(SLOW_ENV) or 0)
        if slow and not earlier and context.manager.uid.startswith(SLOW_SESSIONS):
            time.sleep(slow)
        elif slow and context.manager.uid.startswith("death-drop-"):
            time.sleep(4)  # while the test cuts the broker connection
        return {"pid": os.getpid()}


class HardLimit(Body):
    """Sleeps past its Celery hard time limit (2 s) in every execution."""

    name: ClassVar[str] = "celerytest.HardLimit"
    celery_options: ClassVar[dict[str, Any]] = {"time_limit": 2}

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        super()._run(context)
        time.sleep(30)
        return {}


class SoftLimit(Body):
    """Sleeps past its Celery soft time limit (1 s), which raises in the body."""

    name: ClassVar[str] = "celerytest.SoftLimit"
    celery_options: ClassVar[dict[str, Any]] = {"soft_time_limit": 1, "time_limit": 20}

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        super()._run(context)
        time.sleep(10)
        return {}


class AsyncBody(TriggerTask):
    """``async def``: sleeps ``go.seconds`` on its pool process's loop; 2 s leases.

    Returns its pid and loop id; logs ``async body cancelled`` if cancelled (a soft
    time limit) before it ends.
    """

    name: ClassVar[str] = "celerytest.AsyncBody"
    lease_seconds: ClassVar[float] = 2.0

    async def _run(self, context: TaskContext) -> Mapping[str, Any]:
        seconds = float(context.trigger_kwargs.get("go", {}).get("seconds", 0))
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            context.logger.warning("async body %s cancelled", context.instance_name)
            raise
        loop = asyncio.get_running_loop()
        return {"pid": os.getpid(), "loop": id(loop), "slept": seconds}


class AsyncSoftLimit(AsyncBody):
    """An :class:`AsyncBody` with a 1 s Celery soft time limit."""

    name: ClassVar[str] = "celerytest.AsyncSoftLimit"
    celery_options: ClassVar[dict[str, Any]] = {"soft_time_limit": 1, "time_limit": 20}


def _death_session(kwargs: Any) -> str | None:
    session = kwargs.get("session") if isinstance(kwargs, Mapping) else None
    return session if isinstance(session, str) and session.startswith("death-") else None


@signals.task_prerun.connect
def _record_delivery(task_id: str = "", kwargs: Any = None, **_: Any) -> None:
    """In the pool process, before the body: one row per delivery of a ``death-*`` message;
    a ``death-pre-*`` session's first delivery kills its pool process here."""
    session = _death_session(kwargs)
    if session is None:
        return
    with _effects_connection() as conn:
        conn.execute(
            f"INSERT INTO {DELIVERIES_TABLE} (session, instance, task_id, pid) "
            "VALUES (%s, %s, %s, %s)",
            (session, kwargs["instance"], task_id, os.getpid()),
        )
        delivered = conn.execute(
            f"SELECT count(*) FROM {DELIVERIES_TABLE} WHERE session = %s AND instance = %s",
            (session, kwargs["instance"]),
        ).fetchone()[0]
    if session.startswith("death-pre-") and delivered == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # before the instance is marked running


@signals.task_postrun.connect
def _die_before_the_ack(kwargs: Any = None, **_: Any) -> None:
    """In the pool process, after the outcome's commit, before the main process acks:
    a ``death-ack-*`` session's first delivery kills its pool process here."""
    session = _death_session(kwargs)
    if session is None or not session.startswith("death-ack-"):
        return
    with _effects_connection() as conn:
        delivered = conn.execute(
            f"SELECT count(*) FROM {DELIVERIES_TABLE} WHERE session = %s AND instance = %s",
            (session, kwargs["instance"]),
        ).fetchone()[0]
    if delivered == 1:
        os.kill(os.getpid(), signal.SIGKILL)


class Divide(TriggerTask):
    """``numerator / denominator`` from the ``divideRequested`` kwargs; logs with context."""

    name: ClassVar[str] = "celerytest.Divide"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        request = context.trigger_kwargs["divideRequested"]
        with context.get_logger_context({"request": dict(request)}) as log:
            log.warning("dividing %s by %s", request["numerator"], request["denominator"])
            try:
                quotient = request["numerator"] / request["denominator"]
            except ZeroDivisionError as exc:
                raise with_context(exc, {"denominator": request["denominator"]}) from None
        return {"quotient": quotient}


class Score(TriggerTask):
    """Scores the cascade of ``t_createApplicant`` with the ``withParams`` model."""

    name: ClassVar[str] = "celerytest.Score"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        applicant = context.trigger_kwargs["t_createApplicant"]["kwargs"]
        answers = applicant["observationsReceived"]["answers"]
        model = context.trigger_kwargs["model"]
        return {"score": sum(answers) * model["weight"], "model": model["name"]}


class CooldownRetry(TriggerTask):
    """Retries itself with a 1-second cooldown until it has been retried twice."""

    name: ClassVar[str] = "celerytest.CooldownRetry"
    max_retries: ClassVar[int] = 5

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        if context.retries < 2:
            self.retry(RuntimeError(f"attempt {context.retries}"), cooldown=1.0)
        return {"retries": context.retries}


class Sleep(TriggerTask):
    """Sleeps ``sleepRequested.seconds`` (routed to the ``.slow`` queue)."""

    name: ClassVar[str] = "celerytest.Sleep"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        seconds = float(context.trigger_kwargs["sleepRequested"]["seconds"])
        time.sleep(seconds)
        return {"slept": seconds}


class SleepOnce(Sleep):
    """Sleeps in the first run of its chain only (a clone replayed after a lost run does
    not), with 2-second leases (routed to the ``.slow`` queue)."""

    name: ClassVar[str] = "celerytest.SleepOnce"
    lease_seconds: ClassVar[float] = 2.0

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        if context.run_key != f"{context.manager.uid}#{context.instance_name}":
            return {"slept": 0}
        return super()._run(context)


@trigger_task(name="celerytest.shout", bind=True)
def shout(task: TriggerTask, context: TaskContext) -> Mapping[str, Any]:
    """Decorator style: upper-cases ``words.text``; skips itself when there is none."""
    text = context.trigger_kwargs.get("words", {}).get("text")
    if not text:
        task.skip({"reason": "nothing to shout"})
    return {"text": str(text).upper()}


class WakeUp(bootsteps.StartStopStep):  # type: ignore[misc] # celery is untyped
    """Wake the worker's event loop twice a second, so SIGTERM stops it promptly.

    Without timers (heartbeats are off in the tests) an idle AMQP worker sits
    in ``epoll`` for up to ~10 s before it notices a shutdown request.
    """

    requires = ("celery.worker.components:Hub",)

    def start(self, worker: Any) -> None:
        if getattr(worker, "hub", None) is not None:
            worker.hub.call_repeatedly(0.5, _noop)


def _noop() -> None:
    pass


def _worker_app() -> Celery | None:
    broker = os.environ.get("TRIGGERS_TEST_BROKER")
    if not broker:
        return None
    worker_app = make_app(
        broker,
        os.environ["TRIGGERS_TEST_QUEUE"],
        json.loads(os.environ.get("TRIGGERS_TEST_STORAGES", "{}")),
        **json.loads(os.environ.get("TRIGGERS_TEST_CONF", "{}")),
    )
    worker_app.steps["worker"].add(WakeUp)
    return worker_app


#: The worker's app (``celery -A worker_app``); None in the test process.
app = _worker_app()


def fire_ticks(broker: str, queue: str, storage: str, session: str, count: int) -> None:
    """Entry point of the firing subprocesses: fire ``tick`` ``count`` times."""
    sender = make_app(broker, queue)
    manager = CeleryTestManager(storage, session, runners={"celery": CeleryTaskRunner(sender)})
    for n in range(count):
        manager.fire("tick", {"n": n, "pid": os.getpid()})


if __name__ == "__main__":
    fire_ticks(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
