"""The console's actions: replay, skip, fail, fire, recover.

Each is two steps: a GET shows what will happen and a form (the
confirmation); a POST of that form does it. A POST needs a valid CSRF token
(checked by the adapter), a signed-in actor and a console that may act (not
``read_only``, a runner named). Every action is a call of the manager's
API, which records the actor:

* replay: ``replay_failed_instance(name, replacement_kwargs, actor=...)``
* skip: ``skip_failed_instance(name, cascade, result, actor=...)``
* fail: ``fail_instance(name, reason, actor=...)``
* fire: ``fire(trigger, kwargs)``
* recover: ``recover()``

Instances an action schedules go to their task's runner (``using``) or the
console's runner, never silently to this process: with the ``threading``
runner (named on purpose) the console first works out, on a copy, which
instances would run here, and refuses if their task is not registered in
this process, before anything is stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from triggers_core.engine.scopes import Scope
from triggers_core.engine.state import SessionState, TaskInstance
from triggers_core.errors import TriggersError
from triggers_core.runtime.redaction import redact
from triggers_core.runtime.storage import Storage
from triggers_core.runtime.tasks import registered_tasks
from triggers_core.tools.explain import what_if
from triggers_core.tools.simulation import ReplayFailed, SkipFailed, Step, run_simulation
from triggers_core.web._core import ConsoleCore, NotFound, WebRequest, WebResponse
from triggers_core.web._present import shown_json

__all__ = ["action_view"]

#: The most characters of JSON a form field may carry.
MAX_FORM_JSON = 1_000_000


class _Refused(Exception):
    """The action cannot be done as asked; the message says why (shown on the form)."""


def _json_object(text: str, what: str, *, default: dict[str, Any] | None) -> dict[str, Any] | None:
    text = text.strip()
    if not text:
        return default
    if len(text) > MAX_FORM_JSON:
        raise _Refused(f"{what}: more than {MAX_FORM_JSON:,} characters")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise _Refused(f"{what}: not valid JSON ({exc.msg} at {where})") from None
    if not isinstance(value, dict):
        raise _Refused(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def _gate(console: ConsoleCore, request: WebRequest) -> WebResponse | None:
    """The refusal for a request that may not act at all, else None."""
    if console.read_only:
        return console.error(request, 403, "Read-only", "this console is read-only: no actions")
    if console.runner is None:
        return console.error(
            request,
            403,
            "No runner",
            "this console was started without a runner (--runner celery, say), so it "
            "cannot act: it only looks",
        )
    if request.actor is None:
        return console.render(
            request, "signin_needed.html", http_status=403, heading="Sign in to act"
        )
    return None


def _instance(storage: Storage, name: str) -> TaskInstance:
    found = storage.load(Scope(names=frozenset({name}))).state.instances.get(name)
    if found is None:
        raise NotFound(f"no instance {name!r} in session {storage.uid!r}")
    return found


def _check_runnable(console: ConsoleCore, state: SessionState, step: Step) -> None:
    """Refuse if an instance ``step`` would run in this process has no registered task."""
    ran = run_simulation(state.tasks, [step], state=state).ran
    known = registered_tasks()
    for name in ran:
        task = state.tasks[name.rpartition("#")[0]]
        if (task.using or console.runner) == "threading" and task.run not in known:
            raise _Refused(
                f"{name} would run in this web process (runner 'threading'), but no trigger "
                f"task is registered under {task.run!r} here: start the console with --app "
                "MODULE, or with the runner your workers use; nothing was changed"
            )


def action_view(console: ConsoleCore, request: WebRequest) -> WebResponse:
    """The confirmation page (GET) or the action itself (POST)."""
    action = request.path.removeprefix("/act/")
    refused = _gate(console, request)
    if refused is not None:
        return refused
    uid = request.query.get("uid", "")
    if not uid:
        raise NotFound("this page needs ?uid=...")
    storage = console.open(uid)
    name = request.query.get("name", "")
    instance = _instance(storage, name) if action in ("replay", "skip", "fail") else None
    if request.method != "POST":
        values = _defaults(action, instance, request)
        return _confirm(
            console, request, action=action, instance=instance, values=values, storage=storage
        )
    values = dict(request.form)
    if not request.csrf_ok:
        return console.error(
            request,
            403,
            "Refused",
            "the form's CSRF token is missing or wrong (reload the page and try again)",
        )
    before = storage.load_full().state
    try:
        message = _perform(
            console,
            request,
            action=action,
            storage=storage,
            name=name,
            values=values,
            before=before,
        )
    except _Refused as exc:
        problem, status = str(exc), 400
    except (TriggersError, KeyError, ValueError) as exc:
        problem = f"not found: {exc.args[0]!r}" if type(exc) is KeyError else str(exc)
        status = 409
    else:
        problem, status = "", 200
    if problem:
        return _confirm(
            console,
            request,
            action=action,
            instance=instance,
            values=values,
            storage=storage,
            problem=problem,
            status=status,
        )
    after = storage.load_full().state
    changed = [
        (n, after.instances[n].status.value)
        for n in sorted(after.instances)
        if before.instances.get(n) != after.instances[n]
    ]
    return console.render(
        request, "done.html", uid=uid, action=action, message=redact(message), changed=changed
    )


def _defaults(action: str, instance: TaskInstance | None, request: WebRequest) -> dict[str, str]:
    if action == "replay" and instance is not None:
        return {"kwargs": shown_json(instance.kwargs, limit=MAX_FORM_JSON).text}
    if action == "fire":
        return {"trigger": request.query.get("trigger", ""), "kwargs": "{}"}
    return {}


def _confirm(
    console: ConsoleCore,
    request: WebRequest,
    *,
    action: str,
    instance: TaskInstance | None,
    values: Mapping[str, str],
    storage: Storage,
    problem: str = "",
    status: int = 200,
) -> WebResponse:
    preview: tuple[str, ...] = ()
    trigger = values.get("trigger", "")
    if action == "fire" and trigger:
        try:
            state = storage.load_full().state
            preview = tuple(
                redact(line) for line in what_if(state, trigger, now=console.clock()).lines
            )
        except (TriggersError, ValueError) as exc:
            preview = (f"cannot tell: {exc}",)
    return console.render(
        request,
        "confirm.html",
        http_status=status,
        uid=storage.uid,
        action=action,
        instance=instance,
        values=values,
        problem=redact(problem),
        preview=preview,
    )


def _perform(
    console: ConsoleCore,
    request: WebRequest,
    *,
    action: str,
    storage: Storage,
    name: str,
    values: Mapping[str, str],
    before: SessionState,
) -> str:
    manager = console.manager(storage)
    actor = request.actor
    if action == "replay":
        replacement = _json_object(values.get("kwargs", ""), "replacement kwargs", default=None)
        _check_runnable(console, before, ReplayFailed(name, replacement))
        clone = manager.replay_failed_instance(name, replacement, actor=actor)
        return f"replayed {name} as {clone.name}"
    if action == "skip":
        cascade = values.get("cascade") == "1"
        result = _json_object(values.get("result", ""), "cascade result", default=None)
        if result is not None and not cascade:
            raise _Refused("a cascade result is only used with cascade: tick it too")
        _check_runnable(console, before, SkipFailed(name, cascade, result))
        manager.skip_failed_instance(name, cascade, result, actor=actor)
        return f"skipped {name}" + (" and fired its task's name" if cascade else "")
    if action == "fail":
        reason = values.get("reason", "").strip()
        if not reason:
            raise _Refused("give a reason: it is recorded with the failure")
        manager.fail_instance(name, reason, actor=actor)
        return f"failed {name}"
    if action == "fire":
        trigger = values.get("trigger", "").strip()
        if not trigger:
            raise _Refused("name the trigger to fire")
        kwargs = _json_object(values.get("kwargs", ""), "kwargs", default={})
        _check_runnable(console, before, (trigger, kwargs or {}))
        scheduled = manager.fire(trigger, kwargs)
        names = ", ".join(i.name for i in scheduled) or "nothing"
        return f"fired {trigger!r}: scheduled {names}"
    if action == "recover":
        report = manager.recover()
        done = [f"{a.instance} {a.action}: {a.detail}" for a in report.actions]
        if not done:
            return f"recovered: nothing was lost ({report.examined} instances looked at)"
        return "recovered: " + "; ".join(done)
    raise NotFound(f"no action {action!r}")  # pragma: no cover - routed from ACTIONS
