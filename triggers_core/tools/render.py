"""A configuration as a picture: Mermaid and Graphviz DOT text.

Triggers fired from outside are rounded nodes, tasks are boxes. Edges point
from a trigger (or from the task whose cascade it is) to the task that uses it:

=============  ==================================  ===========================
edge           meaning                             drawn as
=============  ==================================  ===========================
``after``      the task waits for the trigger      solid arrow
``andEvery``   each fire creates a new instance    solid arrow, label andEvery
``unless``     all of them abandon the task        dotted arrow, label unless
``cascade``    a task waits for another's result   thick arrow (label andEvery
                                                   if it is the andEvery)
=============  ==================================  ===========================

A condition group (``{"anyOf": [...]}``, ``{"atLeast": N, "of": [...]}``) is a
hexagon of its own, labelled ``any of`` or ``N of``: its members' edges lead to
it (drawn as above, without labels), and one edge leads from it to its task
(labelled ``unless`` in ``unless``) or to the group it is a member of. A
configuration without groups draws no such node.

With a session's instances, each task node is coloured by the status that
matters most among its instances (failed, then running, scheduled,
unstarted, finished, skipped, abandoned) and its label counts them.
Node identifiers are generated (``tr0``, ``tk0``, ``gp0``), so any name
renders; the output is deterministic. Conditions are read through
:mod:`triggers_core.tools.requirements`.

Cost: O((t + c) log(t + c)) for t tasks whose conditions have c names and
groups in all (each reference is visited once; nodes and edges are sorted
once), plus O(n) for n instances when a session colours the tasks.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping

import attrs

from triggers_core.engine.config import TaskConfig
from triggers_core.engine.state import Status, TaskInstance
from triggers_core.tools.requirements import group_references, references

__all__ = ["Edge", "GroupNode", "edges", "group_nodes", "task_statuses", "to_dot", "to_mermaid"]

#: Most telling first: a task's colour is the first of these among its instances.
_PRIORITY = (
    Status.FAILED,
    Status.RUNNING,
    Status.SCHEDULED,
    Status.UNSTARTED,
    Status.FINISHED,
    Status.SKIPPED,
    Status.ABANDONED,
    Status.EXPIRED,
    Status.REPLAYED,
)
_COLOURS = {
    Status.FAILED: ("#f8d7da", "#b02a37"),
    Status.RUNNING: ("#cfe2ff", "#0a58ca"),
    Status.SCHEDULED: ("#e2e3ff", "#3d3dbd"),
    Status.UNSTARTED: ("#fff3cd", "#997404"),
    Status.FINISHED: ("#d1e7dd", "#146c43"),
    Status.SKIPPED: ("#e9ecef", "#6c757d"),
    Status.ABANDONED: ("#e9ecef", "#495057"),
    Status.EXPIRED: ("#ffe5d0", "#a5460a"),
    Status.REPLAYED: ("#e9ecef", "#6c757d"),
}


@attrs.frozen(order=True)
class Edge:
    """One edge of the graph: ``source`` (trigger or task) -> ``target`` (a task)."""

    source: str
    target: str
    #: ``after``, ``andEvery``, ``unless`` or ``cascade``.
    kind: str
    #: A cascade that is the target's ``andEvery``.
    and_every: bool = False
    #: The path of the group the source is a member of (``t_a.after[1]``): the edge
    #: leads to that group's node (see :func:`group_nodes`); "" leads to the task.
    group: str = ""


@attrs.frozen(order=True)
class GroupNode:
    """A condition group, drawn as a node between its members and what it belongs to."""

    #: Where the group is written (``t_a.after[1]``): its identity.
    path: str
    task: str
    #: ``after`` or ``unless``.
    directive: str
    #: The path of the group it is a member of, or "" (it belongs to the task).
    parent: str
    #: ``any of`` or ``N of``.
    label: str


def edges(tasks: Mapping[str, TaskConfig]) -> list[Edge]:
    """Every edge of the configuration, sorted."""
    found: set[Edge] = set()
    for name, task in tasks.items():
        for ref in references(task):
            if ref.directive == "unless":
                found.add(Edge(ref.trigger, name, "unless", group=ref.group))
            elif ref.trigger in tasks:
                found.add(
                    Edge(ref.trigger, name, "cascade", ref.directive == "andEvery", ref.group)
                )
            else:
                found.add(Edge(ref.trigger, name, ref.directive, group=ref.group))
    return sorted(found)


def group_nodes(tasks: Mapping[str, TaskConfig]) -> list[GroupNode]:
    """Every condition group of the configuration: tasks in name order, groups as written."""
    return [
        GroupNode(
            ref.path,
            name,
            ref.directive,
            ref.parent,
            "any of" if ref.group.at_least is None else f"{ref.group.at_least} of",
        )
        for name in sorted(tasks)
        for ref in group_references(tasks[name])
    ]


def task_statuses(instances: Iterable[TaskInstance]) -> dict[str, Counter[Status]]:
    """Task name -> how many of its instances are in each status."""
    counts: dict[str, Counter[Status]] = {}
    for instance in instances:
        counts.setdefault(instance.task_name, Counter())[instance.status] += 1
    return counts


def _main_status(counts: Counter[Status] | None) -> Status | None:
    if not counts:
        return None
    return next(s for s in _PRIORITY if counts[s])


def _label(name: str, counts: Counter[Status] | None, coloured: bool) -> str:
    if not coloured:
        return name
    if not counts:
        return f"{name} (no instance)"
    parts = ", ".join(f"{counts[s]} {s}" for s in _PRIORITY if counts[s])
    return f"{name} ({parts})"


class _Nodes:
    """Generated identifiers: triggers ``tr0...``, tasks ``tk0...`` in name order; groups
    ``gp0...`` in :func:`group_nodes` order."""

    def __init__(self, tasks: Mapping[str, TaskConfig], all_edges: list[Edge]) -> None:
        self.tasks = sorted(tasks)
        self.triggers = sorted({e.source for e in all_edges if e.source not in tasks})
        self.groups = group_nodes(tasks)
        self.ids = {name: f"tk{i}" for i, name in enumerate(self.tasks)}
        self.trigger_ids = {name: f"tr{i}" for i, name in enumerate(self.triggers)}
        self.group_ids = {group.path: f"gp{i}" for i, group in enumerate(self.groups)}

    def __getitem__(self, name: str) -> str:
        return self.ids.get(name) or self.trigger_ids[name]

    def target(self, edge: Edge) -> str:
        """Where ``edge`` is drawn to: its group's node, or its task."""
        return self.group_ids[edge.group] if edge.group else self.ids[edge.target]

    def outer(self, group: GroupNode) -> str:
        """Where a group's own edge is drawn to: the group it is in, or its task."""
        return self.group_ids[group.parent] if group.parent else self.ids[group.task]


