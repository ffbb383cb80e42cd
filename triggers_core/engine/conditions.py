"""Condition groups: what ``after`` and ``unless`` entries may say besides a trigger name.

An entry of ``after`` or ``unless`` is a trigger name or a :class:`Group`:

* ``{"anyOf": [entries...]}``: satisfied once any one member is satisfied;
* ``{"atLeast": N, "of": [entries...]}``: satisfied once N distinct members
  are satisfied (``1 <= N <=`` the number of members).

Members are entries again (names or groups), nested at most
:data:`MAX_GROUP_DEPTH` groups deep. A list of entries (``after`` itself, or
``unless``) is satisfied when *every* entry is: a plain list of names keeps
meaning "all of these". A trigger name is satisfied once the instance has
recorded it.

Conditions are monotone: recording more triggers never unsatisfies one. The
engine therefore only asks "is it satisfied *now*?" after each fire.

Everything here is pure. Parsing is bounded by :data:`MAX_GROUP_DEPTH`, so a
hostile configuration nested thousands deep is refused, never recursed into.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Set
from typing import Any

import attrs

from triggers_core.engine.names import named_problem

__all__ = [
    "GROUP_KEYS",
    "MAX_GROUP_DEPTH",
    "Entry",
    "Group",
    "all_satisfied",
    "entry_from_json",
    "entry_names",
    "entry_satisfied",
    "entry_to_json",
    "names_of",
    "parse_entries",
]

#: How deep groups may nest: a group in ``after`` is at depth 1, a group inside it at 2.
MAX_GROUP_DEPTH = 8

#: The keys a group mapping may have, by the form it takes.
GROUP_KEYS = (frozenset({"anyOf"}), frozenset({"atLeast", "of"}))

_GROUP_FORMS = '{"anyOf": [...]} or {"atLeast": N, "of": [...]}'


@attrs.frozen
class Group:
    """``anyOf`` (``at_least`` None) or ``atLeast: at_least`` of ``members``.

    Build groups with :func:`parse_entries` (which validates them); a group
    constructed directly is trusted as given.
    """

    members: tuple[Entry, ...]
    #: N of ``{"atLeast": N, "of": [...]}``; None for ``{"anyOf": [...]}``.
    at_least: int | None = None

    @property
    def need(self) -> int:
        """How many members must be satisfied (1 for ``anyOf``)."""
        return 1 if self.at_least is None else self.at_least

    def satisfied(self, recorded: Collection[str]) -> bool:
        """True once :attr:`need` members are satisfied by ``recorded`` trigger names."""
        need = self.need
        for member in self.members:
            if entry_satisfied(member, recorded):
                need -= 1
                if need == 0:
                    return True
        return False

    def to_json(self) -> dict[str, Any]:
        """The group's JSON form (parses back equal)."""
        members = [entry_to_json(m) for m in self.members]
        if self.at_least is None:
            return {"anyOf": members}
        return {"atLeast": self.at_least, "of": members}


#: An ``after``/``unless`` entry: a trigger name or a group.
Entry = str | Group


def entry_satisfied(entry: Entry, recorded: Collection[str]) -> bool:
    """True if the name is in ``recorded``, or the group is satisfied by it."""
    if isinstance(entry, str):
        return entry in recorded
    return entry.satisfied(recorded)


def all_satisfied(entries: Iterable[Entry], recorded: Collection[str]) -> bool:
    """True if every entry is satisfied by ``recorded`` (a list means "all of")."""
    return all(entry_satisfied(entry, recorded) for entry in entries)


def entry_names(entry: Entry) -> Iterator[str]:
    """Every trigger name in ``entry``, depth first, in the order written."""
    if isinstance(entry, str):
        yield entry
        return
    stack: list[Iterator[Entry]] = [iter(entry.members)]
    while stack:
        member = next(stack[-1], None)
        if member is None:
            stack.pop()
        elif isinstance(member, str):
            yield member
        else:
            stack.append(iter(member.members))


def names_of(entries: Iterable[Entry]) -> tuple[str, ...]:
    """Every trigger name in ``entries``, each once, in the order first written."""
    seen: dict[str, None] = {}
    for entry in entries:
        for name in entry_names(entry):
            seen.setdefault(name, None)
    return tuple(seen)


def entry_to_json(entry: Entry) -> str | dict[str, Any]:
    """An entry's JSON form: the name itself, or the group mapping."""
    return entry if isinstance(entry, str) else entry.to_json()


def entry_from_json(value: object, path: str = "entry") -> Entry:
    """Parse one entry; :class:`ValueError` listing its problems (with ``path``)."""
    problems: list[str] = []
    entry = _entry(value, path, problems, 0)
    if problems or entry is None:
        raise ValueError("; ".join(problems))
    return entry


