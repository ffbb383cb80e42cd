"""Lint rules for time conditions (``within``, ``onMiss``, ``delay``); see :mod:`.lint`."""

from __future__ import annotations

from collections.abc import Mapping

from triggers_core.engine.config import TaskConfig
from triggers_core.tools.lint_finding import Finding, Severity

__all__ = ["TIME_RULES", "time_findings"]

#: Rule id -> what it reports.
TIME_RULES: Mapping[str, str] = {
    "delay-longer-than-within": "a task waits within a window for a task delayed at least as "
    "long as the window",
    "unused-on-miss": "an onMiss trigger that no task uses",
    "window-never-met": "a window waits for a cascade that only its own expiry can start",
}


def _needs(tasks: Mapping[str, TaskConfig], start: str) -> set[str]:
    """Every trigger ``start`` waits for, through the cascades of the tasks it waits for."""
    seen: set[str] = set()
    pending = [start]
    while pending:
        task = tasks.get(pending.pop())
        if task is None:
            continue
        for trigger in task.required_triggers:
            if trigger not in seen:
                seen.add(trigger)
                pending.append(trigger)
    return seen


def time_findings(tasks: Mapping[str, TaskConfig]) -> list[Finding]:
    """The findings of :data:`TIME_RULES` for ``tasks``. Cost: linear in the configuration
    per timed task (a walk through its cascades)."""
    findings: list[Finding] = []
    used = {t for task in tasks.values() for t in (*task.required_triggers, *task.unless_names)}
    for name, task in sorted(tasks.items()):
        if task.on_miss is not None and task.on_miss not in used:
            findings.append(
                Finding(
                    f"{name}.onMiss",
                    "unused-on-miss",
                    f"{task.on_miss!r} fires when a window of {name} runs out, but no task "
                    "uses it (after, andEvery or unless): nothing reacts to the miss",
                    Severity.WARNING,
                )
            )
        if task.within is None:
            continue
        for trigger in task.after_names:
            other = tasks.get(trigger)
            delay = None if other is None else other.delay
            if delay is not None and delay.delta >= task.within.delta:
                findings.append(
                    Finding(
                        f"{name}.within",
                        "delay-longer-than-within",
                        f"{name} waits for {trigger} within {task.within.text}, but "
                        f"{trigger} is delayed {delay.text} once ready: a window "
                        f"opened before {trigger} is ready can never be met by it",
                        Severity.WARNING,
                    )
                )
            if (
                task.on_miss is not None
                and other is not None
                and task.on_miss in _needs(tasks, trigger)
            ):
                findings.append(
                    Finding(
                        f"{name}.within",
                        "window-never-met",
                        f"{name} waits for {trigger}, which waits for {task.on_miss!r}, the "
                        f"onMiss of {name} itself: it fires only when the window has already "
                        "run out, so the window it opens is never met by it",
                        Severity.ERROR,
                    )
                )
    return findings
