"""Session state <-> JSON documents, schema-versioned. Never pickle.

A session is stored as a *configuration* document (the tasks, rewritten only
when they change), a *header* (latest kwargs, counters, unsettled instances,
settled triggers, rewritten by every operation) and one document per instance, so that storages
rewrite only what changed. :func:`state_to_json` / :func:`state_from_json`
combine all three for storages that keep one document.

Schema versions: 1 kept the tasks inside the header and had no ``unsettled``;
loading a version-1 header still works (its ``unsettled`` sets are derived from
the instances loaded with it, which must then include every unstarted one).
Version 2 added ``unsettled``. Its ``settled`` field (per task, the triggers every
unstarted instance has recorded) may be absent, as in headers written before it
existed: absent means nothing is known (no trigger settled), which is always
correct, so it needs no new schema version; the first fire that reads a task's
unstarted instances fills it in.

Version 3 (written now) added the time directives ``within``, ``onMiss`` and
``delay``. In configurations stored at versions 1 and 2 those keys are extras,
as they were then (:data:`~triggers_core.engine.config.LEGACY_DIRECTIVES`), so a
stored session never starts acting differently after an upgrade. Such a task
keeps its extras when the configuration is written again: a version-3
configuration holds it under ``legacyTasks``, read by the old rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from triggers_core.engine.config import (
    KNOWN_DIRECTIVES,
    TaskConfig,
    directive_typo,
    parse_task_config,
)
from triggers_core.engine.scopes import settled_of, unsettled_of
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.engine.task_table import TaskTable
from triggers_core.errors import SerializationError

__all__ = [
    "SCHEMA_VERSION",
    "SPLIT_HEADER_VERSION",
    "HeaderCodec",
    "check_joined",
    "config_from_json",
    "config_to_json",
    "dumps",
    "header_from_json",
    "header_to_json",
    "instance_from_json",
    "instance_to_json",
    "loads",
    "state_from_json",
    "state_to_json",
    "tasks_to_json",
]

#: Bumped whenever the stored layout changes; loaders refuse newer versions.
SCHEMA_VERSION = 3
#: The first version whose configurations know ``within``, ``onMiss`` and ``delay``.
TIME_DIRECTIVES_VERSION = 3

#: The version of a header whose latest kwargs are stored elsewhere (a SQL storage's
#: ``latest`` table): its ``latestTriggers`` lists the triggers that have them. A
#: library that knows only :data:`SCHEMA_VERSION` refuses such a header (rather than
#: reading a session without its latest kwargs). One more than :data:`SCHEMA_VERSION`,
#: so that a header says by its version alone which layout it has.
SPLIT_HEADER_VERSION = SCHEMA_VERSION + 1


def dumps(document: Mapping[str, Any]) -> str:
    """Compact, deterministic JSON text."""
    return json.dumps(document, separators=(",", ":"), sort_keys=True, allow_nan=False)


def loads(text: str | bytes, what: str = "document") -> dict[str, Any]:
    """Parse JSON text into a mapping or raise :class:`SerializationError`."""
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SerializationError(f"{what}: not valid JSON ({exc})") from exc
    except RecursionError as exc:  # nested deeper than the caller's stack allows
        raise SerializationError(f"{what}: nested too deeply to decode ({exc})") from exc
    if not isinstance(value, dict):
        raise SerializationError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def _check_schema(doc: Mapping[str, Any], what: str) -> int:
    version = doc.get("schemaVersion")
    if not isinstance(version, int) or isinstance(version, bool):
        raise SerializationError(f"{what}: missing or invalid schemaVersion {version!r}")
    if version > SCHEMA_VERSION:
        raise SerializationError(
            f"{what}: schemaVersion {version} is newer than this library understands "
            f"({SCHEMA_VERSION}); upgrade triggers to read it"
        )
    if version < 1:
        raise SerializationError(f"{what}: invalid schemaVersion {version}")
    return version


def _expect(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if key not in doc:
        raise SerializationError(f"{what}: missing field {key!r}")
    value = doc[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise SerializationError(f"{what}.{key}: unexpected {type(value).__name__}")
    return value


def instance_to_json(instance: TaskInstance) -> dict[str, Any]:
    """One instance as a JSON-compatible mapping."""
    return {
        "schemaVersion": SCHEMA_VERSION,
        "name": instance.name,
        "task": instance.task_name,
        "status": instance.status.value,
        "kwargs": {k: dict(v) for k, v in instance.kwargs.items()},
        "unlessFired": sorted(instance.unless_fired),
        "metadata": dict(instance.metadata),
        "retries": instance.retries,
        "logLevel": instance.log_level,
        "logsResolved": instance.logs_marked_resolved,
    }


def instance_from_json(doc: Mapping[str, Any], what: str = "instance") -> TaskInstance:
    """Inverse of :func:`instance_to_json`; raises :class:`SerializationError`."""
    if not isinstance(doc, Mapping):
        raise SerializationError(f"{what}: expected an object, got {type(doc).__name__}")
    _check_schema(doc, what)
    name = _expect(doc, "name", str, what)
    what = f"instance {name!r}"
    task = _expect(doc, "task", str, what)
    number = name[len(task) + 1 :]
    # ASCII digits in canonical form only: "²".isdigit() is True but int("²") fails,
    # and "t#01" would alias "t#1".
    canonical = number.isascii() and number.isdigit() and str(int(number)) == number
    if "#" in task or not name.startswith(task + "#") or not canonical:
        raise SerializationError(f"{what}: name does not match task {task!r}")
    status_text = _expect(doc, "status", str, what)
    try:
        status = Status(status_text)
    except ValueError:
        raise SerializationError(f"{what}.status: unknown status {status_text!r}") from None
    kwargs = _expect(doc, "kwargs", dict, what)
    for trigger, value in kwargs.items():
        if not isinstance(value, dict):
            raise SerializationError(f"{what}.kwargs.{trigger}: expected an object")
    unless = _expect(doc, "unlessFired", list, what)
    if not all(isinstance(u, str) for u in unless):
        raise SerializationError(f"{what}.unlessFired: expected a list of strings")
    return TaskInstance(
        name=name,
        task_name=task,
        status=status,
        kwargs=kwargs,
        unless_fired=frozenset(unless),
        metadata=_expect(doc, "metadata", dict, what),
        retries=_expect(doc, "retries", int, what),
        log_level=_expect(doc, "logLevel", int, what),
        logs_marked_resolved=_expect(doc, "logsResolved", bool, what),
    )


def _is_legacy(task: TaskConfig) -> bool:
    """True if ``task`` has an extra that today's rules would read as a directive (or a typo
    of one): a task loaded from a configuration stored before time conditions."""
    return any(k in KNOWN_DIRECTIVES or directive_typo(k) is not None for k in task.extras)


def tasks_to_json(tasks: Mapping[str, TaskConfig]) -> dict[str, Any]:
    """``{"tasks": ..., "legacyTasks": ...}`` (the latter only if there are any)."""
    modern: dict[str, Any] = {}
    legacy: dict[str, Any] = {}
    for name, task in tasks.items():
        (legacy if task.extras and _is_legacy(task) else modern)[name] = task.to_json()
    return {"tasks": modern, "legacyTasks": legacy} if legacy else {"tasks": modern}


def config_to_json(tasks: Mapping[str, TaskConfig]) -> dict[str, Any]:
    """The task configuration as a JSON-compatible mapping."""
    return {"schemaVersion": SCHEMA_VERSION, **tasks_to_json(tasks)}


def _tasks_from_json(doc: Mapping[str, Any], what: str) -> TaskTable:
    version = _check_schema(doc, what)
    raw_tasks = _expect(doc, "tasks", dict, what)
    raw_legacy = doc.get("legacyTasks", {})
    if not isinstance(raw_legacy, dict):
        raise SerializationError(f"{what}.legacyTasks: unexpected {type(raw_legacy).__name__}")
    problems: list[str] = []
    tasks: dict[str, TaskConfig] = {}
    for raw, legacy in (
        (raw_tasks, version < TIME_DIRECTIVES_VERSION),
        (raw_legacy, True),
    ):
        for name, directives in raw.items():
            task = parse_task_config(name, directives, problems, legacy=legacy)
            if task is not None:
                tasks[name] = task
    if problems:
        raise SerializationError(f"{what}.tasks: " + "; ".join(problems))
    return TaskTable(tasks)


def config_from_json(doc: Mapping[str, Any], what: str = "configuration") -> TaskTable:
    """Inverse of :func:`config_to_json`; raises :class:`SerializationError`."""
    if not isinstance(doc, Mapping):
        raise SerializationError(f"{what}: expected an object, got {type(doc).__name__}")
    _check_schema(doc, what)
    return _tasks_from_json(doc, what)


def header_to_json(state: SessionState, *, latest: bool = True) -> dict[str, Any]:
    """Latest kwargs, counters, unsettled instances, settled triggers (no tasks, no instances).

    ``latest=False`` leaves out the latest kwargs (a storage that keeps them elsewhere,
    so that none is read to write the header).
    """
    return {
        "schemaVersion": SCHEMA_VERSION,
        **(
            {"latestKwargs": {k: dict(v) for k, v in state.latest_kwargs.items()}} if latest else {}
        ),
        "counters": dict(state.counters),
        "unsettled": {task: sorted(names) for task, names in sorted(state.unsettled.items())},
        "settled": {task: sorted(names) for task, names in sorted(state.settled.items())},
    }


def header_from_json(
    doc: Mapping[str, Any],
    instances: Mapping[str, TaskInstance] | None = None,
    what: str = "session",
    *,
    tasks: Mapping[str, TaskConfig] | None = None,
) -> SessionState:
    """Inverse of :func:`header_to_json`, joined with ``tasks`` and already-loaded ``instances``.

    Without ``tasks`` the document must carry them (a one-document session, or
    a version-1 header).
    """
    if not isinstance(doc, Mapping):
        raise SerializationError(f"{what}: expected an object, got {type(doc).__name__}")
    version = _check_schema(doc, what)
    table = _tasks_from_json(doc, what) if tasks is None else TaskTable.of(tasks)
    latest = _latest_kwargs(_expect(doc, "latestKwargs", dict, what), what)
    counters = _counters(_expect(doc, "counters", dict, what), what)
    loaded = dict(instances or {})
    check_joined(table, counters, loaded.values(), what)
    if version == 1:  # derived: the caller loaded every unresolved instance with it
        unsettled = unsettled_of(table, loaded.values())
        settled = settled_of(table, loaded.values())
    else:
        unsettled = _name_sets(_expect(doc, "unsettled", dict, what), f"{what}.unsettled")
        settled = _name_sets(doc.get("settled", {}), f"{what}.settled")
    return SessionState(
        tasks=table,
        instances=loaded,
        latest_kwargs=latest,
        counters=counters,
        unsettled=unsettled,
        settled=settled,
    )


def _latest_kwargs(latest: dict[str, Any], what: str) -> dict[str, Any]:
    for trigger, value in latest.items():
        if not isinstance(value, dict):
            raise SerializationError(f"{what}.latestKwargs.{trigger}: expected an object")
    return latest


def _counters(counters: dict[str, Any], what: str) -> dict[str, int]:
    for task_name, count in counters.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise SerializationError(f"{what}.counters.{task_name}: expected a count")
    return counters


def _name_sets(raw: object, what: str) -> dict[str, frozenset[str]]:
    """Task -> a list of names, as frozensets; empty lists dropped."""
    if not isinstance(raw, dict):
        raise SerializationError(f"{what}: unexpected {type(raw).__name__}")
    found = {}
    for task_name, names in raw.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SerializationError(f"{what}.{task_name}: expected a list of names")
        if names:
            found[task_name] = frozenset(names)
    return found


def _name_sets_json(sets: Mapping[str, frozenset[str]]) -> dict[str, list[str]]:
    return {task: sorted(names) for task, names in sets.items()}


class HeaderCodec:
    """Header text <-> state, exactly as ``dumps(header_to_json(state))`` and
    ``header_from_json(loads(text), tasks=...)``, but reusing work between calls.

    ``counters`` and ``settled`` hold an entry per task, so encoding and decoding
    them costs in proportion to the configuration, while a fire that reaches
    thousands of tasks usually changes neither (a repeat fire changes only the
    latest kwargs). The codec remembers, per field, the JSON text and validated
    value it last wrote or read; a field equal to the remembered value is not
    encoded again, and a field whose text starts where the remembered text
    does is not decoded again (a JSON object ends where its text says, so the
    same text is the same value). Anything unexpected (another layout, a
    malformed field) goes through :func:`header_from_json`, which raises the
    usual errors. Thread-safe: each remembered field is replaced as a whole.
    """

    def __init__(self) -> None:
        #: field -> (its JSON text, its validated value: a private copy)
        self._known: dict[str, tuple[str, Any]] = {}

    def encode(self, state: SessionState, *, split: bool = False) -> str:
        """``dumps(header_to_json(state))``.

        ``split=True``: the latest kwargs are stored elsewhere; the header lists
        only their triggers (``latestTriggers``, sorted; no value is read) and
        says :data:`SPLIT_HEADER_VERSION`.
        """
        counters = self._text("counters", state.counters, dict)
        settled = self._text("settled", state.settled, _name_sets_json)
        unsettled = self._text("unsettled", state.unsettled, _name_sets_json)
        if split:
            triggers = json.dumps(sorted(state.latest_kwargs), separators=(",", ":"))
            return (
                f'{{"counters":{counters},"latestTriggers":{triggers},'
                f'"schemaVersion":{SPLIT_HEADER_VERSION},"settled":{settled},'
                f'"unsettled":{unsettled}}}'
            )
        latest = dumps({k: dict(v) for k, v in state.latest_kwargs.items()})
        return (
            f'{{"counters":{counters},"latestKwargs":{latest},'
            f'"schemaVersion":{SCHEMA_VERSION},"settled":{settled},"unsettled":{unsettled}}}'
        )

    def _text(self, field: str, value: Mapping[str, Any], to_json: Any) -> str:
        known = self._known.get(field)
        if known is not None and known[1] == value:
            text: str = known[0]
            return text
        doc = to_json(value)
        text = dumps(doc)
        try:  # remember only what a load would accept, so that a load may reuse it
            private = _counters(doc, field) if field == "counters" else _name_sets(doc, field)
        except SerializationError:
            self._known.pop(field, None)
        else:
            self._known[field] = (text, private)
        return text

    def decode(
        self, text: str, tasks: Mapping[str, TaskConfig], what: str = "session"
    ) -> SessionState:
        """``header_from_json(loads(text, f"{what} header"), what=what, tasks=tasks)``.

        A split header (:data:`SPLIT_HEADER_VERSION`) is refused here: read it
        with :meth:`decode_split`.
        """
        state, triggers = self.decode_split(text, tasks, what)
        if triggers is not None:
            raise SerializationError(
                f"{what} header: its latest kwargs are stored apart (schemaVersion "
                f"{SPLIT_HEADER_VERSION}); this reader cannot fetch them"
            )
        return state

    def decode_split(
        self, text: str, tasks: Mapping[str, TaskConfig], what: str = "session"
    ) -> tuple[SessionState, tuple[str, ...] | None]:
        """Either layout: ``(state, None)`` for a header holding its latest kwargs, or
        ``(state without latest kwargs, the triggers that have them)`` for a split one."""
        try:
            fields = self._fields(text, what)
        except (SerializationError, ValueError, RecursionError):
            fields = None
        if fields is None:  # not the layout we write: the general path, and its errors
            return _general_header(loads(text, f"{what} header"), tasks, what)
        counters, latest, settled, unsettled = fields
        state = SessionState(
            tasks=TaskTable.of(tasks),
            latest_kwargs={} if isinstance(latest, tuple) else latest,
            counters=dict(counters),
            unsettled=dict(unsettled),
            settled=dict(settled),
        )
        return state, latest if isinstance(latest, tuple) else None

    def _fields(self, text: str, what: str) -> tuple[Any, Any, Any, Any] | None:
        at = _literal(text, 0, '{"counters":')
        counters, at = self._field(text, at, "counters", lambda v: _counters(v, what))
        latest: Any
        if text.startswith(',"latestTriggers":', at):
            at = _literal(text, at, ',"latestTriggers":')
            triggers, at = _DECODER.raw_decode(text, at)
            latest = _trigger_list(triggers, what)
            version = SPLIT_HEADER_VERSION
        else:
            at = _literal(text, at, ',"latestKwargs":')
            latest, at = _DECODER.raw_decode(text, at)
            if not isinstance(latest, dict):
                return None
            _latest_kwargs(latest, what)
            version = SCHEMA_VERSION
        at = _literal(text, at, f',"schemaVersion":{version},"settled":')
        settled, at = self._field(text, at, "settled", lambda v: _name_sets(v, what))
        at = _literal(text, at, ',"unsettled":')
        unsettled, at = self._field(text, at, "unsettled", lambda v: _name_sets(v, what))
        if at != len(text) - 1 or text[at] != "}":
            return None
        return counters, latest, settled, unsettled

    def _field(self, text: str, at: int, field: str, check: Any) -> tuple[Any, int]:
        known = self._known.get(field)
        if known is not None and text.startswith(known[0], at):
            return known[1], at + len(known[0])
        value, end = _DECODER.raw_decode(text, at)
        if not isinstance(value, dict):
            raise ValueError(field)
        checked = check(value)
        self._known[field] = (text[at:end], checked)
        return checked, end


_DECODER = json.JSONDecoder()


def _trigger_list(raw: object, what: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        raise SerializationError(f"{what}.latestTriggers: expected a list of trigger names")
    return tuple(raw)


def _general_header(
    doc: Any, tasks: Mapping[str, TaskConfig], what: str
) -> tuple[SessionState, tuple[str, ...] | None]:
    """A header in any accepted form (the codec's slow path), and its split triggers."""
    if (
        isinstance(doc, Mapping)
        and doc.get("schemaVersion") == SPLIT_HEADER_VERSION
        and type(doc.get("schemaVersion")) is int
    ):
        triggers = _trigger_list(doc.get("latestTriggers"), what)
        if "latestKwargs" in doc:
            raise SerializationError(f"{what}: a split header cannot hold latestKwargs")
        rest = {k: v for k, v in doc.items() if k != "latestTriggers"}
        rest.update(schemaVersion=SCHEMA_VERSION, latestKwargs={})
        return header_from_json(rest, what=what, tasks=tasks), triggers
    return header_from_json(doc, what=what, tasks=tasks), None


def _literal(text: str, at: int, expected: str) -> int:
    """The position after ``expected`` if ``text`` has it at ``at``; else ValueError."""
    if not text.startswith(expected, at):
        raise ValueError(expected)
    return at + len(expected)


def check_joined(
    tasks: Mapping[str, TaskConfig],
    counters: Mapping[str, int],
    instances: Iterable[TaskInstance],
    what: str,
) -> None:
    """Refuse a header and instances that contradict each other (a hand edit, a bad restore).

    Every storage joins the two through :func:`header_from_json` or calls this
    itself (the memory storage keeps objects). Only what the loaded instances show is
    checked, so the cost follows the working set: an instance numbered at or
    beyond its task's counter would have its number handed out again (and a
    finished instance overwritten, its task run twice); an instance of a task
    the header does not configure cannot have been created by the engine.
    """
    for instance in instances:
        task, number = instance.task_name, instance.number
        counter = counters.get(task, 0)
        if number >= counter:
            raise SerializationError(
                f"{what}: instance {instance.name!r} exists but the counter of task {task!r} "
                f"is {counter}, so its number would be handed out again: the stored session "
                "is inconsistent (was the counter lowered by hand?); nothing was written"
            )
        if task not in tasks:
            raise SerializationError(
                f"{what}: instance {instance.name!r} belongs to task {task!r}, which the "
                "stored configuration does not have: the stored session is inconsistent; "
                "nothing was written"
            )


def state_to_json(state: SessionState) -> dict[str, Any]:
    """The whole state as one JSON-compatible document."""
    doc = header_to_json(state)
    doc.update(tasks_to_json(state.tasks))
    doc["instances"] = {
        name: instance_to_json(inst) for name, inst in sorted(state.instances.items())
    }
    return doc


def state_from_json(doc: Mapping[str, Any], what: str = "session") -> SessionState:
    """Inverse of :func:`state_to_json`; raises :class:`SerializationError`."""
    if not isinstance(doc, Mapping):
        raise SerializationError(f"{what}: expected an object, got {type(doc).__name__}")
    raw_instances = _expect(doc, "instances", dict, what)
    instances: dict[str, TaskInstance] = {}
    for name, raw in raw_instances.items():
        instance = instance_from_json(raw, f"{what}.instances.{name}")
        if instance.name != name:
            raise SerializationError(f"{what}.instances.{name}: name field is {instance.name!r}")
        instances[name] = instance
    return header_from_json(doc, instances, what)
