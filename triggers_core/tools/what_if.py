"""What-if: what firing a trigger would do now, on a loaded session state (nothing is stored).

:func:`what_if` runs the engine's fire on the state (which is immutable), then
the cascade under an idealised runner
(:func:`~triggers_core.tools.simulation.run_simulation`: every scheduled
instance finishes at once with ``{}``, unless ``results`` say otherwise).
Also reachable as :func:`triggers_core.tools.explain.what_if`.

Cost: one fire plus the simulated cascade; the comparison of the end state
with the start is O(n) in the loaded instances.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from triggers_core import engine
from triggers_core.engine.state import SessionState, Status
from triggers_core.tools.simulation import Results, run_simulation

__all__ = ["WhatIf", "what_if"]


@attrs.frozen
class WhatIf:
    """What firing a trigger would do now (nothing was stored)."""

    trigger: str
    kwargs: Mapping[str, Any]
    #: The fire itself: instances it creates, schedules, abandons, and those that
    #: record the trigger but still wait for others.
    created: tuple[str, ...]
    scheduled: tuple[str, ...]
    abandoned: tuple[str, ...]
    recorded: tuple[str, ...]
    #: The cascade under an idealised runner: instances in the order they ran, the
    #: triggers fired (this one first), and the end status of every instance that
    #: the fire or its cascade created or changed.
    ran: tuple[str, ...]
    fired: tuple[str, ...]
    outcome: Mapping[str, Status]
    lines: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """As a JSON-compatible mapping."""
        return {
            "trigger": self.trigger,
            "kwargs": dict(self.kwargs),
            "created": list(self.created),
            "scheduled": list(self.scheduled),
            "abandoned": list(self.abandoned),
            "recorded": list(self.recorded),
            "cascade": {
                "ran": list(self.ran),
                "fired": list(self.fired),
                "outcome": {name: status.value for name, status in self.outcome.items()},
            },
            "lines": list(self.lines),
        }


def what_if(
    state: SessionState,
    trigger: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    now: datetime,
    results: Results | None = None,
) -> WhatIf:
    """What firing ``trigger`` with ``kwargs`` on ``state`` would do (nothing is stored).

    The fire runs through :func:`triggers_core.engine.fire`; the cascade
    through :func:`~triggers_core.tools.simulation.run_simulation` from the
    same state, where each instance scheduled finishes with ``{}`` (or what
    ``results`` say: ``{instance_or_task_name: result or Failure}``).
    Instances already scheduled or running before the fire are not run.
    Raises what the engine raises for a bad trigger name or kwargs.
    """
    fire = engine.fire(state, trigger, kwargs, now=now)
    after = fire.state.instances
    abandoned = sorted(n for n in fire.changed if after[n].status is Status.ABANDONED)
    recorded = sorted(n for n in fire.changed - fire.created if after[n].status is Status.UNSTARTED)
    simulation = run_simulation(
        state.tasks, [(trigger, kwargs)], results=results, now=now, state=state
    )
    final = simulation.state.instances
    touched = sorted(
        n for n, i in final.items() if n not in state.instances or state.instances[n] != i
    )
    outcome = {n: final[n].status for n in touched}
    result = WhatIf(
        trigger=trigger,
        kwargs=dict(kwargs or {}),
        created=tuple(sorted(fire.created)),
        scheduled=fire.scheduled,
        abandoned=tuple(abandoned),
        recorded=tuple(recorded),
        ran=simulation.ran,
        fired=simulation.fired,
        outcome=outcome,
        lines=(),
    )
    return attrs.evolve(result, lines=tuple(_what_if_words(result)))


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(names) if names else "none"


def _what_if_words(w: WhatIf) -> list[str]:
    lines = [f"firing {w.trigger!r} now would:"]
    lines.append(f"  create {_names(w.created)}")
    lines.append(f"  schedule {_names(w.scheduled)}")
    lines.append(f"  abandon {_names(w.abandoned)}")
    if w.recorded:
        lines.append(f"  record it on {_names(w.recorded)} (still waiting for other triggers)")
    if w.ran:
        lines.append("then, if every scheduled instance finished with {} (an idealised runner):")
        lines.append(f"  ran in order: {_names(w.ran)}")
        cascades = w.fired[1:]
        lines.append(f"  cascades fired: {_names(cascades)}")
        ends = ", ".join(f"{n} {s}" for n, s in w.outcome.items())
        lines.append(f"  end: {ends}")
    return lines