def parse_entries(
    value: object, path: str, problems: list[str], *, what: str = "trigger names"
) -> tuple[Entry, ...] | None:
    """Validate a list of entries; keep order, drop repeated entries (as plain lists did).

    Appends every problem (prefixed by its path) to ``problems`` and returns
    None if there was any. A set is accepted for a list of names (sorted, so the
    result does not depend on hashing); groups need lists.
    """
    if isinstance(value, str):
        problems.append(f"{path}: expected a list of {what}, got a single string")
        return None
    if isinstance(value, Set):
        items: list[object] = sorted(value, key=repr)
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        problems.append(f"{path}: expected a list of {what}, got {type(value).__name__}")
        return None
    before = len(problems)
    entries: dict[Entry, None] = {}  # ordered, and linear however long the list
    for i, item in enumerate(items):
        entry = _entry(item, f"{path}[{i}]", problems, 0)
        if entry is not None:
            entries.setdefault(entry, None)
    return tuple(entries) if len(problems) == before else None


def _entry(value: object, path: str, problems: list[str], depth: int) -> Entry | None:
    if isinstance(value, str):
        problem = named_problem(value, "trigger name")
        if problem is not None:
            problems.append(f"{path}: {problem}")
            return None
        return value
    if isinstance(value, Mapping):
        return _group(value, path, problems, depth + 1)
    problems.append(
        f"{path}: expected a trigger name or a group ({_GROUP_FORMS}), got {type(value).__name__}"
    )
    return None


def _integer_text(value: int) -> str:
    """``value`` as written, or its size when it is too long to show (or to format at all:
    ``str()`` refuses integers of more than 4,300 digits)."""
    if -(10**18) < value < 10**18:
        return str(value)
    sign = "a negative" if value < 0 else "an"
    return f"{sign} integer of {value.bit_length()} bits"


def _group(value: Mapping[Any, Any], path: str, problems: list[str], depth: int) -> Group | None:
    if depth > MAX_GROUP_DEPTH:
        problems.append(
            f"{path}: groups nest too deep (at most {MAX_GROUP_DEPTH} groups inside one another)"
        )
        return None
    keys = set(value)
    if "anyOf" in keys:
        form, members_key = GROUP_KEYS[0], "anyOf"
    elif "atLeast" in keys or "of" in keys:
        form, members_key = GROUP_KEYS[1], "of"
    else:
        shown = ", ".join(repr(k) for k in value) or "no keys"
        hint = ""
        for key in value:
            folded = str(key).replace("_", "").replace("-", "").replace(" ", "").lower()
            if folded in ("anyof", "atleast"):
                hint = f"; did you mean {'anyOf' if folded == 'anyof' else 'atLeast'!r}?"
                break
        problems.append(
            f"{path}: not a group ({shown}){hint}; a group is {_GROUP_FORMS} "
            '(for "all of" inside a group, use atLeast with N = the number of members)'
        )
        return None
    before = len(problems)
    for key in value:
        if key not in form:
            allowed = " and ".join(repr(k) for k in sorted(form))
            problems.append(f"{path}: unknown key {key!r} in a group (this form takes {allowed})")
    for key in sorted(form - keys):
        problems.append(f"{path}.{key}: required in a group of the form {_GROUP_FORMS}")
    members_path = f"{path}.{members_key}"
    raw_members = value.get(members_key)
    members: list[Entry] | None = None
    if members_key in value:
        if not isinstance(raw_members, list | tuple):
            problems.append(
                f"{members_path}: expected a list of members, got {type(raw_members).__name__}"
            )
        elif not raw_members:
            problems.append(f"{members_path}: a group must have at least one member")
        else:
            members = []
            seen: set[Entry] = set()
            for i, item in enumerate(raw_members):
                member = _entry(item, f"{members_path}[{i}]", problems, depth)
                if member is None:
                    continue
                if member in seen:
                    problems.append(
                        f"{members_path}[{i}]: repeats member {entry_to_json(member)!r}; "
                        "each member counts once"
                    )
                    continue
                seen.add(member)
                members.append(member)
    at_least: int | None = None
    if members_key == "of" and "atLeast" in value:
        raw = value["atLeast"]
        count = len(raw_members) if isinstance(raw_members, list | tuple) else None
        if not isinstance(raw, int) or isinstance(raw, bool):
            problems.append(f"{path}.atLeast: expected an integer N, got {type(raw).__name__}")
        elif count is not None and count and not 1 <= raw <= count:
            problems.append(
                f"{path}.atLeast: must be from 1 to {count} (the number of members), "
                f"got {_integer_text(raw)}"
            )
        elif count is not None and raw < 1:
            problems.append(f"{path}.atLeast: must be at least 1, got {_integer_text(raw)}")
        else:
            at_least = raw
    if len(problems) > before or members is None:
        return None
    return Group(tuple(members), at_least)
