"""Task configuration: the JSON-compatible mapping that says which task runs when.

``parse_configuration`` validates a whole configuration and either returns every
task or raises one :class:`ConfigurationError` listing *every* problem with its
path; nothing partial is ever returned.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import attrs

from triggers_core.engine.conditions import (
    Entry,
    all_satisfied,
    entry_to_json,
    names_of,
    parse_entries,
)
from triggers_core.engine.durations import Duration, parse_duration
from triggers_core.engine.graph import and_every_cycles
from triggers_core.engine.names import name_problem, named_problem, text_problem
from triggers_core.engine.values import to_json_value
from triggers_core.errors import ConfigurationError, InvalidKwargsError, did_you_mean

__all__ = [
    "KNOWN_DIRECTIVES",
    "LEGACY_DIRECTIVES",
    "TaskConfig",
    "cycle_problems",
    "directive_typo",
    "parse_configuration",
    "parse_task_config",
]

#: The directives with a meaning; any other key is kept verbatim as ``extras``
#: (unless it is a typo of one of these: see :func:`directive_typo`).
KNOWN_DIRECTIVES = frozenset(
    {"after", "run", "andEvery", "unless", "withParams", "using", "within", "onMiss", "delay"}
)
#: The directives of configurations stored before time conditions (schema version 2 and
#: earlier): there ``within``, ``onMiss`` and ``delay`` are extras like any other key.
LEGACY_DIRECTIVES = frozenset({"after", "run", "andEvery", "unless", "withParams", "using"})


@attrs.frozen
class TaskConfig:
    """One trigger task's directives, validated.

    ``after`` and ``unless`` keep their entries in the order given (repeated
    entries removed); an entry is a trigger name or a
    :class:`~triggers_core.engine.conditions.Group`. ``and_every`` is implicitly
    required too (see :meth:`is_ready`).
    """

    name: str
    run: str
    after: tuple[Entry, ...]
    and_every: str | None = None
    unless: tuple[Entry, ...] = ()
    with_params: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    using: str | None = None
    extras: Mapping[str, Any] = attrs.field(factory=dict)
    #: ``within``: the after condition must be met this long after its first requirement.
    within: Duration | None = None
    #: ``onMiss``: the trigger fired when a ``within`` window runs out.
    on_miss: str | None = None
    #: ``delay``: a ready instance waits this long (unstarted) before it is scheduled.
    delay: Duration | None = None
    # Derived once (a fire asks for them for every task it reaches).
    _after_names: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)
    _unless_names: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)
    _required: frozenset[str] = attrs.field(init=False, eq=False, repr=False)
    _unless_set: frozenset[str] = attrs.field(init=False, eq=False, repr=False)
    _grouped_after: bool = attrs.field(init=False, eq=False, repr=False)
    _grouped_unless: bool = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        after_names, unless_names = names_of(self.after), names_of(self.unless)
        required = frozenset(after_names)
        if self.and_every is not None:
            required |= {self.and_every}
        derived = {
            "_after_names": after_names,
            "_unless_names": unless_names,
            "_required": required,
            "_unless_set": frozenset(unless_names),
            "_grouped_after": len(after_names) != len(self.after)
            or any(not isinstance(e, str) for e in self.after),
            "_grouped_unless": len(unless_names) != len(self.unless)
            or any(not isinstance(e, str) for e in self.unless),
        }
        for key, value in derived.items():
            object.__setattr__(self, key, value)

    @property
    def after_names(self) -> tuple[str, ...]:
        """Every trigger name in ``after`` (groups flattened), each once, in written order."""
        return self._after_names

    @property
    def unless_names(self) -> tuple[str, ...]:
        """Every trigger name in ``unless`` (groups flattened), each once, in written order."""
        return self._unless_names

    @property
    def has_groups(self) -> bool:
        """True if ``after`` or ``unless`` holds a group (not just names)."""
        return self._grouped_after or self._grouped_unless

    @property
    def required_triggers(self) -> frozenset[str]:
        """Every trigger an unstarted instance records kwargs for: ``after``'s names and
        ``andEvery``. Without groups, all of them must be recorded before it is ready."""
        return self._required

    @property
    def unless_triggers(self) -> frozenset[str]:
        """Every trigger name in ``unless``: an unstarted instance records each that fires."""
        return self._unless_set

    def is_ready(self, recorded: Collection[str]) -> bool:
        """True if an instance that recorded these triggers (``kwargs`` keys) may run.

        Every ``after`` entry is satisfied and ``andEvery`` is recorded.
        """
        if not self._grouped_after:  # a loop: no generator on the fire path
            for trigger in self._required:  # noqa: SIM110
                if trigger not in recorded:
                    return False
            return True
        if self.and_every is not None and self.and_every not in recorded:
            return False
        return all_satisfied(self.after, recorded)

    def is_abandoned_by(self, recorded: Collection[str]) -> bool:
        """True if an unstarted instance that recorded these ``unless`` triggers is abandoned.

        Every ``unless`` entry is satisfied (and there is at least one).
        """
        if not self.unless:
            return False
        if not self._grouped_unless:
            for trigger in self._unless_set:  # noqa: SIM110
                if trigger not in recorded:
                    return False
            return True
        return all_satisfied(self.unless, recorded)

    def uses(self, trigger_name: str) -> bool:
        """True if ``trigger_name`` is one of this task's after/andEvery/unless triggers."""
        return trigger_name in self._required or trigger_name in self._unless_set

    def to_json(self) -> dict[str, Any]:
        """The configuration mapping in its canonical JSON form (parses back equal)."""
        out: dict[str, Any] = dict(self.extras)
        out["after"] = [entry_to_json(e) for e in self.after]
        out["run"] = self.run
        if self.and_every is not None:
            out["andEvery"] = self.and_every
        if self.unless:
            out["unless"] = [entry_to_json(e) for e in self.unless]
        if self.with_params:
            out["withParams"] = {k: dict(v) for k, v in self.with_params.items()}
        if self.using is not None:
            out["using"] = self.using
        if self.within is not None:
            out["within"] = self.within.text
        if self.on_miss is not None:
            out["onMiss"] = self.on_miss
        if self.delay is not None:
            out["delay"] = self.delay.text
        return out


