"""Lint: what a valid configuration probably got wrong, as findings with paths and rule ids.

:func:`~triggers_core.config.parse_configuration` refuses what cannot work
(:class:`~triggers_core.errors.ConfigurationError`); :func:`lint` looks at a
configuration that parses and reports what is legal but almost certainly a
mistake: tasks that can never run, conditions that can never complete, names
that look like typos. Each :class:`Finding` is a value (rule id, path,
message, severity), so tools and tests share them::

    for finding in lint(config, task_registry=registered_tasks()):
        print(finding)  # t_score.after[0]: 't_computScore' is not a task ... [unknown-task]

The rules (:data:`RULES`):

``cascade-cycle``
    Tasks that wait for each other's cascades (``t_a`` after ``t_b``, ``t_b``
    after ``t_a``, or a task after itself): none of them can ever run.
``unknown-task``
    An ``after``/``andEvery`` name that is no task of the configuration but
    one edit (or only case) away from one: a typo, so the task never runs
    (short names like ``t_b`` and numbered ones like ``step2`` are left alone).
``unless-never-completes``
    An ``unless`` set that can never complete: a member is a task that can
    never run, a typo of a task name, or a task that only finishes after this
    task has started (only unstarted instances are abandoned).
``after-and-unless`` / ``and-every-in-unless``
    A trigger in both ``after`` and ``unless`` (or the ``andEvery`` trigger in
    ``unless``); when every ``unless`` trigger is also waited for, the task
    can never run (abandoning wins when both complete at once).
``unknown-run``
    ``run`` names no task of the given registry (only with ``task_registry``).
``similar-names``
    Two trigger names that differ only by case or by one character
    (``pageReceived``/``pageRecieved``); names are matched exactly.
``extra-like-directive``
    A key kept verbatim as an extra that looks like a directive
    (``afterAny``, ``unlessAll``, or a list of this configuration's trigger names).

Pure: reads :class:`~triggers_core.config.TaskConfig` values only through
:mod:`triggers_core.requirements`.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import attrs

from triggers_core._util import did_you_mean
from triggers_core.config import TaskConfig, parse_configuration
from triggers_core.graph import cascade_edges, find_cycles
from triggers_core.requirements import Reference, after_triggers, references

__all__ = ["RULES", "Finding", "Severity", "lint"]


class Severity(enum.Enum):
    """How sure a finding is to be a bug."""

    ERROR = "error"  #: a task can never run (or a condition can never complete)
    WARNING = "warning"  #: probably a mistake

    def __str__(self) -> str:
        return self.value


#: Rule id -> what it reports.
RULES: Mapping[str, str] = {
    "cascade-cycle": "tasks wait for each other's cascades, so none of them can ever run",
    "unknown-task": "an after/andEvery name is no task but looks like a typo of one",
    "unless-never-completes": "an unless set can never complete (in time to abandon anything)",
    "after-and-unless": "a trigger is in both after and unless of one task",
    "and-every-in-unless": "the andEvery trigger is also in unless",
    "unknown-run": "run names no task of the given task registry",
    "similar-names": "trigger names that differ only by case or one character",
    "extra-like-directive": "an extra (kept verbatim, never read) looks like a directive",
}


@attrs.frozen(order=True)
class Finding:
    """One lint finding: where (``path``), what (``message``), which rule, how sure."""

    path: str
    rule: str
    message: str
    severity: Severity = attrs.field(default=Severity.WARNING, order=False)

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.rule}]"

    def to_json(self) -> dict[str, str]:
        """The finding as a JSON-compatible mapping."""
        return {
            "rule": self.rule,
            "path": self.path,
            "message": self.message,
            "severity": self.severity.value,
        }


def lint(
    config: Mapping[str, Any],
    *,
    task_registry: Collection[str] | None = None,
) -> list[Finding]:
    """Every finding for ``config`` (raw directives or parsed ``TaskConfig`` values), sorted.

    Raw directives are parsed first: a configuration that does not parse
    raises :class:`~triggers_core.errors.ConfigurationError` (its problems
    come before any lint). With ``task_registry`` (the names of the trigger
    tasks that exist, e.g. ``registered_tasks()``), ``run`` is checked too.
    """
    if config and all(isinstance(v, TaskConfig) for v in config.values()):
        tasks: dict[str, TaskConfig] = dict(config)
    else:
        tasks = parse_configuration(config)
    findings: list[Finding] = []
    cycles = _cascade_cycles(tasks, findings)
    typos = _unknown_tasks(tasks, findings)
    _unless_never_completes(tasks, cycles, typos, findings)
    _after_and_unless(tasks, findings)
    if task_registry is not None:
        _unknown_runs(tasks, task_registry, findings)
    _similar_names(tasks, {ref.trigger for ref in typos}, findings)
    _extras_like_directives(tasks, findings)
    return sorted(set(findings))


# -- names ------------------------------------------------------------------------------


def _one_edit(a: str, b: str) -> bool:
    """One insertion, deletion, substitution or adjacent swap turns ``a`` into ``b``."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(diff) == 1:
            return True
        i = diff[0]
        return len(diff) == 2 and diff[1] == i + 1 and a[i] == b[i + 1] and a[i + 1] == b[i]
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def _confusable(a: str, b: str) -> bool:
    """Names a reader would take for one another: same letters but for case, or one edit.

    Numbered names (``page1``/``page2``) and very short ones (``t_a``/``t_b``)
    differ on purpose.
    """
    if a == b:
        return False
    if a.lower() == b.lower():
        return True
    if max(len(a), len(b)) < 5 or not _one_edit(a, b):
        return False
    if len(a) == len(b):
        diff = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
        if len(diff) == 1 and diff[0][0].isdigit() and diff[0][1].isdigit():
            return False
    return True


