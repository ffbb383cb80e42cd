"""The pages that only read: the session list, a session, an instance, explain, the graph.

Each is a function ``(console, request) -> WebResponse``; :mod:`triggers_core.web.console`
routes to them. Costs: the list reads one page of the listing API plus one
session header per row; a session page reads the session once and draws one
page of its instances (sorting all n of them: O(n log n)).
"""

from __future__ import annotations

import re
from datetime import timedelta
from importlib import resources
from typing import Any

from triggers_core.engine.scopes import Scope
from triggers_core.engine.state import Status, TaskInstance
from triggers_core.errors import UnsupportedOperationError
from triggers_core.runtime.redaction import redact
from triggers_core.runtime.registry import open_storage
from triggers_core.runtime.sessions import SessionFilter, is_stale
from triggers_core.tools.explain import UnknownNameError, explain, what_if
from triggers_core.tools.listing import list_sessions
from triggers_core.tools.render import to_dot
from triggers_core.web._core import ConsoleCore, NotFound, WebRequest, WebResponse
from triggers_core.web._graph import GraphUnavailable, dot_available, svg_of
from triggers_core.web._present import (
    format_duration,
    metadata_text,
    parse_time,
    shown_json,
    shown_text,
)
from triggers_core.web._session import read_session
from triggers_core.web._timeline import build_timeline, failure_reason, is_lost, run_duration

__all__ = [
    "explain_page",
    "graph_picture",
    "instance_page",
    "parse_duration",
    "session_page",
    "sessions_page",
    "static_file",
]

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
#: Statuses in the order the pages list them (``expired`` where the engine has it).
STATUS_ORDER = (
    "failed",
    "running",
    "scheduled",
    "unstarted",
    "finished",
    "skipped",
    "replayed",
    "abandoned",
    "expired",
)
#: Metadata keys the instance page shows in sections of their own.
_SHOWN_APART = frozenset(
    {"actualKwargs", "result", "exceptionType", "exceptionInfo", "exceptionContext"}
)


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``1d``, ``1h30m``; ValueError naming the text otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 2h, 1d or 1h30m)")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _required(request: WebRequest, key: str) -> str:
    value = request.query.get(key, "")
    if not value:
        raise NotFound(f"this page needs ?{key}=...")
    return value


def _positive(text: str | None, default: int) -> int:
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"not a page number: {text!r}")
    return int(text)


# -- the session list --------------------------------------------------------------------


def sessions_page(console: ConsoleCore, request: WebRequest) -> WebResponse:
    """Sessions, a page at a time: filters failed, stale, lost, expired, unresolved; a UID
    prefix search."""
    query = request.query
    prefix = query.get("prefix", "")
    stale_text = query.get("stale", "")
    problems: list[str] = []
    stale = None
    if stale_text:
        try:
            stale = parse_duration(stale_text)
        except ValueError as exc:
            problems.append(str(exc))
    try:
        wanted = SessionFilter(
            unresolved=query.get("unresolved") == "1",
            failed=query.get("failed") == "1",
            stale_after=stale,
            lost=query.get("lost") == "1",
            expired=query.get("expired") == "1",
            now=console.clock() if stale is not None or query.get("lost") == "1" else None,
            uid_prefix=prefix,
        )
    except ValueError as exc:
        problems.append(str(exc))
        wanted = SessionFilter()
    rows: list[dict[str, Any]] = []
    cursor = None
    incomplete = False
    if not problems:
        try:
            page = list_sessions(
                console.storage_url,
                wanted,
                page_size=console.page_size,
                cursor=query.get("cursor") or None,
            )
        except (ValueError, UnsupportedOperationError) as exc:
            problems.append(str(exc))
        else:
            cursor = page.cursor
            incomplete = page.may_be_incomplete
            rows = [_session_row(console, uid) for uid in page.uids]
    filters = {
        "prefix": prefix,
        "stale": stale_text,
        "failed": query.get("failed") == "1",
        "unresolved": query.get("unresolved") == "1",
        "lost": query.get("lost") == "1",
        "expired": query.get("expired") == "1",
    }
    return console.render(
        request,
        "sessions.html",
        http_status=400 if problems else 200,
        rows=rows,
        cursor=cursor,
        incomplete=incomplete,
        filters=filters,
        problems=problems,
        first_page=not query.get("cursor"),
    )


def _session_row(console: ConsoleCore, uid: str) -> dict[str, Any]:
    """What the list says of one session: its header (no instance is read)."""
    try:
        header = open_storage(console.storage_url, uid).load().state
    except Exception:  # a row that cannot be read says so; the list goes on
        return {"uid": uid, "instances": None, "tasks": None}
    return {
        "uid": uid,
        "instances": sum(header.counters.values()),
        "tasks": len(header.tasks),
    }


# -- a session ---------------------------------------------------------------------------


def session_page(console: ConsoleCore, request: WebRequest) -> WebResponse:
    """A session: summary, timeline, instance table (a page of it), graph and explain.

    Reads the header, the unresolved instances and one page of instances
    (see :mod:`triggers_core.web._session`), not the session's history.
    """
    uid = _required(request, "uid")
    storage = console.open(uid)
    now = console.clock()
    status = request.query.get("status", "")
    task = request.query.get("task", "")
    try:
        page_number = _positive(request.query.get("page"), 1)
    except ValueError as exc:
        return console.error(request, 400, "Bad page", str(exc))
    view = read_session(
        storage, status=status, task=task, page=page_number, size=console.instances_per_page
    )
    timeline = build_timeline(view.shown, view.known, now=now)
    drawn = dot_available()
    return console.render(
        request,
        "session.html",
        uid=uid,
        state=view.header,
        counts=[(s, view.counts[s]) for s in STATUS_ORDER if view.counts.get(s)],
        resolved=view.total - len(view.unresolved),
        total=view.total,
        by_task=sorted(view.by_task.items()),
        tasks=sorted(view.by_task),
        rows=[_instance_row(i) for i in view.shown],
        timeline=timeline,
        status=status,
        task=task,
        page=view.page,
        pages=view.pages,
        matching=view.matching,
        read_all=view.read_all,
        statuses=STATUS_ORDER,
        graph_drawn=drawn,
        dot_text=None if drawn else shown_text(to_dot(view.header.tasks)),
        stale={i.name for i in view.unresolved if is_stale(i, console.stale_after, now=now)},
    )


