"""The pure engine: ``operation(state, input, now=...) -> Transition(state, effects)``.

Everything here is a function of its arguments: no I/O, no clock (time comes in
as ``now``), no threads, no logging, no environment, no randomness. An
operation either raises (the input does not apply to the state, and nothing
changes: the error names the instance and its status) or returns a
:class:`Transition` holding the new state, what changed, and the effects the
shell performs *after* committing it. An import-linter contract
(``pyproject.toml``) keeps it so.

The modules, bottom up: :mod:`.names` and :mod:`.values` (what may be stored),
:mod:`.levels`, :mod:`.conditions`, :mod:`.graph` and :mod:`.config` (the
configuration), :mod:`.task_table`, :mod:`.idempotency`, :mod:`.state`,
:mod:`.effects`, :mod:`.scopes` (what each operation reads and writes),
:mod:`.serialization` (the stored JSON), :mod:`.transition` (the builder
every operation shares), then the operations: :mod:`.fire`,
:mod:`.recovery` (replay, skip), :mod:`.running` (start, finish, fail,
retry), :mod:`.timers` (``within``, ``onMiss`` and ``delay``: time as an
input), :mod:`.manual` (an operator's tools) and :mod:`.reconfigure`.
"""

from __future__ import annotations

from triggers_core.engine.fire import check_trigger_name, fire, fire_checked
from triggers_core.engine.manual import (
    fail_by_operator,
    mark_logs_resolved,
    update_metadata,
    update_status,
)
from triggers_core.engine.reconfigure import update_configuration
from triggers_core.engine.recovery import redispatch, replay_failed, skip_failed, take_over
from triggers_core.engine.running import fail, finish, mark_running, retry_self, skip_self
from triggers_core.engine.timers import advance, next_timer, timer_scope
from triggers_core.engine.transition import (
    CASCADE_DEPTH_EXCEEDED_TYPE,
    DEFAULT_MAX_CASCADE_DEPTH,
    MAX_COOLDOWN,
    MAX_RETRIES_EXCEEDED_TYPE,
    RETRY_TYPE,
    Transition,
    check_cooldown,
    task_kwargs,
)

__all__ = [
    "CASCADE_DEPTH_EXCEEDED_TYPE",
    "DEFAULT_MAX_CASCADE_DEPTH",
    "MAX_COOLDOWN",
    "MAX_RETRIES_EXCEEDED_TYPE",
    "RETRY_TYPE",
    "Transition",
    "advance",
    "check_cooldown",
    "check_trigger_name",
    "fail",
    "fail_by_operator",
    "finish",
    "fire",
    "fire_checked",
    "mark_logs_resolved",
    "mark_running",
    "next_timer",
    "redispatch",
    "replay_failed",
    "retry_self",
    "skip_failed",
    "skip_self",
    "take_over",
    "task_kwargs",
    "timer_scope",
    "update_configuration",
    "update_metadata",
    "update_status",
]