def _how(a: str, b: str) -> str:
    return "only by case" if a.lower() == b.lower() else "by one character"


# -- rules ------------------------------------------------------------------------------


def _reference(task: TaskConfig, trigger: str, directives: Iterable[str]) -> Reference:
    wanted = set(directives)
    return next(r for r in references(task) if r.trigger == trigger and r.directive in wanted)


def _cascade_cycles(tasks: Mapping[str, TaskConfig], findings: list[Finding]) -> set[str]:
    """``cascade-cycle``; returns every task in a cycle."""
    members: set[str] = set()
    for cycle in find_cycles(cascade_edges(tasks)):
        head = cycle[0]
        ref = _reference(tasks[head], cycle[-2], ("after", "andEvery"))
        if len(cycle) == 2:
            message = (
                f"{head} waits for its own cascade ({ref.directive} names {head}), which "
                "only fires once an instance of it finished: it can never run"
            )
        else:
            loop = " -> ".join(cycle)
            message = (
                f"tasks wait for each other's cascades ({loop}: each runs only after the "
                "one before it finished), so none of them can ever run"
            )
        findings.append(Finding(ref.path, "cascade-cycle", message, Severity.ERROR))
        members.update(cycle)
    return members


def _typo_of(name: str, tasks: Mapping[str, TaskConfig]) -> str | None:
    if name in tasks:
        return None
    close = sorted(t for t in tasks if _confusable(name, t))
    return close[0] if close else None


def _unknown_tasks(tasks: Mapping[str, TaskConfig], findings: list[Finding]) -> list[Reference]:
    """``unknown-task``; returns every reference (unless ones too) that is such a typo."""
    typos = []
    for name, task in tasks.items():
        for ref in references(task):
            meant = _typo_of(ref.trigger, tasks)
            if meant is None:
                continue
            typos.append(ref)
            if ref.directive == "unless":
                continue  # reported as unless-never-completes
            findings.append(
                Finding(
                    ref.path,
                    "unknown-task",
                    f"{ref.trigger!r} is no task of this configuration, so no cascade fires "
                    f"it and {name} can never run; did you mean the task {meant!r}?",
                    Severity.ERROR,
                )
            )
    return typos


def _never_run(
    tasks: Mapping[str, TaskConfig], cycles: set[str], typos: list[Reference]
) -> dict[str, str]:
    """Tasks that can never run -> why (a cycle, a typo, or such a task upstream)."""
    why: dict[str, str] = dict.fromkeys(cycles, "it is in a cascade cycle")
    for ref in typos:
        if ref.directive != "unless" and ref.task not in why:
            why[ref.task] = f"it waits for {ref.trigger!r}, which no task fires"
    edges = cascade_edges(tasks)
    pending = sorted(why)
    while pending:
        upstream = pending.pop()
        for downstream in sorted(edges.get(upstream, ())):
            if downstream not in why:
                why[downstream] = f"it waits for {upstream}, which can never run"
                pending.append(downstream)
    return why


def _downstream(tasks: Mapping[str, TaskConfig], start: str) -> set[str]:
    """Tasks that can only run after ``start`` finished (through cascades), ``start`` included."""
    edges = cascade_edges(tasks)
    seen = {start}
    pending = [start]
    while pending:
        for target in edges.get(pending.pop(), ()):
            if target not in seen:
                seen.add(target)
                pending.append(target)
    return seen


