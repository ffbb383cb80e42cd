"""Names a reader would take for one another, found without comparing every pair.

:func:`confusable` says whether two names differ only by case or by one edit
(an insertion, deletion, substitution or adjacent swap; numbered names such as
``page1``/``page2`` and names shorter than 5 characters differ on purpose).
:class:`NameIndex` finds, for one name, the indexed names confusable with it,
from two hash tables built once:

* the names by their case-folded form;
* the names by each *deletion form*: the name itself and the name with one
  character removed. Two names one edit apart always share a deletion form
  (a substitution at ``i``: both without ``i``; an insertion: the longer one
  without it is the shorter; an adjacent swap of ``i``/``i+1``: the first
  without ``i``, the second without ``i + 1``).

Cost: building is O(n * L^2) time and O(n * L) memory for n names of at most
L = :data:`MAX_EDIT_LENGTH` characters (each of the L forms of a name is
built and hashed); a lookup is O(L^2 + C * L): at most C =
:data:`MAX_CANDIDATES` candidates, each a name that the position of the
difference says may be one edit away, are compared in full.
So a whole configuration is checked in O(n), not O(n^2). Names longer than
:data:`MAX_EDIT_LENGTH` are matched by case only; a name with more than
:data:`MAX_CANDIDATES` near neighbours is compared with the first ones in
sorted order only (a configuration with that many near-identical names is
reported on those).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

__all__ = ["MAX_CANDIDATES", "MAX_EDIT_LENGTH", "NameIndex", "confusable", "one_edit"]

#: Names longer than this are compared by case only.
MAX_EDIT_LENGTH = 64
#: At most this many candidates are checked per lookup.
MAX_CANDIDATES = 64


def one_edit(a: str, b: str) -> bool:
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


def confusable(a: str, b: str) -> bool:
    """Names a reader would take for one another: same letters but for case, or one edit.

    Numbered names (``page1``/``page2``) and very short ones (``t_a``/``t_b``)
    differ on purpose.
    """
    if a == b:
        return False
    if a.lower() == b.lower():
        return True
    if max(len(a), len(b)) < 5 or not one_edit(a, b):
        return False
    if len(a) == len(b):
        diff = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
        if len(diff) == 1 and diff[0][0].isdigit() and diff[0][1].isdigit():
            return False
    return True


def _removals(name: str) -> Iterator[tuple[int, int, bool]]:
    """``(hash of the name without character i, i, whether that character is a digit)``."""
    for i in range(len(name)):
        yield hash(name[:i] + name[i + 1 :]), i, name[i].isdigit()


class NameIndex:
    """The names of a configuration, looked up by what they could be confused with.

    Forms are kept as hashes (a collision only adds a candidate, which the
    full comparison then rejects), and by the position and kind of the
    character removed, so that a lookup meets only names that may be one
    edit away: the crowd of numbered names (``step001``, ``step002``, ...)
    that share forms is never compared at all.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self._folded: dict[str, list[str]] = {}
        self._names: dict[int, list[str]] = {}
        #: The names that give this form when one character is removed (insertions).
        self._shorter: dict[int, list[str]] = {}
        #: (form, position, removed a digit) -> names (substitutions and swaps).
        self._at: dict[tuple[int, int, bool], list[str]] = {}
        for name in sorted(set(names)):
            self._folded.setdefault(name.lower(), []).append(name)
            if len(name) > MAX_EDIT_LENGTH:
                continue
            self._names.setdefault(hash(name), []).append(name)
            for form, i, digit in _removals(name):
                self._shorter.setdefault(form, []).append(name)
                self._at.setdefault((form, i, digit), []).append(name)

    def _candidates(self, name: str) -> Iterator[str]:
        yield from self._shorter.get(hash(name), ())  # one character inserted
        for form, i, digit in _removals(name):
            yield from self._names.get(form, ())  # one character deleted
            yield from self._at.get((form, i, False), ())  # substituted (by a non-digit)
            if not digit:
                yield from self._at.get((form, i, True), ())  # a digit for a non-digit
            for j in (i - 1, i + 1):  # adjacent characters swapped: other[j] is name[i]
                for removed_digit in (False, True):
                    for other in self._at.get((form, j, removed_digit), ()):
                        if len(other) == len(name) and 0 <= j < len(other) and other[j] == name[i]:
                            yield other

    def confusable_with(self, name: str) -> list[str]:
        """The indexed names :func:`confusable` with ``name``, sorted (``name`` excluded)."""
        found = {other for other in self._folded.get(name.lower(), ()) if other != name}
        if len(name) > MAX_EDIT_LENGTH:
            return sorted(found)
        for checked, other in enumerate(self._candidates(name)):
            if checked >= MAX_CANDIDATES:
                break
            if other != name and other not in found and confusable(name, other):
                found.add(other)
        return sorted(found)
