"""The survey workflow from the "Basic Concepts" note, end to end.

Run it (on the embedded default, SQLite in a fresh temporary directory)::

    python examples/questionnaire.py

or on any storage URL (argument or ``TRIGGERS_STORAGE_URL``)::

    python examples/questionnaire.py memory://
    TRIGGERS_STORAGE_URL=postgresql+psycopg://app@db/triggers python examples/questionnaire.py

Each run uses a new session UID, so it starts fresh on a persistent database
too. It prints every instance's status at the end and exits with status 1 if
the workflow did not end the way it should, so it doubles as a smoke test; a
storage it cannot open or reach is one line on stderr and exit status 2.

What it shows:

* ``after`` in both orders: ``observationsReceived`` fires before
  ``startSession``; ``t_computeScore`` gets its cascade before ``sessionFinalized``.
* ``andEvery``: one ``t_processPage`` instance per ``pageReceived``.
* ``unless``: ``t_sendReminder`` is abandoned once the session is finalized.
* cascades carrying results as kwargs, deep-merged over ``withParams``.
* a failing task (no e-mail address) replayed with replacement kwargs.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from triggers_core import (
    STORAGE_URL_ENV,
    RegistryError,
    Status,
    StorageError,
    TaskContext,
    ThreadingTaskRunner,
    TriggerManager,
    TriggerTask,
    open_storage,
)
from triggers_core.runtime.registry import storage_scheme

# -- the tasks (found by these registered names, never by import path) ------------------------


class CreateApplicant(TriggerTask):
    """Creates the applicant from the first module's document."""

    name: ClassVar[str] = "questionnaire.CreateApplicant"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        document_id = context.trigger_kwargs["observationsReceived"]["document_id"]
        respondent = context.trigger_kwargs["startSession"]["respondent"]
        return {"applicantId": f"A-{document_id}", "respondent": respondent}


class ProcessPage(TriggerTask):
    """Stores the answers of one page."""

    name: ClassVar[str] = "questionnaire.ProcessPage"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        page = context.trigger_kwargs["pageReceived"]
        return {"page": page["page"], "answers": len(page["answers"])}


class ComputeScore(TriggerTask):
    """Scores the applicant once the session is finalized."""

    name: ClassVar[str] = "questionnaire.ComputeScore"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        applicant = context.trigger_kwargs["t_createApplicant"]
        finalized = context.trigger_kwargs["sessionFinalized"]
        with context.get_logger_context({"applicant": applicant["applicantId"]}) as log:
            log.info("scoring with model %s", finalized["model"])
        return {"applicantId": applicant["applicantId"], "score": 87, "model": finalized["model"]}


class SendReport(TriggerTask):
    """E-mails the score; fails when no address is known."""

    name: ClassVar[str] = "questionnaire.SendReport"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        score = context.trigger_kwargs["t_computeScore"]
        if "email" not in score:
            raise LookupError(f"no e-mail address for applicant {score['applicantId']}")
        return {"sentTo": score["email"], "channel": score["channel"]}


class SendReminder(TriggerTask):
    """Reminds a respondent who has not finished (never runs in this story)."""

    name: ClassVar[str] = "questionnaire.SendReminder"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {"reminded": context.trigger_kwargs["startSession"]["respondent"]}


CONFIGURATION: dict[str, Any] = {
    "t_createApplicant": {
        "after": ["startSession", "observationsReceived"],
        "run": CreateApplicant.name,
    },
    "t_processPage": {
        "after": ["startSession"],
        "andEvery": "pageReceived",
        "unless": ["sessionAbandoned"],
        "run": ProcessPage.name,
    },
    "t_computeScore": {
        "after": ["t_createApplicant", "sessionFinalized"],
        "run": ComputeScore.name,
        "withParams": {"sessionFinalized": {"model": "psychometric-v2"}},
    },
    "t_sendReport": {
        "after": ["t_computeScore"],
        "run": SendReport.name,
        "withParams": {"t_computeScore": {"channel": "email"}},
    },
    "t_sendReminder": {
        "after": ["startSession", "reminderDue"],
        "unless": ["sessionFinalized"],
        "run": SendReminder.name,
    },
}

#: How the story must end: instance -> (status, result or None if not checked).
EXPECTED: dict[str, tuple[Status, Mapping[str, Any] | None]] = {
    "t_computeScore#0": (
        Status.FINISHED,
        {"applicantId": "A-17", "score": 87, "model": "psychometric-v2"},
    ),
    "t_createApplicant#0": (Status.FINISHED, {"applicantId": "A-17", "respondent": "r-42"}),
    "t_processPage#0": (Status.FINISHED, {"page": 1, "answers": 3}),
    "t_processPage#1": (Status.FINISHED, {"page": 2, "answers": 2}),
    "t_processPage#2": (Status.FINISHED, {"page": 3, "answers": 1}),
    "t_sendReminder#0": (Status.ABANDONED, None),
    "t_sendReport#0": (Status.REPLAYED, None),
    "t_sendReport#1": (Status.FINISHED, {"sentTo": "r42@example.org", "channel": "email"}),
}

