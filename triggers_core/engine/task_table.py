"""The session's task configuration as an immutable table with a trigger index.

A fire of trigger ``X`` only concerns the tasks that use ``X``; finding them
by scanning every task makes a fire's cost grow with the size of the
configuration (and a fire that reaches every task quadratic in it). A
:class:`TaskTable` builds its index trigger -> task names once, on first use,
and keeps it for as long as the table lives: storages keep one table per
configuration, so the index is built once per configuration, not per fire.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from triggers_core.engine.config import TaskConfig

__all__ = ["TaskTable"]


class TaskTable(Mapping[str, TaskConfig]):
    """Task name -> :class:`TaskConfig`, immutable, with :meth:`using` indexed.

    Compares equal to any mapping with the same items, so plain dicts of
    :class:`TaskConfig` work wherever a table is expected.
    """

    __slots__ = ("_index", "_on_miss", "_renewed", "_tasks")

    def __init__(self, tasks: Mapping[str, TaskConfig] | None = None) -> None:
        self._tasks: dict[str, TaskConfig] = dict(tasks or {})
        self._index: dict[str, tuple[str, ...]] | None = None
        self._renewed: dict[str, frozenset[str]] = {}
        self._on_miss: bool | None = None

    @property
    def has_on_miss(self) -> bool:
        """True if some task has an ``onMiss`` trigger (an expiry may fire it)."""
        found = self._on_miss
        if found is None:
            found = self._on_miss = any(t.on_miss is not None for t in self._tasks.values())
        return found

    @classmethod
    def of(cls, tasks: Mapping[str, TaskConfig]) -> TaskTable:
        """``tasks`` itself if it already is a table, else a table of it."""
        return tasks if isinstance(tasks, TaskTable) else cls(tasks)

    def using(self, trigger: str) -> tuple[str, ...]:
        """Names of the tasks whose after/andEvery/unless use ``trigger``, sorted."""
        index = self._index
        if index is None:
            # Concurrent first calls may both build it; the results are equal.
            index = self._build_index()
        return index.get(trigger, ())

    def renewed_by(self, trigger: str) -> frozenset[str]:
        """Names of the tasks whose ``andEvery`` trigger is ``trigger``."""
        if self._index is None:
            self._build_index()
        return self._renewed.get(trigger, frozenset())

    def _build_index(self) -> dict[str, tuple[str, ...]]:
        found: dict[str, set[str]] = {}
        renewed: dict[str, set[str]] = {}
        for name, task in self._tasks.items():
            triggers = {*task.after_names, *task.unless_names}
            if task.and_every is not None:
                triggers.add(task.and_every)
                renewed.setdefault(task.and_every, set()).add(name)
            for trigger in triggers:
                found.setdefault(trigger, set()).add(name)
        self._renewed = {trigger: frozenset(names) for trigger, names in renewed.items()}
        index = self._index = {trigger: tuple(sorted(names)) for trigger, names in found.items()}
        return index

    def replaced(self, tasks: Mapping[str, TaskConfig]) -> TaskTable:
        """A new table: these tasks added or replaced by name, the others kept."""
        return TaskTable({**self._tasks, **tasks})

    def __getitem__(self, name: str) -> TaskConfig:
        return self._tasks[name]

    def get(self, name: str, default: Any = None) -> Any:
        """``table[name]``, or ``default`` if there is no such task."""
        return self._tasks.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TaskTable):
            return self._tasks == other._tasks
        if isinstance(other, Mapping):
            return self._tasks == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment] # a mapping; equal to dicts, so unhashable

    def __repr__(self) -> str:
        return f"TaskTable({self._tasks!r})"

    def __getstate__(self) -> tuple[dict[str, TaskConfig]]:
        return (self._tasks,)  # the index is rebuilt on demand (a tuple: never falsy)

    def __setstate__(self, state: tuple[dict[str, TaskConfig]]) -> None:
        self._tasks = state[0]
        self._index = None
        self._renewed = {}
        self._on_miss = None
