"""A lint finding and its severity (shared by :mod:`.lint` and its rule modules)."""

from __future__ import annotations

import enum

import attrs

__all__ = ["Finding", "Severity"]


class Severity(enum.Enum):
    """How sure a finding is to be a bug."""

    ERROR = "error"  #: a task can never run (or a condition can never complete)
    WARNING = "warning"  #: probably a mistake
    HINT = "hint"  #: works as meant, but could be written more simply

    def __str__(self) -> str:
        return self.value


@attrs.frozen(order=True)
class Finding:
    """One lint finding: where (``path``), what (``message``), which rule, how sure."""

    path: str
    rule: str
    message: str
    severity: Severity = attrs.field(default=Severity.WARNING, order=False)

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.rule}]"

    def to_json(self) -> dict[str, str]:
        """The finding as a JSON-compatible mapping."""
        return {
            "rule": self.rule,
            "path": self.path,
            "message": self.message,
            "severity": self.severity.value,
        }
