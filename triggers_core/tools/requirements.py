"""What a task's ``after``/``andEvery``/``unless`` ask for, and what an instance still lacks.

The workflow tools (:mod:`~triggers_core.tools.lint`, :mod:`~triggers_core.tools.explain`,
:mod:`~triggers_core.tools.render`, the command line) read a task's conditions only
through these functions, so a richer kind of condition is taught to all of
them here, in one place. Everything is pure and reads a
:class:`~triggers_core.engine.config.TaskConfig` and, for an instance, its recorded
``kwargs`` and ``unless_fired``.

An ``after``/``unless`` entry is a trigger name or a
:class:`~triggers_core.engine.conditions.Group` (see :mod:`triggers_core.engine.conditions`).
Paths name every entry as the configuration writes it: ``t_a.after[1]``,
``t_a.after[1].anyOf[0]``, ``t_a.unless[0].of[2]``. What an instance still
lacks is a tuple of :data:`Lack` values: a trigger name it has not recorded,
or a :class:`Missing` group (how many more of which members). Without groups
it is exactly the tuple of names not recorded, in configuration order.

Cost: every function here is linear in the size of the one task's
conditions it reads (names and groups, nested at most
:data:`~triggers_core.engine.conditions.MAX_GROUP_DEPTH` deep), except
:func:`unless_always_wins`, whose bound its docstring states.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterator
from typing import Any

import attrs

from triggers_core.engine.conditions import Entry, Group, entry_satisfied
from triggers_core.engine.config import TaskConfig
from triggers_core.engine.state import TaskInstance

__all__ = [
    "MAX_SEARCH",
    "MAX_SHARED_NAMES",
    "SEARCH_PER_NODE",
    "GroupReference",
    "Lack",
    "Missing",
    "Reference",
    "abandoned_by",
    "after_triggers",
    "condition_words",
    "group_references",
    "grouped",
    "is_complete",
    "lack_to_json",
    "lack_words",
    "missing_after",
    "missing_unless",
    "ready_with",
    "references",
    "unless_always_wins",
    "unless_complete",
    "unless_recorded",
    "unless_triggers",
]


@attrs.frozen
class Reference:
    """One trigger name a task's configuration refers to, and where."""

    #: The task whose directive names it.
    task: str
    trigger: str
    #: ``after``, ``andEvery`` or ``unless``.
    directive: str
    #: The path of the reference in the configuration (``t_score.after[1]``,
    #: ``t_score.after[1].anyOf[0]``).
    path: str
    #: The path of the group it is a member of ("" directly in the directive's list).
    group: str = ""


@attrs.frozen
class GroupReference:
    """One group in a task's ``after`` or ``unless``, and where."""

    task: str
    group: Group
    #: ``after`` or ``unless``.
    directive: str
    #: ``t_a.after[1]``, ``t_a.unless[0].of[2]``.
    path: str
    #: The path of the group it is a member of ("" directly in the directive's list).
    parent: str = ""


def _members_key(group: Group) -> str:
    return "anyOf" if group.at_least is None else "of"


def _walk(entries: tuple[Entry, ...], prefix: str) -> Iterator[tuple[Entry, str, str]]:
    """``(entry, its path, the path of its group or "")`` for every entry at any depth.

    Depth first, in written order; iterative (nesting is bounded anyway).
    """
    # Each frame: the entries left at one level, the path their indexes follow, their group.
    stack: list[tuple[Iterator[tuple[int, Entry]], str, str]] = [
        (iter(enumerate(entries)), prefix, "")
    ]
    while stack:
        remaining, members_path, group_path = stack[-1]
        step = next(remaining, None)
        if step is None:
            stack.pop()
            continue
        index, entry = step
        path = f"{members_path}[{index}]"
        yield entry, path, group_path
        if isinstance(entry, Group):
            stack.append((iter(enumerate(entry.members)), f"{path}.{_members_key(entry)}", path))


