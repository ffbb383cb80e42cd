"""What a sweep or a tick of a store did: one :class:`Recovered` per due entry it read."""

from __future__ import annotations

import attrs

__all__ = ["Recovered", "RecoveryReport"]


@attrs.frozen
class Recovered:
    """What a sweep did (or, dry, would do) to one instance."""

    session: str
    instance: str
    #: ``"taken over"``, ``"dispatched again"``, ``"timer fired"``, or ``"left"`` (it
    #: moved on meanwhile).
    action: str
    #: What became of it: ``"replayed as t_x#3"``, ``"failed"``, why it was left...
    detail: str


@attrs.frozen
class RecoveryReport:
    """The outcome of one sweep."""

    actions: tuple[Recovered, ...] = ()
    #: Due entries (or, for one session, instances) looked at.
    examined: int = 0
    dry_run: bool = False

    @property
    def acted(self) -> tuple[Recovered, ...]:
        """The actions that moved an instance on (not those left alone)."""
        return tuple(a for a in self.actions if a.action != "left")
