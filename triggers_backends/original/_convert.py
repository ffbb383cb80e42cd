"""The original framework's session content -> our :class:`SessionState` (pure).

What the original stored, per session (its ``debug_repr()`` returns the same three
parts, so an export of it is the input here):

* ``tasks``: task name -> the task's directives as it serialized them: ``after``
  (a list; it had added the ``andEvery`` trigger to it), ``unless`` (a list,
  possibly empty), ``andEvery``, ``using`` (None when unset), ``run``,
  ``withParams``, plus any other keys (kept as extras).
* ``instances``: instance name (``{task}#{n}``) -> ``task`` (the task name),
  ``status`` (the eight statuses we also use), ``kwargs`` (trigger -> the kwargs
  it fired with), ``abandonState`` (the ``unless`` triggers recorded) and
  ``metadata``. Metadata keys it gave a meaning: ``timestamps`` (``created``,
  ``lastModified`` and one per status reached; naive UTC datetimes),
  ``actualKwargs``, ``result``, ``exceptionType``, ``exceptionInfo``,
  ``exceptionContext``, ``logLevel``, ``logsResolved``, ``parent``, ``depth``,
  ``cooldown``.
* ``metas``: ``latest_kwargs`` (trigger -> the kwargs it last fired with).

How it maps: directives are normalised (``andEvery`` taken out of ``after``,
empty/None directives dropped, trigger lists sorted: the original kept them in
sets) and validated like any configuration; ``abandonState`` becomes
``unless_fired``; ``timestamps.created`` / ``timestamps.lastModified`` become the
``created`` / ``lastModified`` metadata and the per-status times stay in
``timestamps``, all as ISO 8601 UTC text; ``logLevel`` and ``logsResolved`` also
fill the instance's log fields; the counters are one past the highest instance
number of each task. Anything else is kept verbatim (it must be JSON-compatible).
Every problem found is reported at once, with its path, in one
:class:`OriginalSessionError`; nothing is half-converted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from triggers_core.engine.config import TaskConfig, parse_configuration
from triggers_core.engine.scopes import settled_of, unsettled_of
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.engine.values import to_json_value
from triggers_core.errors import ConfigurationError, InvalidKwargsError, TriggersError

__all__ = ["OriginalSessionError", "convert_session"]

_TOP_LEVEL = ("tasks", "instances", "metas")
_INSTANCE_FIELDS = frozenset({"task", "status", "kwargs", "metadata", "abandonState"})
_DIRECTIVES_DROPPED_WHEN_EMPTY = ("unless", "andEvery", "using", "withParams")
#: The original framework's statuses: ours but ``expired`` (it had no time conditions).
_STATUSES = {status.value: status for status in Status if status is not Status.EXPIRED}
#: The longest instance number an import accepts (it must fit a 64-bit integer).
MAX_NUMBER_DIGITS = 18


class OriginalSessionError(TriggersError, ValueError):
    """The original framework's session content cannot be converted; ``problems``
    lists every problem with its path."""

    def __init__(self, problems: list[str] | tuple[str, ...]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"cannot import the original session ({count} problem"
            f"{'s' if count != 1 else ''}):\n{lines}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems,))


def convert_session(content: object) -> SessionState:
    """Convert the original's ``{'tasks', 'instances', 'metas'}`` content.

    Raises :class:`OriginalSessionError` listing every problem.
    """
    problems: list[str] = []
    if not isinstance(content, Mapping):
        raise OriginalSessionError(
            [
                f"<session>: expected a mapping with {', '.join(_TOP_LEVEL)}, "
                f"got {type(content).__name__}"
            ]
        )
    for key in content:
        if key not in _TOP_LEVEL:
            problems.append(
                f"{key}: unknown part (the original stored {', '.join(_TOP_LEVEL)}; "
                "is this an export of the original framework's debug_repr()?)"
            )
    for key in ("tasks", "instances"):
        if key not in content:
            problems.append(f"{key}: missing")
    raw_tasks = content.get("tasks")
    tasks = _tasks(raw_tasks, problems)
    names = set(raw_tasks) if isinstance(raw_tasks, Mapping) else None
    instances = _instances(content.get("instances"), names, problems)
    latest = _latest_kwargs(content.get("metas"), problems)
    if problems:
        raise OriginalSessionError(problems)
    counters: dict[str, int] = {}
    for instance in instances.values():
        counters[instance.task_name] = max(counters.get(instance.task_name, 0), instance.number + 1)
    return SessionState(
        tasks=tasks or {},
        instances=instances,
        latest_kwargs=latest,
        counters=dict(sorted(counters.items())),
        # The waiting instances a fire of an andEvery trigger may still change.
        unsettled=unsettled_of(tasks or {}, instances.values()),
        # Per task, the triggers every waiting instance has recorded already.
        settled=settled_of(tasks or {}, instances.values()),
    )


# -- tasks ----------------------------------------------------------------------------


def _tasks(raw: object, problems: list[str]) -> dict[str, TaskConfig] | None:
    """The parsed configuration; None if it has problems."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(f"tasks: expected a mapping of task names, got {type(raw).__name__}")
        return None
    normalised: dict[Any, Any] = {}
    for name, directives in raw.items():
        if not isinstance(directives, Mapping):
            normalised[name] = directives  # parse_configuration names the problem
            continue
        normalised[name] = _directives(directives)
    try:
        # Its configurations know no time conditions: within/onMiss/delay stay extras.
        return parse_configuration(normalised, legacy=True)
    except ConfigurationError as exc:
        problems.extend(f"tasks.{problem}" for problem in exc.problems)
        return None