def references(task: TaskConfig) -> list[Reference]:
    """Every trigger name the task's ``after``, ``andEvery`` and ``unless`` name, with paths.

    Names inside groups are included (depth first, in written order), so a
    name may appear more than once.
    """
    found = [
        Reference(task.name, entry, "after", path, group)
        for entry, path, group in _walk(task.after, f"{task.name}.after")
        if isinstance(entry, str)
    ]
    if task.and_every is not None:
        found.append(Reference(task.name, task.and_every, "andEvery", f"{task.name}.andEvery"))
    found.extend(
        Reference(task.name, entry, "unless", path, group)
        for entry, path, group in _walk(task.unless, f"{task.name}.unless")
        if isinstance(entry, str)
    )
    return found


def group_references(task: TaskConfig) -> list[GroupReference]:
    """Every group in the task's ``after`` and ``unless`` (depth first, in written order)."""
    return [
        GroupReference(task.name, entry, directive, path, parent)
        for directive, entries in (("after", task.after), ("unless", task.unless))
        for entry, path, parent in _walk(entries, f"{task.name}.{directive}")
        if isinstance(entry, Group)
    ]


def grouped(task: TaskConfig, directive: str) -> bool:
    """True if the task's ``after`` (or ``unless``) holds a group, not only names."""
    entries = task.after if directive == "after" else task.unless
    return any(isinstance(entry, Group) for entry in entries)


def after_triggers(task: TaskConfig) -> tuple[str, ...]:
    """Every trigger an instance records kwargs for: ``after``'s names (groups flattened),
    then ``andEvery``. Without groups, all of them must fire before it is ready."""
    names = task.after_names
    if task.and_every is not None and task.and_every not in names:
        names = (*names, task.and_every)
    return names


def unless_triggers(task: TaskConfig) -> tuple[str, ...]:
    """Every trigger name in ``unless`` (groups flattened), in written order."""
    return task.unless_names


# -- what is still lacking -----------------------------------------------------------------


@attrs.frozen
class Missing:
    """A group that is not satisfied yet: ``need`` more of ``members``."""

    group: Group
    #: Where the group is written (``t_a.after[1]``).
    path: str
    #: How many more members must be satisfied (at least 1).
    need: int
    #: How many members are satisfied already.
    satisfied: int
    #: The members not satisfied yet, in written order: names and groups.
    members: tuple[Lack, ...]

    def phrase(self) -> str:
        """``any one of``, ``2 of``; once a member is satisfied ``one more of``, ``2 more of``."""
        if self.satisfied:
            return "one more of" if self.need == 1 else f"{self.need} more of"
        return "any one of" if self.need == 1 else f"{self.need} of"

    def words(self, quote: Callable[[str], str] = str) -> str:
        """One phrase, nested groups in parentheses: ``any one of (a, 2 of (b, c, d))``."""
        return f"{self.phrase()} ({', '.join(lack_words(m, quote) for m in self.members)})"

    def to_json(self) -> dict[str, Any]:
        """As a JSON-compatible mapping (``group`` is the group as configured)."""
        return {
            "path": self.path,
            "need": self.need,
            "satisfied": self.satisfied,
            "missing": [lack_to_json(m) for m in self.members],
            "group": self.group.to_json(),
        }


#: What an instance still lacks: a trigger name it has not recorded, or a group.
Lack = str | Missing


def lack_words(lack: Lack, quote: Callable[[str], str] = str) -> str:
    """A name (through ``quote``, e.g. :func:`repr`), or the group's :meth:`Missing.words`."""
    return quote(lack) if isinstance(lack, str) else lack.words(quote)


def lack_to_json(lack: Lack) -> str | dict[str, Any]:
    """A name as itself, a group as :meth:`Missing.to_json`."""
    return lack if isinstance(lack, str) else lack.to_json()