def _instance_row(instance: TaskInstance) -> dict[str, Any]:
    created = parse_time(instance.metadata.get("created"))
    parent = instance.metadata.get("parent")
    return {
        "name": instance.name,
        "task": instance.task_name,
        "status": instance.status.value,
        "created": created.strftime("%Y-%m-%d %H:%M:%S") if created else "",
        "ran": format_duration(run_duration(instance)),
        "retries": instance.retries,
        "log_level": instance.log_level_name,
        "parent": parent if isinstance(parent, str) else "",
        "reason": failure_reason(instance) if instance.status is Status.FAILED else "",
        "lost": is_lost(instance),
        "actor": metadata_text(instance.metadata, "actor"),
    }


# -- an instance -------------------------------------------------------------------------


def instance_page(console: ConsoleCore, request: WebRequest) -> WebResponse:
    """One instance: status, times, kwargs, result, error (redacted), explanation."""
    uid = _required(request, "uid")
    name = _required(request, "name")
    storage = console.open(uid)
    state = storage.load(Scope(names=frozenset({name}))).state
    instance = state.instances.get(name)
    if instance is None:
        raise NotFound(f"no instance {name!r} in session {uid!r}")
    parent_name = instance.metadata.get("parent")
    everything = dict(state.instances)
    if isinstance(parent_name, str):
        everything.update(storage.load(Scope(names=frozenset({parent_name}))).state.instances)
    now = console.clock()
    timeline = build_timeline([instance], everything, now=now)
    metadata = instance.metadata
    rest = {k: v for k, v in metadata.items() if k not in _SHOWN_APART}
    try:
        lines = _redacted(explain(state, name, now=now, stale_after=console.stale_after).lines)
    except UnknownNameError as exc:  # pragma: no cover - the instance was just loaded
        lines = (str(exc),)
    exception_info = metadata_text(metadata, "exceptionInfo")
    return console.render(
        request,
        "instance.html",
        uid=uid,
        instance=instance,
        status=instance.status.value,
        kwargs=shown_json(instance.kwargs),
        actual=shown_json(metadata["actualKwargs"]) if "actualKwargs" in metadata else None,
        result=shown_json(metadata["result"]) if "result" in metadata else None,
        error_type=shown_text(metadata_text(metadata, "exceptionType"), redacted=True),
        error_info=shown_text(exception_info, redacted=True) if exception_info else None,
        error_context=(
            shown_json(metadata["exceptionContext"], redacted=True)
            if metadata.get("exceptionContext")
            else None
        ),
        lost=is_lost(instance),
        metadata=shown_json(rest),
        timeline=timeline,
        explanation=lines,
        parent=parent_name if isinstance(parent_name, str) else "",
        ran=format_duration(run_duration(instance)),
    )


def _redacted(lines: tuple[str, ...]) -> tuple[str, ...]:
    """Explanations quote stored errors: no secret in them reaches a page."""
    return tuple(redact(line) for line in lines)


# -- explain -----------------------------------------------------------------------------


def explain_page(console: ConsoleCore, request: WebRequest) -> WebResponse:
    """Why a task or instance is where it is; with ``fire``, what firing it would do now."""
    uid = _required(request, "uid")
    name = request.query.get("name", "")
    fire = request.query.get("fire", "")
    state = console.open(uid).load_full().state
    now = console.clock()
    lines: tuple[str, ...] = ()
    what: tuple[str, ...] = ()
    problem = ""
    try:
        if name:
            lines = _redacted(explain(state, name, now=now, stale_after=console.stale_after).lines)
        if fire:
            what = _redacted(what_if(state, fire, now=now).lines)
    except (UnknownNameError, ValueError) as exc:
        problem = redact(str(exc))
    return console.render(
        request,
        "explain.html",
        http_status=404 if problem else 200,
        uid=uid,
        name=name,
        fire=fire,
        lines=lines,
        what=what,
        problem=problem,
        tasks=sorted(state.tasks),
    )


# -- the graph and static files ----------------------------------------------------------

#: The picture may carry Graphviz's own inline styles, nothing else.
_SVG_POLICY = "default-src 'none'; style-src 'unsafe-inline'"


def graph_picture(console: ConsoleCore, request: WebRequest) -> WebResponse:
    """The session's configuration graph as SVG, each task coloured by its instances."""
    uid = _required(request, "uid")
    state = console.open(uid).load_full().state
    text = to_dot(state.tasks, instances=state.instances.values())
    try:
        svg = svg_of(text)
    except GraphUnavailable as exc:
        return console.error(request, 503, "No picture", str(exc))
    headers = {
        "Content-Security-Policy": _SVG_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }
    return WebResponse(200, svg, "image/svg+xml", headers)


_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def static_file(console: ConsoleCore, request: WebRequest) -> WebResponse:
    """The console's stylesheet and script (shipped in the package)."""
    name = request.path.rsplit("/", 1)[1]
    data = resources.files("triggers_core.web").joinpath("static", name).read_bytes()
    content_type = _STATIC_TYPES[name[name.rindex(".") :]]
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=300"}
    return WebResponse(200, data, content_type, headers)