def _unless_never_completes(
    tasks: Mapping[str, TaskConfig],
    cycles: set[str],
    typos: list[Reference],
    findings: list[Finding],
) -> None:
    never = _never_run(tasks, cycles, typos)
    typo_paths = {ref.path for ref in typos}
    for name, task in tasks.items():
        later = _downstream(tasks, name) if task.and_every is None else set()
        for ref in references(task):
            if ref.directive != "unless":
                continue
            trigger = ref.trigger
            if ref.path in typo_paths:
                why = (
                    f"{trigger!r} is no task of this configuration, so no cascade fires it; "
                    f"did you mean the task {_typo_of(trigger, tasks)!r}?"
                )
            elif trigger in never:
                why = f"{trigger} can never run ({never[trigger]})"
            elif trigger in later:
                how = "is this task" if trigger == name else f"runs only after {name} finished"
                why = (
                    f"{trigger} {how}, and {name} has no andEvery: by the time {trigger} "
                    f"fires, {name}'s only instance has started, and only unstarted "
                    "instances are abandoned"
                )
            else:
                continue
            findings.append(
                Finding(
                    ref.path,
                    "unless-never-completes",
                    f"the unless set of {name} can never complete in time: {why}",
                    Severity.WARNING,
                )
            )


def _after_and_unless(tasks: Mapping[str, TaskConfig], findings: list[Finding]) -> None:
    for name, task in tasks.items():
        waited = set(after_triggers(task))
        never_runs = bool(task.unless) and set(task.unless) <= waited
        consequence = (
            f"every unless trigger of {name} is also one it waits for, so whenever it "
            "could run it is abandoned instead: it can never run"
            if never_runs
            else "when it fires it counts towards both"
        )
        for ref in references(task):
            if ref.directive != "unless" or ref.trigger not in waited:
                continue
            if ref.trigger == task.and_every:
                rule = "and-every-in-unless"
                what = f"{ref.trigger!r} is the andEvery trigger of {name} and in its unless"
            else:
                rule = "after-and-unless"
                what = f"{ref.trigger!r} is in both after and unless of {name}"
            severity = Severity.ERROR if never_runs else Severity.WARNING
            findings.append(Finding(ref.path, rule, f"{what}; {consequence}", severity))


def _unknown_runs(
    tasks: Mapping[str, TaskConfig], registry: Collection[str], findings: list[Finding]
) -> None:
    known = set(registry)
    for name, task in tasks.items():
        if task.run not in known:
            findings.append(
                Finding(
                    f"{name}.run",
                    "unknown-run",
                    f"no trigger task is registered under {task.run!r}"
                    f"{did_you_mean(task.run, known)}",
                    Severity.ERROR,
                )
            )


def _similar_names(
    tasks: Mapping[str, TaskConfig], typos: set[str], findings: list[Finding]
) -> None:
    uses: Counter[str] = Counter()
    first: dict[str, str] = {}
    for name, task in tasks.items():
        uses[name] += 1
        first.setdefault(name, name)
        for ref in references(task):
            uses[ref.trigger] += 1
            first.setdefault(ref.trigger, ref.path)
    names = sorted(uses)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if not _confusable(a, b) or a in typos or b in typos:
                continue
            # Report the rarer spelling, where it is first used.
            odd, usual = (a, b) if (uses[a], b) < (uses[b], a) else (b, a)
            findings.append(
                Finding(
                    first[odd],
                    "similar-names",
                    f"{odd!r} differs from {usual!r} {_how(odd, usual)}; trigger names "
                    "are matched exactly, so a typo means a trigger nobody fires",
                    Severity.WARNING,
                )
            )


_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
#: Words that, in an extra's name, suggest a directive (``run`` only as the first word).
_DIRECTIVE_WORDS = frozenset({"after", "unless", "every", "using", "params", "param"})


def _extras_like_directives(tasks: Mapping[str, TaskConfig], findings: list[Finding]) -> None:
    triggers = set(tasks) | {ref.trigger for task in tasks.values() for ref in references(task)}
    for name, task in tasks.items():
        for key, value in task.extras.items():
            words = [w.lower() for w in _WORDS.findall(key)]
            hits = [w for w in words if w in _DIRECTIVE_WORDS]
            if words[:1] == ["run"]:
                hits.insert(0, "run")
            items = [value] if isinstance(value, str) else value
            names_triggers = (
                isinstance(items, list)
                and bool(items)
                and all(isinstance(v, str) and v in triggers for v in items)
            )
            if hits:
                why = f"its name contains {hits[0]!r}"
            elif names_triggers:
                why = "its value names triggers of this configuration"
            else:
                continue
            findings.append(
                Finding(
                    f"{name}.{key}",
                    "extra-like-directive",
                    f"{key!r} looks like a directive ({why}), but it is no directive: it is "
                    "kept verbatim as an extra and never read (directives: after, run, "
                    "andEvery, unless, withParams, using)",
                    Severity.WARNING,
                )
            )