def _missing(group: Group, path: str, recorded: Collection[str]) -> Missing:
    key = _members_key(group)
    satisfied = 0
    members: list[Lack] = []
    for index, member in enumerate(group.members):
        if entry_satisfied(member, recorded):
            satisfied += 1
        elif isinstance(member, str):
            members.append(member)
        else:
            members.append(_missing(member, f"{path}.{key}[{index}]", recorded))
    return Missing(group, path, group.need - satisfied, satisfied, tuple(members))


def _lacking(entries: tuple[Entry, ...], prefix: str, recorded: Collection[str]) -> list[Lack]:
    found: list[Lack] = []
    for index, entry in enumerate(entries):
        if entry_satisfied(entry, recorded):
            continue
        if isinstance(entry, str):
            found.append(entry)
        else:
            found.append(_missing(entry, f"{prefix}[{index}]", recorded))
    return found


def missing_after(task: TaskConfig, recorded: Collection[str]) -> tuple[Lack, ...]:
    """What ``after``/``andEvery`` still lack, given ``recorded`` (an instance's ``kwargs``).

    Each ``after`` entry not satisfied (a name, or a :class:`Missing` group),
    then ``andEvery`` if not recorded. Empty exactly when the instance is ready.
    """
    found = _lacking(task.after, f"{task.name}.after", recorded)
    every = task.and_every
    if every is not None and every not in recorded and every not in task.after:
        found.append(every)
    return tuple(found)


def is_complete(task: TaskConfig, instance: TaskInstance) -> bool:
    """The instance's ``after`` condition is satisfied (it is, or would be, ready)."""
    return task.is_ready(instance.kwargs)


def unless_recorded(task: TaskConfig, instance: TaskInstance) -> tuple[str, ...]:
    """The task's ``unless`` names the instance recorded, in configuration order."""
    return tuple(t for t in task.unless_names if t in instance.unless_fired)


def missing_unless(task: TaskConfig, instance: TaskInstance) -> tuple[Lack, ...]:
    """The task's ``unless`` entries the instance's recorded ``unless`` triggers do not satisfy."""
    return tuple(_lacking(task.unless, f"{task.name}.unless", instance.unless_fired))


def unless_complete(task: TaskConfig, instance: TaskInstance) -> bool:
    """The task has ``unless`` entries and every one is satisfied (it is, or will be, abandoned)."""
    return task.is_abandoned_by(instance.unless_fired)


def condition_words(task: TaskConfig, directive: str, quote: Callable[[str], str] = str) -> str:
    """The whole ``after`` (with ``andEvery``) or ``unless`` condition in one line.

    ``a, b`` for a plain list; ``a, any one of (b, c), 2 of (d, e, f)`` with groups.
    """
    if directive == "after":
        lacks = missing_after(task, ())
    else:
        lacks = tuple(_lacking(task.unless, f"{task.name}.unless", ()))
    return ", ".join(lack_words(lack, quote) for lack in lacks)


# -- reasoning over whole conditions --------------------------------------------------------


def ready_with(task: TaskConfig, fired: Collection[str]) -> bool:
    """An instance that recorded every trigger in ``fired`` would be ready."""
    return task.is_ready(fired)


def abandoned_by(task: TaskConfig, fired: Collection[str]) -> bool:
    """An unstarted instance that recorded every trigger in ``fired`` would be abandoned."""
    return task.is_abandoned_by(fired)


#: :func:`unless_always_wins` tries subsets of the shared names (when both conditions
#: hold groups) only while that costs at most this many evaluations of a condition,
#: plus :data:`SEARCH_PER_NODE` per name or group in the task's conditions.
MAX_SEARCH = 64
SEARCH_PER_NODE = 8
#: Kept for compatibility: the most shared names the subset search ever tries.
MAX_SHARED_NAMES = 12


