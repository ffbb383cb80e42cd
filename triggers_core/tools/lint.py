"""Lint: what a valid configuration probably got wrong, as findings with paths and rule ids.

:func:`~triggers_core.engine.config.parse_configuration` refuses what cannot work
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
    after ``t_a``, or a task after itself): none of them can ever run. With
    groups, only when no other member can satisfy the group first (a task
    after ``{"anyOf": ["t_self", "x"]}`` runs once ``x`` fires: no finding).
``unknown-task``
    An ``after``/``andEvery`` name (or an ``unless`` group member) that is no
    task of the configuration but one edit (or only case) away from one: a
    typo (short names like ``t_b`` and numbered ones like ``step2`` are left
    alone). An error when the task can then never run; a warning when it is a
    group member the group can do without (it just never counts).
``unless-never-completes``
    An ``unless`` condition that can never complete: a member it needs is a
    task that can never run, a typo of a task name, or a task that only
    finishes after this task has started (only unstarted instances are
    abandoned).
``after-and-unless`` / ``and-every-in-unless``
    A trigger in both ``after`` and ``unless`` (or the ``andEvery`` trigger in
    ``unless``); when the ``unless`` condition is met whenever the ``after``
    condition is (every ``unless`` trigger also waited for, without groups),
    the task can never run (abandoning wins when both complete at once).
``unknown-run``
    ``run`` names no task of the given registry (only with ``task_registry``).
``similar-names``
    Two trigger names that differ only by case or by one character
    (``pageReceived``/``pageRecieved``); names are matched exactly.
``extra-like-directive``
    A key kept verbatim as an extra that looks like a directive
    (``afterAny``, ``unlessAll``, a group key such as ``anyOf`` outside
    ``after``/``unless``, or a list of this configuration's trigger names).
``simpler-group`` (a hint)
    A group that says something simpler: one member (``{"anyOf": ["x"]}`` is
    ``"x"``), or ``atLeast`` all of its members directly in ``after`` or
    ``unless`` (the list itself means "all of").
``delay-longer-than-within``, ``unused-on-miss``, ``window-never-met``
    Time conditions (:mod:`.lint_time`): a ``within`` waiting for a task
    delayed at least as long; an ``onMiss`` trigger no task uses; a window
    waiting for a cascade that only its own ``onMiss`` can start (an error).

Whether a task can ever run is decided as if every trigger that is no task
(and no typo of one) fires: a task can run once its ``after`` condition can be
satisfied by those and by the cascades of tasks that can run.

Cost, for t tasks whose conditions have c names and groups in all (names at
most :data:`~triggers_core.tools.similar.MAX_EDIT_LENGTH` characters long):
O((t + c) log(t + c)). Names are compared through a
:class:`~triggers_core.tools.similar.NameIndex` (at most a fixed number of
candidates each), which tasks can run is counted once through every
condition (:mod:`~triggers_core.tools.reachability`), ``unless-never-completes``
looks downstream of a task within a budget of :data:`LATER_BUDGET` times t
(plus :data:`LATER_BASE`) in all, and ``after-and-unless`` is bounded per task (see
:func:`~triggers_core.tools.requirements.unless_always_wins`). The findings are
sorted once.

Pure: reads :class:`~triggers_core.engine.config.TaskConfig` values only through
:mod:`triggers_core.tools.requirements`.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from triggers_core.engine.conditions import Entry, entry_to_json
from triggers_core.engine.config import TaskConfig, parse_configuration
from triggers_core.engine.graph import cascade_edges, find_cycles
from triggers_core.errors import did_you_mean
from triggers_core.tools.lint_finding import Finding, Severity
from triggers_core.tools.lint_time import TIME_RULES, time_findings
from triggers_core.tools.reachability import Conditions
from triggers_core.tools.reachability import downstream as downstream_of
from triggers_core.tools.requirements import (
    Reference,
    abandoned_by,
    after_triggers,
    group_references,
    grouped,
    references,
    unless_always_wins,
)
from triggers_core.tools.similar import NameIndex

__all__ = ["RULES", "Finding", "Severity", "lint"]


#: Rule id -> what it reports.
RULES: Mapping[str, str] = {
    "cascade-cycle": "tasks wait for each other's cascades, so none of them can ever run",
    "unknown-task": "an after/andEvery name (or unless group member) is no task but looks "
    "like a typo of one",
    "unless-never-completes": "an unless condition can never complete (in time to abandon "
    "anything)",
    "after-and-unless": "a trigger is in both after and unless of one task",
    "and-every-in-unless": "the andEvery trigger is also in unless",
    "unknown-run": "run names no task of the given task registry",
    "similar-names": "trigger names that differ only by case or one character",
    "extra-like-directive": "an extra (kept verbatim, never read) looks like a directive",
    "simpler-group": "a group that says something simpler (one member, or all members)",
    **TIME_RULES,
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
    meant = _Typos(tasks)
    typos = _typos(tasks, meant)
    dead = {ref.trigger for ref in typos}
    conditions = Conditions(tasks)
    fired = _external(tasks, dead)
    runnable = _runnable(conditions, fired, dead)
    cycles = _cascade_cycles(tasks, runnable, findings)
    _unknown_tasks(typos, meant, runnable, findings)
    never = _never_run(tasks, runnable, cycles, typos)
    later = _Later(conditions, runnable, fired, dead)
    _unless_never_completes(tasks, never, typos, meant=meant, later_than=later, findings=findings)
    _after_and_unless(tasks, findings)
    if task_registry is not None:
        _unknown_runs(tasks, task_registry, findings)
    _similar_names(tasks, dead, findings)
    _extras_like_directives(tasks, findings)
    _simpler_groups(tasks, findings)
    findings.extend(time_findings(tasks))
    return sorted(set(findings), key=lambda f: (f.path, f.rule, f.message))


# -- names ------------------------------------------------------------------------------


def _how(a: str, b: str) -> str:
    return "only by case" if a.lower() == b.lower() else "by one character"


# -- rules ------------------------------------------------------------------------------


def _reference(task: TaskConfig, trigger: str, directives: Iterable[str]) -> Reference:
    wanted = set(directives)
    return next(r for r in references(task) if r.trigger == trigger and r.directive in wanted)


def _external(tasks: Mapping[str, TaskConfig], dead: Collection[str]) -> set[str]:
    """Every ``after``/``andEvery`` trigger that is no task and no ``dead`` name: they fire."""
    return {
        name
        for task in tasks.values()
        for name in after_triggers(task)
        if name not in tasks and name not in dead
    }


def _runnable(conditions: Conditions, fired: set[str], dead: Collection[str]) -> set[str]:
    """The tasks that can run if every trigger in ``fired`` fires; a ``dead`` task never runs.

    The least fixed point: a task can run once its ``after`` condition (and
    ``andEvery``) can be satisfied by those triggers and by the cascades of
    tasks that can run (see :mod:`~triggers_core.tools.reachability`).
    """
    return conditions.runnable(fired, dead)


def _cascade_cycles(
    tasks: Mapping[str, TaskConfig], runnable: set[str], findings: list[Finding]
) -> set[str]:
    """``cascade-cycle``; returns every task on a reported cycle.

    Only tasks that can never run can be on one: a task in a loop of cascades
    that some other group member can start runs (and so do the others).
    """
    stuck = {
        name: {t for t in targets if t not in runnable}
        for name, targets in cascade_edges(tasks).items()
        if name not in runnable
    }
    members: set[str] = set()
    for cycle in find_cycles(stuck):
        head = cycle[0]
        ref = _reference(tasks[head], cycle[-2], ("after", "andEvery"))
        links = [
            _reference(tasks[target], source, ("after", "andEvery"))
            for source, target in itertools.pairwise(cycle)
        ]
        grouped_links = any(link.group for link in links)
        whose = "its group" if len(cycle) == 2 else "their groups"
        others = f" (no other member of {whose} can be satisfied first)" if grouped_links else ""
        if len(cycle) == 2:
            message = (
                f"{head} waits for its own cascade ({ref.directive} names {head}), which "
                f"only fires once an instance of it finished{others}: it can never run"
            )
        else:
            loop = " -> ".join(cycle)
            message = (
                f"tasks wait for each other's cascades ({loop}: each runs only after the "
                f"one before it finished{others}), so none of them can ever run"
            )
        findings.append(Finding(ref.path, "cascade-cycle", message, Severity.ERROR))
        members.update(cycle)
    return members


class _Typos:
    """Which names are typos of a task name: one :class:`NameIndex`, each name looked up once."""

    def __init__(self, tasks: Mapping[str, TaskConfig]) -> None:
        self._tasks = tasks
        self._index = NameIndex(tasks)
        self._meant: dict[str, str | None] = {}

    def meant(self, name: str) -> str | None:
        """The task ``name`` is a typo of (the first in sorted order), or None."""
        if name in self._tasks:
            return None
        if name not in self._meant:
            close = self._index.confusable_with(name)
            self._meant[name] = close[0] if close else None
        return self._meant[name]


def _typos(tasks: Mapping[str, TaskConfig], typos: _Typos) -> list[Reference]:
    """Every reference (``unless`` ones too) whose name is no task but a typo of one."""
    return [
        ref
        for task in tasks.values()
        for ref in references(task)
        if typos.meant(ref.trigger) is not None
    ]


def _unknown_tasks(
    typos: list[Reference],
    meant_by: _Typos,
    runnable: set[str],
    findings: list[Finding],
) -> None:
    """``unknown-task`` for ``after``/``andEvery`` typos (``unless`` ones: see below)."""
    for ref in typos:
        if ref.directive == "unless":
            continue  # reported with the unless condition it belongs to
        meant = meant_by.meant(ref.trigger)
        if ref.task in runnable:  # a group member the group can do without
            findings.append(
                Finding(
                    ref.path,
                    "unknown-task",
                    f"{ref.trigger!r} is no task of this configuration, so no cascade fires "
                    f"it and it never counts towards the group {ref.group}; did you mean the "
                    f"task {meant!r}?",
                    Severity.WARNING,
                )
            )
            continue
        findings.append(
            Finding(
                ref.path,
                "unknown-task",
                f"{ref.trigger!r} is no task of this configuration, so no cascade fires "
                f"it and {ref.task} can never run; did you mean the task {meant!r}?",
                Severity.ERROR,
            )
        )


def _never_run(
    tasks: Mapping[str, TaskConfig],
    runnable: set[str],
    cycles: set[str],
    typos: list[Reference],
) -> dict[str, str]:
    """Tasks that can never run -> why (a cycle, a typo, or such a task upstream)."""
    never = set(tasks) - runnable
    why: dict[str, str] = dict.fromkeys(cycles, "it is in a cascade cycle")
    for ref in typos:
        if ref.directive != "unless" and ref.task in never and ref.task not in why:
            why[ref.task] = f"it waits for {ref.trigger!r}, which no task fires"
    edges = cascade_edges(tasks)
    pending = sorted(why)
    while pending:
        upstream = pending.pop()
        for downstream in sorted(edges.get(upstream, ())):
            if downstream in never and downstream not in why:
                why[downstream] = f"it waits for {upstream}, which can never run"
                pending.append(downstream)
    # Every other stuck task is downstream of one of those; kept total regardless.
    for name in sorted(never - why.keys()):
        why[name] = "its after condition can never be satisfied"
    return why


def _unless_never_completes(
    tasks: Mapping[str, TaskConfig],
    never: dict[str, str],
    typos: list[Reference],
    *,
    meant: _Typos,
    later_than: _Later,
    findings: list[Finding],
) -> None:
    """``unless-never-completes`` (and ``unknown-task`` for a typo the condition can do without)."""
    typo_paths = {ref.path for ref in typos}
    for name, task in tasks.items():
        unreachable: list[tuple[Reference, str]] = []
        for ref in references(task):
            if ref.directive != "unless":
                continue
            trigger = ref.trigger
            if ref.path in typo_paths:
                why = (
                    f"{trigger!r} is no task of this configuration, so no cascade fires it; "
                    f"did you mean the task {meant.meant(trigger)!r}?"
                )
            elif trigger in never:
                why = f"{trigger} can never run ({never[trigger]})"
            elif trigger in tasks and task.and_every is None:
                if not later_than.runs_only_after(trigger, name):
                    continue
                how = "is this task" if trigger == name else f"runs only after {name} finished"
                why = (
                    f"{trigger} {how}, and {name} has no andEvery: by the time {trigger} "
                    f"fires, {name}'s only instance has started, and only unstarted "
                    "instances are abandoned"
                )
            else:
                continue
            unreachable.append((ref, why))
        if not unreachable:
            continue
        left = set(task.unless_names) - {ref.trigger for ref, _ in unreachable}
        if not abandoned_by(task, left):
            what = "condition" if grouped(task, "unless") else "set"
            findings.extend(
                Finding(
                    ref.path,
                    "unless-never-completes",
                    f"the unless {what} of {name} can never complete in time: {why}",
                    Severity.WARNING,
                )
                for ref, why in unreachable
            )
            continue
        # The condition can complete without them: only a typo is worth a word.
        findings.extend(
            Finding(
                ref.path,
                "unknown-task",
                f"{ref.trigger!r} is no task of this configuration, so no cascade fires it "
                f"and it never counts towards the unless group {ref.group}; did you mean "
                f"the task {meant.meant(ref.trigger)!r}?",
                Severity.WARNING,
            )
            for ref, _ in unreachable
            if ref.path in typo_paths
        )


class _Later:
    """Which tasks run only after a given task finished, within a work budget.

    ``runs_only_after(t, name)``: ``t`` cannot run while ``name`` never runs.
    Each ``name`` asked about costs the part of the configuration downstream
    of it (see :meth:`Conditions.runnable_without`), once; past a budget of
    :data:`LATER_BUDGET` times the configuration's tasks (plus :data:`LATER_BASE`)
    in all, the answer is
    "no" (the ``unless-never-completes`` rule then stays silent rather than
    making the whole lint quadratic).
    """

    def __init__(
        self, conditions: Conditions, runnable: set[str], fired: set[str], dead: set[str]
    ) -> None:
        self._conditions = conditions
        self._runnable = runnable
        self._fired = fired
        self._dead = dead
        self._later: dict[str, set[str]] = {}
        self._budget = LATER_BUDGET * max(1, len(conditions.tasks)) + LATER_BASE
        self.skipped = 0

    def runs_only_after(self, trigger: str, name: str) -> bool:
        found = self._later.get(name)
        if found is None:
            region = downstream_of(self._conditions.edges, name, max(0, self._budget))
            if region is None:
                self._budget = 0
                self.skipped += 1
                return False
            self._budget -= len(region) + 1
            without = self._conditions.runnable_without(
                self._runnable, self._fired, self._dead, name, region
            )
            found = self._later[name] = set(self._conditions.tasks) - without
        return trigger in found


#: :class:`_Later` looks at most this many times the number of tasks in all.
LATER_BUDGET = 16
#: ... plus this many, so that configurations of a few hundred tasks are always
#: checked whole (a chain of 600 tasks each naming a later one costs 180,000).
LATER_BASE = 200_000


def _after_and_unless(tasks: Mapping[str, TaskConfig], findings: list[Finding]) -> None:
    for name, task in tasks.items():
        waited = set(after_triggers(task))
        never_runs = unless_always_wins(task) is True
        if not never_runs:
            consequence = "when it fires it counts towards both"
        elif grouped(task, "after") or grouped(task, "unless"):
            consequence = (
                f"the unless condition of {name} is met whenever its after condition is, so "
                "whenever it could run it is abandoned instead: it can never run"
            )
        else:
            consequence = (
                f"every unless trigger of {name} is also one it waits for, so whenever it "
                "could run it is abandoned instead: it can never run"
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
    index = NameIndex(uses)
    for a in sorted(uses):
        for b in index.confusable_with(a):
            if b < a or a in typos or b in typos:
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
#: Extras named like a group key (folded: no case, ``_`` or ``-``).
_GROUP_WORDS = frozenset({"anyof", "atleast", "allof"})


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
            folded = key.replace("_", "").replace("-", "").lower()
            if folded in _GROUP_WORDS:
                why = (
                    "a group key; a group is an entry of after or unless, "
                    'e.g. "after": [{"anyOf": [...]}]'
                )
            elif hits:
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
                    "andEvery, unless, withParams, using, within, onMiss, delay)",
                    Severity.WARNING,
                )
            )


# -- hints ------------------------------------------------------------------------------


def _entry_text(entry: Entry) -> str:
    return repr(entry) if isinstance(entry, str) else json.dumps(entry_to_json(entry))


def _simpler_groups(tasks: Mapping[str, TaskConfig], findings: list[Finding]) -> None:
    """``simpler-group``: one member, or all members directly in the list (which means all)."""
    for name, task in tasks.items():
        for ref in group_references(task):
            members = ref.group.members
            if len(members) == 1:
                message = (
                    "a group with one member is satisfied exactly when that member is: "
                    f"write {_entry_text(members[0])} in its place"
                )
            elif ref.group.at_least == len(members) and not ref.parent:
                message = (
                    f"atLeast {len(members)} of {len(members)} members needs every one, which is "
                    f"what the {ref.directive} list of {name} means by itself: write the members "
                    "as entries of the list"
                )
            else:
                continue
            findings.append(Finding(ref.path, "simpler-group", message, Severity.HINT))
