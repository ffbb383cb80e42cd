"""Which tasks can ever run, computed by counting: linear in the configuration's size.

A task can run once its ``after`` condition (and ``andEvery``) is satisfied by
triggers that fire. Given the triggers that fire from outside, the tasks that
can run are the least fixed point: a task that can run fires its own name (its
cascade), which may let others run. Re-evaluating a task's whole condition
each time one of its names fires is quadratic for a task that waits for many
others; :class:`Conditions` instead turns every condition into a tree of
counters (each group, and each task's list of ``after`` entries, counts its
satisfied members) and propagates each fired name once through the leaves
that name it.

Cost: building is O(c), c the total size of the conditions (names and groups
of every ``after``); :meth:`Conditions.runnable` is O(c + t) for t tasks, and
:meth:`Conditions.runnable_without` is O(c_D + t_D) for the tasks downstream
of the excluded one (only those can change).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from triggers_core.engine.conditions import Entry, Group
from triggers_core.engine.config import TaskConfig
from triggers_core.engine.graph import cascade_edges
from triggers_core.tools.requirements import after_triggers

__all__ = ["Conditions", "downstream"]


def downstream(
    edges: Mapping[str, Collection[str]], start: str, limit: int | None = None
) -> set[str] | None:
    """Every task reachable from ``start`` along cascade ``edges`` (``start`` excluded
    unless on a cycle): O(size of that part of the graph). None once it would hold
    more than ``limit`` tasks (the walk stops there)."""
    seen: set[str] = set()
    stack = list(edges.get(start, ()))
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if limit is not None and len(seen) > limit:
            return None
        stack.extend(edges.get(name, ()))
    return seen


class Conditions:
    """Every task's ``after`` condition as counters: node -> (need, parent, task)."""

    def __init__(self, tasks: Mapping[str, TaskConfig]) -> None:
        self.tasks = tasks
        self.edges = cascade_edges(tasks)
        #: Per node: how many members it needs, its parent node (-1: a task's root).
        self._need: list[int] = []
        self._parent: list[int] = []
        self._task: list[str] = []
        #: Trigger name -> the nodes it is a member of (one entry per occurrence).
        self._leaves: dict[str, list[int]] = {}
        for name, task in tasks.items():
            entries: list[Entry] = list(task.after)
            if task.and_every is not None and task.and_every not in task.after_names:
                entries.append(task.and_every)
            self._add(name, entries, len(entries), -1)

    def _add(self, task: str, members: Iterable[Entry], need: int, parent: int) -> int:
        node = len(self._need)
        self._need.append(need)
        self._parent.append(parent)
        self._task.append(task)
        pending: list[tuple[Iterable[Entry], int]] = [(members, node)]
        while pending:
            entries, owner = pending.pop()
            for entry in entries:
                if isinstance(entry, str):
                    self._leaves.setdefault(entry, []).append(owner)
                else:
                    pending.append((entry.members, self._group(task, entry, owner)))
        return node

    def _group(self, task: str, group: Group, parent: int) -> int:
        node = len(self._need)
        self._need.append(group.need)
        self._parent.append(parent)
        self._task.append(task)
        return node

    def runnable(self, fired: Iterable[str], dead: Collection[str] = ()) -> set[str]:
        """The tasks that can run when ``fired`` fire from outside; ``dead`` tasks never run.

        A task with an empty condition (none can be written) would count as ready.
        """
        return self._fixpoint(fired, dead, None)

    def runnable_without(
        self,
        base: set[str],
        fired: Collection[str],
        dead: Collection[str],
        name: str,
        region: set[str] | None = None,
    ) -> set[str]:
        """:meth:`runnable` with ``name`` dead too, given ``base`` (the answer without it).

        Only tasks downstream of ``name`` can change: the others keep their
        answer from ``base``, and only the downstream part (``region``, if the
        caller walked it already) is recomputed.
        """
        region = set(region if region is not None else downstream(self.edges, name) or ())
        region.add(name)
        # Only the names the region's conditions use can matter: O(region), not O(all).
        used = {n for task in region for n in after_triggers(self.tasks[task])}
        seeds = {n for n in used if (n in fired or n in base) and n not in region}
        return (base - region) | self._fixpoint(seeds, {*dead, name}, region)

    def _fixpoint(
        self, fired: Iterable[str], dead: Collection[str], region: set[str] | None
    ) -> set[str]:
        count: dict[int, int] = {}
        can: set[str] = set()
        seen = set(fired)
        queue = list(seen)
        while queue:
            trigger = queue.pop()
            for leaf in self._leaves.get(trigger, ()):
                if region is not None and self._task[leaf] not in region:
                    continue
                node = leaf
                while node >= 0:
                    done = count.get(node, 0) + 1
                    count[node] = done
                    if done != self._need[node]:
                        break
                    parent = self._parent[node]
                    if parent < 0:
                        task = self._task[node]
                        if task not in dead and task not in can:
                            can.add(task)
                            if task not in seen:
                                seen.add(task)
                                queue.append(task)
                    node = parent
        return can
