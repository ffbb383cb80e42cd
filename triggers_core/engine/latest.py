"""The latest kwargs of a session's triggers, each read only when an operation asks for it.

Every fire records its kwargs as its trigger's latest kwargs, and only a fire
that creates an instance reads any back (to seed the instance with the latest
kwargs of its task's other ``after`` triggers). So one large payload, of a
trigger no task uses, must not make later operations pay for its size.
A storage hands the engine a :class:`LatestKwargs`: it knows every trigger
that has latest kwargs (membership costs nothing) and reads a value through
the storage's ``load`` only when the engine (or an inspecting caller) asks for
that value. The engine records a fire with :meth:`LatestKwargs.updated`,
which loads nothing, and the storage that made it writes back only the
triggers in :attr:`LatestKwargs.changed`.

Pure: the loader is the storage's, called only on access; a value it returns
belongs to the snapshot the mapping was made for (a storage raises
:class:`~triggers_core.errors.ConflictError` from it if that snapshot is gone,
and the operation starts over).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

__all__ = ["LatestKwargs", "Loader"]

#: Reads the stored latest kwargs of one trigger (a private copy).
Loader = Callable[[str], Mapping[str, Any]]


class LatestKwargs(Mapping[str, Mapping[str, Any]]):
    """Trigger -> its latest kwargs, read on first access (see the module docstring).

    ``source`` names the stored session the values come from (a storage compares
    it with its own before it trusts :attr:`changed`: a mapping from elsewhere is
    written in full).
    """

    __slots__ = ("_changed", "_load", "_names", "_values", "source")

    def __init__(
        self,
        names: Iterable[str],
        load: Loader,
        *,
        source: object,
        values: Mapping[str, Mapping[str, Any]] | None = None,
        changed: frozenset[str] = frozenset(),
    ) -> None:
        self._names: dict[str, None] = dict.fromkeys(names)
        self._load = load
        self._values: dict[str, Mapping[str, Any]] = dict(values or {})
        self._changed = changed
        self.source = source

    def __getitem__(self, trigger: str) -> Mapping[str, Any]:
        found = self._values.get(trigger)
        if found is not None:
            return found
        if trigger not in self._names:
            raise KeyError(trigger)
        value = self._values[trigger] = self._load(trigger)
        return value

    def __contains__(self, trigger: object) -> bool:
        return trigger in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"<LatestKwargs of {len(self._names)} triggers, {len(self._values)} read>"

    @property
    def changed(self) -> frozenset[str]:
        """The triggers whose kwargs were set since the storage made the mapping."""
        return self._changed

    @property
    def read(self) -> frozenset[str]:
        """The triggers whose kwargs are in memory (read, or set)."""
        return frozenset(self._values)

    def updated(self, trigger: str, kwargs: Mapping[str, Any]) -> LatestKwargs:
        """A new mapping with ``trigger``'s kwargs set (nothing is read)."""
        names = dict(self._names)
        names[trigger] = None
        values = dict(self._values)
        values[trigger] = kwargs
        return LatestKwargs(
            names,
            self._load,
            source=self.source,
            values=values,
            changed=self._changed | {trigger},
        )