class _Counters:
    """A task's ``after`` condition (with ``andEvery``) as counters over its names.

    With every name in ``fired`` counted, :meth:`needs` tells in O(occurrences
    of the name * group depth) whether the condition still holds without one
    of them: the names a satisfied condition cannot do without.
    """

    def __init__(self, task: TaskConfig, fired: Collection[str]) -> None:
        entries: list[Entry] = list(task.after)
        if task.and_every is not None and task.and_every not in task.after_names:
            entries.append(task.and_every)
        self.need: list[int] = [len(entries)]
        self.parent: list[int] = [-1]
        self.count: list[int] = [0]
        self.leaves: dict[str, list[int]] = {}
        pending: list[tuple[tuple[Entry, ...], int]] = [(tuple(entries), 0)]
        while pending:
            members, owner = pending.pop()
            for entry in members:
                if isinstance(entry, str):
                    self.leaves.setdefault(entry, []).append(owner)
                    continue
                self.need.append(entry.need)
                self.parent.append(owner)
                self.count.append(0)
                pending.append((entry.members, len(self.need) - 1))
        for name in set(fired):
            for leaf in self.leaves.get(name, ()):
                self._change(leaf, +1)

    def _change(self, node: int, step: int) -> None:
        while node >= 0:
            before = self.count[node] >= self.need[node]
            self.count[node] += step
            if (self.count[node] >= self.need[node]) == before:
                return
            node = self.parent[node]

    @property
    def holds(self) -> bool:
        return self.count[0] >= self.need[0]

    def needs(self, name: str) -> bool:
        """True if the condition, holding now, fails without ``name``."""
        leaves = self.leaves.get(name, ())
        for leaf in leaves:
            self._change(leaf, -1)
        fails = not self.holds
        for leaf in leaves:
            self._change(leaf, +1)
        return fails


def unless_always_wins(task: TaskConfig) -> bool | None:
    """True if the ``unless`` condition holds whenever the ``after`` condition does.

    Then every instance is abandoned by the very fire that would make it ready
    (abandoning wins): the task can never run. Only names in both conditions
    matter: a fire of any other ``after`` name never helps ``unless``, a name
    only in ``unless`` never needs to fire. Both conditions are monotone, so:

    * if ``unless`` does not hold with every shared name, the task runs when all
      its ``after`` names fire: False;
    * a plain ``after`` list needs every shared name: True;
    * ``unless`` fails without any one of the names written directly in it: the
      task runs if ``after`` can do without one of them (found by counting, see
      :class:`_Counters`); for a plain ``unless`` list that decides;
    * with groups on both sides, subsets of the shared names are tried while
      that stays within :data:`MAX_SEARCH` + :data:`SEARCH_PER_NODE` * (the
      conditions' size) evaluations; None (undecided) beyond.

    Cost: O(c * d) for a task whose conditions have c names and groups, d the
    depth of its groups; the search adds at most the budget above times O(c).
    """
    if not task.unless:
        return False
    waited = after_triggers(task)
    unless_names = task.unless_triggers
    shared = [name for name in waited if name in unless_names]
    if not shared or not task.is_abandoned_by(frozenset(shared)):
        return False
    if not grouped(task, "after"):
        return True
    others = [name for name in waited if name not in unless_names]
    # Each name written directly in unless must fire for unless to hold: if after can
    # do without one of them, the task runs. Exact for a plain unless list.
    counters = _Counters(task, [*others, *shared])
    direct = [entry for entry in task.unless if isinstance(entry, str)]
    if not all(counters.needs(name) for name in direct):
        return False
    if not grouped(task, "unless"):
        return True
    size = len(waited) + len(task.unless_names) + len(group_references(task))
    budget = MAX_SEARCH + SEARCH_PER_NODE * size
    if len(shared) > MAX_SHARED_NAMES or 2 ** len(shared) > budget:
        return None
    for count in range(len(shared) + 1):
        for chosen in itertools.combinations(shared, count):
            fired = {*others, *chosen}
            if task.is_ready(fired) and not task.is_abandoned_by(fired):
                return False
    return True
