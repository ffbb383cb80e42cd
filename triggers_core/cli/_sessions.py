"""Commands that read sessions: ``sessions``, ``inspect``, ``explain``."""

from __future__ import annotations

from datetime import datetime, timedelta

import click

from triggers_core.cli._common import (
    UrlCommand,
    duration,
    emit_json,
    failures,
    json_option,
    named_json,
    now_option,
    open_session,
    storage_url,
)
from triggers_core.cli._django import settings_option
from triggers_core.cli._safe import echo, print_rows
from triggers_core.engine.state import Status
from triggers_core.runtime.sessions import SessionFilter
from triggers_core.tools.explain import (
    InstanceExplanation,
    explain,
    explain_instances,
    format_age,
    what_if,
)
from triggers_core.tools.listing import list_sessions
from triggers_core.tools.runs import RunStatus, run_status, run_statuses

__all__ = ["INCOMPLETE_NOTE", "explain_command", "inspect", "sessions"]

#: Printed (to stderr) after a listing of a store that may have evicted part of its index.
INCOMPLETE_NOTE = (
    "(note: this store may evict keys, so its index of sessions may have lost some: "
    "the list may be incomplete; see docs/operations.md#finding-sessions)"
)

URL = click.argument("url", metavar="URL", callback=lambda _c, _p, v: storage_url(v))
UID = click.argument("uid", metavar="UID")


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> timedelta | None:
    return None if value is None else duration(value)


STALE = click.option(
    "--stale",
    callback=_duration,
    metavar="DURATION",
    help="Scheduled or running for longer than this (90s, 15m, 2h, 1d) counts as stale.",
)