SQL_SCHEMES = {"sqlite", "postgresql", "postgres", "mysql", "mariadb"}


def storage_url(argv: list[str], workdir: str) -> str:
    """argv[1], else ``TRIGGERS_STORAGE_URL``, else a new SQLite file in ``workdir``."""
    url = argv[1] if len(argv) > 1 else os.environ.get(STORAGE_URL_ENV)
    if not url:
        url = f"sqlite:///{Path(workdir) / 'questionnaire.db'}"
    if storage_scheme(url) in SQL_SCHEMES and "triggers_create_schema" not in url:
        # A demo may create its tables; applications use migrations instead.
        url += ("&" if "?" in url else "?") + "triggers_create_schema=true"
    return url


def run_story(manager: TriggerManager, runner: ThreadingTaskRunner) -> None:
    """Fire the survey's triggers the way the application would."""
    manager.update_configuration(CONFIGURATION)

    print("module 1 processed; its observations arrive before the session starts")
    manager.fire("observationsReceived", {"document_id": 17})
    manager.fire("startSession", {"respondent": "r-42"})

    print("three pages arrive: one t_processPage instance each")
    for page, answers in [(1, ["a", "b", "c"]), (2, ["d", "e"]), (3, ["f"])]:
        manager.fire("pageReceived", {"page": page, "answers": answers})

    print("the session is finalized: the score runs, the reminder is abandoned")
    manager.fire("sessionFinalized", {"finalized_by": "respondent"})
    manager.fire("reminderDue")  # too late: t_sendReminder was abandoned
    runner.join_all()

    failed = manager.storage["t_sendReport#0"]
    print(f"t_sendReport#0 {failed.status}: {failed.metadata.get('exceptionType')}")
    if failed.status is Status.FAILED:
        print("an operator adds the e-mail address and replays it")
        score = dict(failed.kwargs["t_computeScore"])
        score["email"] = "r42@example.org"
        manager.replay_failed_instance(failed, {"t_computeScore": score})
        runner.join_all()


def check(manager: TriggerManager) -> list[str]:
    """Print every instance's status; return what differs from :data:`EXPECTED`."""
    instances = manager.storage.instances
    print()
    print(f"{'instance':<22} {'status':<10} result")
    for name, instance in instances.items():
        result = instance.metadata.get("result", "")
        print(f"{name:<22} {instance.status.value:<10} {result}")
    problems = []
    for name, (status, result) in EXPECTED.items():
        found = instances.get(name)
        if found is None:
            problems.append(f"{name}: missing")
        elif found.status is not status:
            problems.append(f"{name}: {found.status.value}, expected {status.value}")
        elif result is not None and found.metadata.get("result") != result:
            problems.append(f"{name}: result {found.metadata.get('result')}, expected {result}")
    problems.extend(f"{name}: unexpected instance" for name in instances if name not in EXPECTED)
    return problems


class _OneLine(logging.Formatter):
    """Task failures are part of the story: log them in one line, without tracebacks."""

    def format(self, record: logging.LogRecord) -> str:
        return f"  [{record.levelname.lower()}] {record.getMessage()}"


def main(argv: list[str]) -> int:
    """Run the story; 0 if it ended as expected, 1 otherwise."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_OneLine())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    with tempfile.TemporaryDirectory(prefix="triggers-questionnaire-") as workdir:
        try:
            url = storage_url(argv, workdir)
            storage = open_storage(url, f"questionnaire-{uuid.uuid4().hex[:12]}")
        except (RegistryError, StorageError, ValueError) as exc:
            # A URL that is no storage's, a missing extra, a server that refuses: the
            # message names it (never the password); a traceback would add nothing.
            print(f"cannot open the storage: {exc}", file=sys.stderr)
            return 2
        print(f"storage: {storage!r} ({storage_scheme(url)})")
        runner = ThreadingTaskRunner()
        manager = TriggerManager(storage, runners={runner.name: runner})
        try:
            run_story(manager, runner)
            problems = check(manager)
        except StorageError as exc:  # e.g. a memcached server that does not answer
            print(f"the storage failed: {exc}", file=sys.stderr)
            return 2
        finally:
            runner.join_all()
            storage.close()
    if problems:
        print("\nthe workflow did not end as expected:", *problems, sep="\n  ")
        return 1
    print("\nthe workflow ended as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
