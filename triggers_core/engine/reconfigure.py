"""Reconfiguration: add or replace tasks by name; other tasks stay."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from triggers_core.engine.config import TaskConfig, cycle_problems, parse_configuration
from triggers_core.engine.scopes import settled_of, unsettled_of
from triggers_core.engine.state import SessionState
from triggers_core.engine.transition import Transition
from triggers_core.errors import ConfigurationError

__all__ = ["update_configuration"]


def update_configuration(state: SessionState, config: Mapping[str, Any]) -> Transition:
    """Add or replace tasks by name; other tasks stay. Never re-applies old triggers.

    ``config`` is either raw directives (validated all-or-nothing) or
    already-parsed :class:`TaskConfig` values. ``state`` must hold every
    unstarted instance of the tasks replaced: their ``unsettled`` and
    ``settled`` sets are recomputed against the new configuration.
    """
    if (
        isinstance(config, Mapping)
        and config
        and all(isinstance(v, TaskConfig) for v in config.values())
    ):
        parsed: dict[str, TaskConfig] = {}
        problems = []
        for key, value in config.items():
            if key != value.name:
                problems.append(f"{key}: key does not match TaskConfig name {value.name!r}")
            parsed[key] = value
        if problems:
            raise ConfigurationError(problems)
    else:
        parsed = parse_configuration(config)
    merged = state.tasks.replaced(parsed)
    problems = cycle_problems(merged)  # the new tasks may close a cycle with stored ones
    if problems:
        raise ConfigurationError(problems)
    if not any(state.tasks.get(name) != task for name, task in parsed.items()):
        return Transition(state)
    unsettled = {name: v for name, v in state.unsettled.items() if name not in parsed}
    for name, names in unsettled_of(parsed, state.instances.values()).items():
        unsettled[name] = names
    settled = {name: v for name, v in state.settled.items() if name not in parsed}
    settled.update(settled_of(parsed, state.instances.values()))
    return Transition(
        attrs.evolve(state, tasks=merged, unsettled=unsettled, settled=settled),
        config_changed=True,
    )