@click.command(cls=UrlCommand)
@URL
@click.option("--unresolved", is_flag=True, help="Only sessions with an unresolved instance.")
@click.option("--failed", is_flag=True, help="Only sessions with a failed instance.")
@STALE
@click.option(
    "--lost",
    is_flag=True,
    help="Only sessions with a lost run (running under an expired lease: its worker died).",
)
@click.option(
    "--expired",
    is_flag=True,
    help="Only sessions with an expired instance (a within window closed first).",
)
@now_option
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    help="Print at most this many, then the cursor of the rest.",
)
@click.option("--cursor", help="Continue after a previous --limit.")
@settings_option
@json_option
def sessions(
    *,
    url: str,
    unresolved: bool,
    failed: bool,
    stale: timedelta | None,
    lost: bool,
    expired: bool,
    now: datetime,
    limit: int | None,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List the sessions stored at URL (filters combine: all must hold).

    URL may be left out when TRIGGERS_STORAGE_URL is set.
    """
    wanted = SessionFilter(
        unresolved=unresolved,
        failed=failed,
        stale_after=stale,
        lost=lost,
        expired=expired,
        now=now if stale or lost else None,
    )
    uids: list[str] = []
    incomplete = False
    with failures():
        while True:
            size = 1000 if limit is None else limit - len(uids)
            page = list_sessions(url, wanted, page_size=size, cursor=cursor)
            uids.extend(page.uids)
            incomplete = incomplete or page.may_be_incomplete
            cursor = page.cursor
            if cursor is None or (limit is not None and len(uids) >= limit):
                break
    if as_json:
        emit_json({"sessions": uids, "cursor": cursor, "mayBeIncomplete": incomplete})
        return
    for uid in uids:
        echo(uid)
    if cursor is not None:
        echo(f"(more: --cursor {cursor})", err=True)
    if incomplete:
        echo(INCOMPLETE_NOTE, err=True)


def _timer(explained: InstanceExplanation, now: datetime) -> dict[str, object] | None:
    """The instance's timer (a delay or a retry's cooldown, else an open window), as
    ``inspect`` shows it."""
    if explained.status is not Status.UNSTARTED:
        return None
    kind, at = (
        ("delay" if explained.retry_cooldown is None else "retry", explained.delayed_until)
        if explained.delayed_until is not None
        else ("window", explained.deadline)
    )
    if at is None:
        return None
    return {"kind": kind, "at": at.isoformat(), "inSeconds": (at - now).total_seconds()}


def _timer_text(timer: dict[str, object] | None) -> str:
    if timer is None:
        return ""
    seconds, at = timer["inSeconds"], timer["at"]
    assert isinstance(seconds, float)
    if timer["kind"] == "retry":
        if seconds > 0:
            return f"retrying at {at} (in {format_age(timedelta(seconds=seconds))})"
        return f"retry cooldown ended at {at} (scheduled at the next tick)"
    if timer["kind"] == "delay":
        if seconds > 0:
            return f"delayed until {at} (in {format_age(timedelta(seconds=seconds))})"
        return f"delay ended at {at} (scheduled at the next tick)"
    if seconds > 0:
        return f"window closes in {format_age(timedelta(seconds=seconds))} (at {at})"
    return f"window closed at {at} (expires at the next tick)"


def _waiting(explained: InstanceExplanation, now: datetime | None = None) -> str:
    timer = "" if now is None else _timer_text(_timer(explained, now))
    if explained.waiting_for:
        waits = ", ".join(w.short() for w in explained.waiting_for)
        return f"{waits}; {timer}" if timer else waits
    if timer:
        return timer
    failure = explained.failure
    if failure is not None:
        text = failure.message or failure.exception_type or "no reason recorded"
        if explained.replayed_as is not None:
            text += f" (replayed as {explained.replayed_as})"
        return text
    return ""


def _run_json(run: RunStatus | None) -> dict[str, object] | None:
    if run is None:
        return None
    return {
        "worker": dict(run.worker),
        "leaseExpires": None if run.lease_expires is None else run.lease_expires.isoformat(),
        "lost": run.lost,
        "claimed": run.claimed,
        "nextStep": run.next_step if run.lost else None,
    }


def _failure_json(e: InstanceExplanation) -> dict[str, object] | None:
    if e.failure is None:
        return None
    return {
        "exceptionType": e.failure.exception_type or None,
        "reason": e.failure.message or None,
        "failedAt": None if e.failure.failed_at is None else e.failure.failed_at.isoformat(),
        "retries": e.failure.retries,
        "replayedAs": e.replayed_as,
    }


@click.command(cls=UrlCommand)
@URL
@UID
@STALE
@now_option
@settings_option
@json_option
def inspect(*, url: str, uid: str, stale: timedelta | None, now: datetime, as_json: bool) -> None:
    """Every instance of session UID: status, what it waits for, age, log level.

    Failed instances (and replayed ones) show why they failed where others
    show what they wait for. URL may be left out when TRIGGERS_STORAGE_URL is set.
    """
    storage = open_session(url, uid)
    with failures():
        state = storage.load_full().state
    rows = explain_instances(state, now=now, stale_after=stale, words=False)
    with failures():
        runs = run_statuses(storage, state, now=now)
    levels = {name: instance.log_level_name for name, instance in state.instances.items()}
    idle = sorted(name for name in state.tasks if state.counters.get(name, 0) == 0)
    if as_json:
        emit_json(
            {
                "session": uid,
                "instances": [
                    {
                        "instance": e.instance,
                        "status": e.status.value,
                        "waitingFor": [w.short() for w in e.waiting_for],
                        "error": None if e.failure is None else e.failure.message,
                        "failure": _failure_json(e),
                        "parent": e.parent,
                        "ageSeconds": None if e.age is None else e.age.total_seconds(),
                        "stale": e.stale,
                        "logLevel": levels[e.instance],
                        "run": _run_json(runs.get(e.instance)),
                        "timer": _timer(e, now),
                    }
                    for e in rows
                ],
                "tasksWithoutInstances": idle,
            }
        )
        return
    table = [
        (
            e.instance,
            e.status.value
            + (" (lost)" if e.instance in runs and runs[e.instance].lost else "")
            + (" (stale)" if e.stale else ""),
            runs[e.instance].describe() if e.instance in runs else _waiting(e, now),
            "" if e.age is None else format_age(e.age),
            levels[e.instance],
        )
        for e in rows
    ]
    table.extend((name, "(no instance)", "", "", "") for name in idle)
    print_rows(("instance", "status", "waiting for", "age", "log level"), table)


@click.command("explain", cls=UrlCommand)
@URL
@UID
@click.argument("target", metavar="TASK_OR_INSTANCE")
@click.option(
    "--if-fired",
    metavar="NAME[=JSON]",
    help="Also show what firing this trigger now would do (nothing is stored).",
)
@STALE
@now_option
@settings_option
@json_option
def explain_command(
    *,
    url: str,
    uid: str,
    target: str,
    if_fired: str | None,
    stale: timedelta | None,
    now: datetime,
    as_json: bool,
) -> None:
    """Why a task or instance of session UID is where it is, and what a fire would do.

    URL may be left out when TRIGGERS_STORAGE_URL is set.
    """
    fired = None if if_fired is None else named_json(if_fired, "--if-fired")
    storage = open_session(url, uid)
    with failures():
        state = storage.load_full().state
        explained = explain(state, target, now=now, stale_after=stale)
        scenario = None if fired is None else what_if(state, fired[0], fired[1], now=now)
        about = (
            [state.instances[target]]
            if target in state.instances
            else [i for i in state.instances.values() if i.task_name == target]
        )
        runs = [
            run
            for instance in about
            if (run := run_status(storage, state, instance, now=now)) is not None
        ]
    if as_json:
        data = {"explanation": explained.to_json(), "runs": [_run_json(r) for r in runs]}
        if scenario is not None:
            data["whatIf"] = scenario.to_json()
        emit_json(data)
        return
    for line in explained.lines:
        echo(line)
    for run in runs:
        echo(f"{run.instance}: {run.describe()}")
    if scenario is not None:
        for line in scenario.lines:
            echo(line)