def _directives(raw: Mapping[Any, Any]) -> dict[Any, Any]:
    out = dict(raw)
    for key in _DIRECTIVES_DROPPED_WHEN_EMPTY:
        if key in out and (out[key] is None or out[key] == [] or out[key] == {}):
            del out[key]
    and_every = out.get("andEvery")
    after = out.get("after")
    if isinstance(after, list | tuple | set | frozenset):
        names = [t for t in after if t != and_every] if isinstance(and_every, str) else list(after)
        out["after"] = _sorted_if_names(names)
    unless = out.get("unless")
    if isinstance(unless, list | tuple | set | frozenset):
        out["unless"] = _sorted_if_names(list(unless))
    return out


def _sorted_if_names(items: list[Any]) -> list[Any]:
    # The original kept these in sets: their stored order means nothing.
    return sorted(items) if all(isinstance(i, str) for i in items) else items


# -- instances ------------------------------------------------------------------------


def _instances(raw: object, tasks: set[Any] | None, problems: list[str]) -> dict[str, TaskInstance]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(
            f"instances: expected a mapping of instance names, got {type(raw).__name__}"
        )
        return {}
    found: dict[str, TaskInstance] = {}
    for name, doc in raw.items():
        instance = _instance(name, doc, tasks, problems)
        if instance is not None:
            found[instance.name] = instance
    return dict(sorted(found.items(), key=lambda kv: (kv[1].task_name, kv[1].number)))


def _shown(name: object) -> object:
    """A name for a path: cut to 80 characters (a hostile export may hold huge ones)."""
    if isinstance(name, str) and len(name) > 80:
        return f"{name[:60]}...({len(name)} characters)"
    return name


def _instance(
    name: object, doc: object, tasks: set[Any] | None, problems: list[str]
) -> TaskInstance | None:
    path = f"instances.{_shown(name)}"
    before = len(problems)
    if not isinstance(name, str):
        problems.append(f"instances[{name!r}]: instance names are strings")
        return None
    if not isinstance(doc, Mapping):
        problems.append(f"{path}: expected a mapping, got {type(doc).__name__}")
        return None
    for key in doc:
        if key not in _INSTANCE_FIELDS:
            problems.append(f"{path}.{key}: unknown field")
    task = doc.get("task")
    task_name, sep, number = name.rpartition("#")
    canonical = (
        number.isascii() and number.isdigit() and (number == "0" or not number.startswith("0"))
    )
    if not sep or not task_name or not canonical:
        problems.append(f"{path}: instance names are '<task>#<number>'")
    elif len(number) > MAX_NUMBER_DIGITS:
        problems.append(
            f"{path}: an instance number of {len(number)} digits (at most {MAX_NUMBER_DIGITS})"
        )
    elif task != task_name:
        problems.append(f"{path}.task: {task!r} does not match the instance name")
    elif tasks is not None and task_name not in tasks:
        problems.append(f"{path}.task: no task {task_name!r} in the configuration")
    status_text = doc.get("status")
    status = _STATUSES.get(status_text) if isinstance(status_text, str) else None
    if status is None:
        problems.append(
            f"{path}.status: unknown status {status_text!r} "
            f"(expected one of {', '.join(sorted(_STATUSES))})"
        )
    kwargs = _kwargs(doc.get("kwargs"), f"{path}.kwargs", problems)
    unless = _names(doc.get("abandonState"), f"{path}.abandonState", problems)
    metadata, log_level, logs_resolved = _metadata(
        doc.get("metadata"), f"{path}.metadata", problems
    )
    if len(problems) > before or status is None:
        return None
    return TaskInstance(
        name=name,
        task_name=task_name,
        status=status,
        kwargs=kwargs,
        unless_fired=unless,
        metadata=metadata,
        log_level=log_level,
        logs_marked_resolved=logs_resolved,
    )