def _single_name(value: object, path: str, what: str, problems: list[str]) -> str | None:
    if not isinstance(value, str):
        problems.append(f"{path}: expected a single {what} (a string), got {type(value).__name__}")
        return None
    problem = named_problem(value, what)
    if problem is not None:
        problems.append(f"{path}: {problem}")
        return None
    return value


def _one_edit_apart(a: str, b: str) -> bool:
    """True if one insertion, deletion, substitution or adjacent swap turns ``a`` into ``b``."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        return len(diff) == 1 or (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def directive_typo(key: str, known: frozenset[str] = KNOWN_DIRECTIVES) -> str | None:
    """The directive that ``key`` is a typo of, or None.

    A typo is a different spelling of a directive's letters (case, ``_``, ``-``:
    ``withparams``, ``and_every``) or one edit away from one (``unles``,
    ``afer``, ``usign``). Such a key would otherwise be kept silently as an extra.
    """
    if key in known:
        return None
    folded = key.replace("_", "").replace("-", "").lower()
    for directive in sorted(known):
        target = directive.lower()
        if folded == target or _one_edit_apart(folded, target):
            return directive
    return None


def parse_task_config(
    name: object,
    directives: object,
    problems: list[str],
    *,
    runners: Collection[str] | None = None,
    legacy: bool = False,
) -> TaskConfig | None:
    """Validate one task; append problems (with paths) and return None if any.

    With ``runners`` (the runner names that exist), ``using`` must name one of them.
    With ``legacy`` (a configuration stored at schema version 2 or earlier),
    ``within``, ``onMiss`` and ``delay`` are kept as extras and only the
    directives of that time are checked for typos, so a stored session never
    starts acting differently, nor fails to load, after an upgrade.
    """
    known = LEGACY_DIRECTIVES if legacy else KNOWN_DIRECTIVES
    before = len(problems)
    problem = name_problem(name) if isinstance(name, str) and name else None
    # A name that is not a usable string is shown as its repr (it may not even print).
    label = name if isinstance(name, str) and name and problem is None else repr(name)
    if not isinstance(name, str):
        problems.append(f"{label}: task name must be a string, got {type(name).__name__}")
    elif not name:
        problems.append("'': task name must not be empty")
    elif problem is not None:
        problems.append(f"{label}: task name {problem}")
    elif "#" in name:
        problems.append(f"{name}: task name must not contain '#' (it separates instance numbers)")
    if not isinstance(directives, Mapping):
        problems.append(
            f"{label}: expected a mapping of directives, got {type(directives).__name__}"
        )
        return None
    for key in directives:
        if not isinstance(key, str):
            problems.append(f"{label}[{key!r}]: directive names must be strings")

    after: tuple[Entry, ...] | None = ()
    if "after" not in directives:
        problems.append(f"{label}.after: required (the triggers that must fire)")
    else:
        after = parse_entries(directives["after"], f"{label}.after", problems)

    run: str | None = None
    if "run" not in directives:
        problems.append(f"{label}.run: required (the name of the trigger task to execute)")
    else:
        run = _single_name(directives["run"], f"{label}.run", "task name", problems)

    and_every: str | None = None
    if directives.get("andEvery") is not None:
        and_every = _single_name(
            directives["andEvery"], f"{label}.andEvery", "trigger name", problems
        )

    if after == () and and_every is None and "after" in directives:
        problems.append(f"{label}.after: must name at least one trigger (or give andEvery)")

    unless: tuple[Entry, ...] | None = ()
    if directives.get("unless") is not None:
        unless = parse_entries(directives["unless"], f"{label}.unless", problems)

    with_params: dict[str, dict[str, Any]] = {}
    raw_params = directives.get("withParams")
    if raw_params is not None:
        if not isinstance(raw_params, Mapping):
            problems.append(
                f"{label}.withParams: expected a mapping of trigger names to mappings, "
                f"got {type(raw_params).__name__}"
            )
        else:
            for trigger, params in raw_params.items():
                path = f"{label}.withParams.{trigger}"
                if not isinstance(trigger, str) or not trigger:
                    problems.append(f"{label}.withParams[{trigger!r}]: expected a trigger name")
                elif (problem := name_problem(trigger)) is not None:
                    problems.append(f"{label}.withParams[{trigger!r}]: trigger name {problem}")
                elif not isinstance(params, Mapping):
                    problems.append(f"{path}: expected a mapping, got {type(params).__name__}")
                else:
                    try:
                        with_params[trigger] = to_json_value(params, path)
                    except InvalidKwargsError as exc:
                        problems.append(str(exc))

    using: str | None = None
    if directives.get("using") is not None:
        using = _single_name(directives["using"], f"{label}.using", "runner name", problems)
        if using is not None and runners is not None and using not in runners:
            problems.append(
                f"{label}.using: no task runner named {using!r}{did_you_mean(using, runners)}"
            )
            using = None

    within = delay = None
    on_miss: str | None = None
    if not legacy:
        within, on_miss, delay = _time_directives(label, directives, after, and_every, problems)

    extras: dict[str, Any] = {}
    for key, value in directives.items():
        if isinstance(key, str) and key not in known:
            if (problem := text_problem(key)) is not None:
                problems.append(f"{label}[{key!r}]: directive name {problem}")
                continue
            typo_of = directive_typo(key, known)
            if typo_of is not None:
                problems.append(
                    f"{label}.{key}: unknown directive {key!r}; did you mean {typo_of!r}? "
                    "(rename the key if it is meant as an extra)"
                )
                continue
            try:
                extras[key] = to_json_value(value, f"{label}.{key}")
            except InvalidKwargsError as exc:
                problems.append(str(exc))

    if len(problems) > before:
        return None
    assert isinstance(name, str)
    assert run is not None
    assert after is not None
    assert unless is not None
    return TaskConfig(
        name=name,
        run=run,
        after=after,
        and_every=and_every,
        unless=unless,
        with_params=with_params,
        using=using,
        extras=extras,
        within=within,
        on_miss=on_miss,
        delay=delay,
    )


def _time_directives(
    label: str,
    directives: Mapping[Any, Any],
    after: tuple[Entry, ...] | None,
    and_every: str | None,
    problems: list[str],
) -> tuple[Duration | None, str | None, Duration | None]:
    """``within``, ``onMiss`` and ``delay``, validated (see SPEC section 10)."""
    durations: dict[str, Duration | None] = {"within": None, "delay": None}
    for key in durations:
        if directives.get(key) is not None:
            try:
                durations[key] = parse_duration(directives[key])
            except ValueError as exc:
                problems.append(f"{label}.{key}: {exc}")
    on_miss: str | None = None
    if directives.get("onMiss") is not None:
        on_miss = _single_name(directives["onMiss"], f"{label}.onMiss", "trigger name", problems)
        if "within" not in directives or directives["within"] is None:
            problems.append(
                f"{label}.onMiss: needs within (onMiss fires when a within window runs out)"
            )
        own = set(names_of(after or ())) | ({and_every} if and_every else set())
        if on_miss is not None and on_miss in own:
            problems.append(
                f"{label}.onMiss: {on_miss!r} is one of this task's own after triggers; "
                "firing it when the window runs out would open a new window, without end"
            )
    return durations["within"], on_miss, durations["delay"]


def parse_configuration(
    raw: object, *, runners: Collection[str] | None = None, legacy: bool = False
) -> dict[str, TaskConfig]:
    """Validate ``{task_name: directives, ...}``; all or nothing.

    Raises :class:`ConfigurationError` listing every problem, each prefixed by
    its path (``t_score.withParams.model: expected a mapping``). With
    ``runners`` (the runner names that exist; the manager passes the runner
    registry's names and its own runners), ``using`` must name one of them.
    ``legacy``: the rules before time conditions (see :func:`parse_task_config`).
    """
    if not isinstance(raw, Mapping):
        raise ConfigurationError(
            [
                f"<configuration>: expected a mapping of task names to directives, "
                f"got {type(raw).__name__}"
            ]
        )
    problems: list[str] = []
    tasks: dict[str, TaskConfig] = {}
    for name, directives in raw.items():
        task = parse_task_config(name, directives, problems, runners=runners, legacy=legacy)
        if task is not None:
            tasks[task.name] = task
    problems.extend(cycle_problems(tasks))
    if problems:
        raise ConfigurationError(problems)
    return tasks


def cycle_problems(tasks: Mapping[str, TaskConfig]) -> list[str]:
    """A problem per ``andEvery`` cycle: tasks whose completions create each other without end.

    A finished instance of ``t_a`` fires ``t_a``; a task whose ``andEvery`` is
    ``t_a`` then gets a new instance. When such links lead back to where they
    started (``t_a -> t_b -> t_a``, or ``andEvery`` naming its own task), one
    trigger would run the tasks again and again, with no external trigger.
    """
    problems = []
    for cycle in and_every_cycles(tasks):
        head, links = cycle[0], " -> ".join(cycle)
        if len(cycle) == 2:
            why = f"names its own task, so each finished {head} would create the next, without end"
        else:
            why = (
                "each finished instance creates a new instance of the next task through "
                "its andEvery, so the tasks would run without end"
            )
        problems.append(f"{head}.andEvery: cycle {links}: {why}; break the cycle")
    return problems