def _mermaid_text(text: str) -> str:
    # Inside a quoted Mermaid label '#' starts an entity code; quotes and angle
    # brackets would end the label or become HTML.
    # A control character (a line break above all) would end the line: its code too.
    for raw, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(raw, code)
    return _CONTROL.sub(lambda match: f"#{ord(match.group())};", text)


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def to_mermaid(
    tasks: Mapping[str, TaskConfig], *, instances: Iterable[TaskInstance] | None = None
) -> str:
    """The configuration as a Mermaid flowchart (coloured by ``instances`` if given)."""
    all_edges = edges(tasks)
    nodes = _Nodes(tasks, all_edges)
    counts = task_statuses(instances) if instances is not None else {}
    coloured = instances is not None
    lines = ["flowchart LR"]
    for name in nodes.triggers:
        lines.append(f'    {nodes[name]}(["{_mermaid_text(name)}"])')
    for name in nodes.tasks:
        label = _mermaid_text(_label(name, counts.get(name), coloured))
        lines.append(f'    {nodes[name]}["{label}"]')
    for group in nodes.groups:
        lines.append(f'    {nodes.group_ids[group.path]}{{{{"{group.label}"}}}}')
    for edge in all_edges:
        source, target = nodes[edge.source], nodes.target(edge)
        if edge.kind == "unless":
            arrow = "-.->" if edge.group else "-.->|unless|"
        elif edge.kind == "cascade":
            arrow = "==>|andEvery|" if edge.and_every else "==>"
        elif edge.kind == "andEvery":
            arrow = "-->|andEvery|"
        else:
            arrow = "-->"
        lines.append(f"    {source} {arrow} {target}")
    for group in nodes.groups:
        if group.directive == "unless":
            arrow = "-.->" if group.parent else "-.->|unless|"
        else:
            arrow = "-->"
        lines.append(f"    {nodes.group_ids[group.path]} {arrow} {nodes.outer(group)}")
    if coloured:
        used: dict[Status, list[str]] = {}
        for name in nodes.tasks:
            status = _main_status(counts.get(name))
            if status is not None:
                used.setdefault(status, []).append(nodes[name])
        for status in _PRIORITY:
            if status in used:
                fill, stroke = _COLOURS[status]
                lines.append(f"    classDef {status} fill:{fill},stroke:{stroke}")
                lines.append(f"    class {','.join(used[status])} {status}")
    return "\n".join(lines) + "\n"


_DOT_UNLESS = 'style=dotted, arrowhead=tee, label="unless"'


def _dot_text(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r") + '"'


def to_dot(
    tasks: Mapping[str, TaskConfig], *, instances: Iterable[TaskInstance] | None = None
) -> str:
    """The configuration as a Graphviz DOT digraph (coloured by ``instances`` if given)."""
    all_edges = edges(tasks)
    nodes = _Nodes(tasks, all_edges)
    counts = task_statuses(instances) if instances is not None else {}
    coloured = instances is not None
    lines = ["digraph triggers {", "    rankdir=LR;"]
    for name in nodes.triggers:
        lines.append(f"    {nodes[name]} [label={_dot_text(name)}, shape=ellipse];")
    for name in nodes.tasks:
        attributes = [f"label={_dot_text(_label(name, counts.get(name), coloured))}", "shape=box"]
        status = _main_status(counts.get(name))
        if status is not None:
            fill, stroke = _COLOURS[status]
            attributes += ["style=filled", f'fillcolor="{fill}"', f'color="{stroke}"']
        lines.append(f"    {nodes[name]} [{', '.join(attributes)}];")
    for group in nodes.groups:
        lines.append(
            f"    {nodes.group_ids[group.path]} [label={_dot_text(group.label)}, shape=hexagon];"
        )
    for edge in all_edges:
        if edge.kind == "unless":
            style = "style=dotted" if edge.group else _DOT_UNLESS
        elif edge.kind == "cascade":
            style = "style=bold, penwidth=2" + (', label="andEvery"' if edge.and_every else "")
        elif edge.kind == "andEvery":
            style = 'style=solid, label="andEvery"'
        else:
            style = "style=solid"
        lines.append(f"    {nodes[edge.source]} -> {nodes.target(edge)} [{style}];")
    for group in nodes.groups:
        if group.directive == "unless":
            style = "style=dotted" if group.parent else _DOT_UNLESS
        else:
            style = "style=solid"
        lines.append(f"    {nodes.group_ids[group.path]} -> {nodes.outer(group)} [{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