def _json(value: object, path: str, problems: list[str]) -> Any:
    try:
        return to_json_value(value, path)
    except InvalidKwargsError as exc:
        problems.append(str(exc))
        return None


def _mapping_of_mappings(raw: object, path: str, problems: list[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(f"{path}: expected a mapping, got {type(raw).__name__}")
        return {}
    out: dict[str, Any] = {}
    for trigger, given in raw.items():
        if not isinstance(trigger, str) or not trigger:
            problems.append(f"{path}[{trigger!r}]: expected a trigger name")
            continue
        value = {} if given is None else given  # the original fired None as {}
        if not isinstance(value, Mapping):
            problems.append(f"{path}.{trigger}: expected a mapping, got {type(value).__name__}")
            continue
        out[trigger] = _json(value, f"{path}.{trigger}", problems)
    return out


def _kwargs(raw: object, path: str, problems: list[str]) -> dict[str, Any]:
    return _mapping_of_mappings(raw, path, problems)


def _names(raw: object, path: str, problems: list[str]) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list | tuple | set | frozenset) or not all(
        isinstance(n, str) and n for n in raw
    ):
        problems.append(f"{path}: expected a list of trigger names")
        return frozenset()
    return frozenset(raw)


def _metadata(raw: object, path: str, problems: list[str]) -> tuple[dict[str, Any], int, bool]:
    if raw is None:
        return {}, logging.NOTSET, False
    if not isinstance(raw, Mapping):
        problems.append(f"{path}: expected a mapping, got {type(raw).__name__}")
        return {}, logging.NOTSET, False
    metadata = dict(raw)
    stamps = metadata.pop("timestamps", None)
    if stamps is not None:
        if not isinstance(stamps, Mapping):
            problems.append(f"{path}.timestamps: expected a mapping, got {type(stamps).__name__}")
        else:
            converted = {}
            for key, stamp in stamps.items():
                iso = _timestamp(stamp, f"{path}.timestamps.{key}", problems)
                if key in ("created", "lastModified"):
                    metadata[key] = iso
                else:
                    converted[key] = iso
            metadata["timestamps"] = converted
    log_level = metadata.get("logLevel", logging.NOTSET)
    if isinstance(log_level, bool) or not isinstance(log_level, int):
        problems.append(f"{path}.logLevel: expected a logging level number, got {log_level!r}")
        log_level = logging.NOTSET
    resolved = metadata.get("logsResolved", False)
    if not isinstance(resolved, bool):
        problems.append(f"{path}.logsResolved: expected true or false, got {resolved!r}")
        resolved = False
    depth = metadata.get("depth", 0)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        problems.append(f"{path}.depth: expected a count, got {depth!r}")
    checked = _json(metadata, path, problems)
    return (checked if isinstance(checked, dict) else {}), log_level, resolved


def _timestamp(value: object, path: str, problems: list[str]) -> str | None:
    """ISO 8601 UTC text; the original wrote naive UTC datetimes."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            problems.append(f"{path}: not an ISO 8601 date and time: {value!r}")
            return None
    if not isinstance(value, datetime):
        problems.append(f"{path}: expected a date and time, got {type(value).__name__}")
        return None
    try:
        if value.tzinfo is None or value.utcoffset() is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    except (OverflowError, ValueError) as exc:
        problems.append(f"{path}: {value!r} cannot be shown in UTC ({exc})")
        return None


# -- session metadata -----------------------------------------------------------------


def _latest_kwargs(raw: object, problems: list[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(f"metas: expected a mapping, got {type(raw).__name__}")
        return {}
    for key in raw:
        if key != "latest_kwargs":
            problems.append(
                f"metas.{key}: unknown session metadata (the original only kept latest_kwargs)"
            )
    return _mapping_of_mappings(raw.get("latest_kwargs"), "metas.latest_kwargs", problems)
