"""How the tasks of a configuration feed one another, as directed graphs over task names.

A finished instance of task ``T`` fires the trigger ``T`` (its cascade). So:

* :func:`and_every_edges`: ``T -> U`` when ``U``'s ``andEvery`` is ``T``: every
  finished ``T`` creates a new instance of ``U``. Instances beyond a task's
  first are created *only* this way, so a cycle of these edges (a task naming
  itself included) is a configuration that runs without end once started.
* :func:`cascade_edges`: ``T -> U`` when ``U`` waits for ``T`` (``after`` or
  ``andEvery``): without groups, ``U`` cannot run before ``T`` finished. A
  name inside an ``after`` group counts too, though another member may then
  satisfy the group first (so a cycle of these edges through a group need not
  block anything: :mod:`triggers_core.tools.lint` decides which tasks can run).

``andEvery`` is always one trigger name, so condition groups never add or
remove an :func:`and_every_edges` edge: the cycle check is the same with groups.

:func:`find_cycles` reports one cycle per strongly connected component, as a
path that returns to its start (``["t_a", "t_b", "t_a"]``). Everything here is
pure and iterative: no recursion, whatever the size of the configuration.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Protocol


class TaskConfig(Protocol):
    """What the graphs read of a task (:class:`~triggers_core.engine.config.TaskConfig`).

    A structural type, so this module sits below the configuration that uses it.
    """

    @property
    def and_every(self) -> str | None: ...

    @property
    def required_triggers(self) -> frozenset[str]: ...


__all__ = [
    "Edges",
    "and_every_cycles",
    "and_every_edges",
    "cascade_edges",
    "find_cycles",
    "strongly_connected_components",
]

#: A directed graph: node -> the nodes its edges lead to.
Edges = Mapping[str, Iterable[str]]


def and_every_edges(tasks: Mapping[str, TaskConfig]) -> dict[str, set[str]]:
    """``T -> U`` for every task ``U`` whose ``andEvery`` is the configured task ``T``."""
    edges: dict[str, set[str]] = {name: set() for name in tasks}
    for name, task in tasks.items():
        if task.and_every is not None and task.and_every in tasks:
            edges[task.and_every].add(name)
    return edges


def cascade_edges(tasks: Mapping[str, TaskConfig]) -> dict[str, set[str]]:
    """``T -> U`` for every task ``U`` whose ``after`` (groups included) or ``andEvery``
    names the configured task ``T``."""
    edges: dict[str, set[str]] = {name: set() for name in tasks}
    for name, task in tasks.items():
        for trigger in task.required_triggers:
            if trigger in tasks:
                edges[trigger].add(name)
    return edges


def strongly_connected_components(edges: Edges) -> list[list[str]]:
    """The strongly connected components of ``edges`` (Tarjan's, iteratively).

    Each component is sorted; components come in reverse topological order.
    Nodes that appear only as edge targets are included.
    """
    graph: dict[str, list[str]] = {}
    for node, targets in edges.items():
        graph.setdefault(node, [])
        for target in sorted(targets):
            graph[node].append(target)
            graph.setdefault(target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        # Each frame: (node, position of the next edge to follow).
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = graph[node]
            if position < len(targets):
                work.append((node, position + 1))
                target = targets[position]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def find_cycles(edges: Edges) -> list[list[str]]:
    """One cycle per component that has one (a self-loop counts), sorted.

    Each cycle starts and ends at its component's smallest node and is a
    shortest way back to it: ``["t_a", "t_b", "t_a"]``, or ``["t_a", "t_a"]``.
    """
    graph = {node: set(targets) for node, targets in edges.items()}
    cycles: list[list[str]] = []
    for component in strongly_connected_components(edges):
        start = component[0]
        if len(component) == 1 and start not in graph.get(start, ()):
            continue
        members = set(component)
        # Breadth-first from start, inside the component, until an edge returns to start.
        came_from: dict[str, str] = {}
        queue: deque[str] = deque([start])
        last = None
        while queue and last is None:
            node = queue.popleft()
            for target in sorted(graph.get(node, ())):
                if target == start:
                    last = node
                    break
                if target in members and target not in came_from:
                    came_from[target] = node
                    queue.append(target)
        assert last is not None  # a strongly connected component with an edge has a cycle
        path = [start]
        while last != start:
            path.append(last)
            last = came_from[last]
        path.append(start)
        path[1:-1] = reversed(path[1:-1])
        cycles.append(path)
    return sorted(cycles)


def and_every_cycles(tasks: Mapping[str, TaskConfig]) -> list[list[str]]:
    """The ``andEvery`` cycles of a configuration (see the module docstring)."""
    return find_cycles(and_every_edges(tasks))
