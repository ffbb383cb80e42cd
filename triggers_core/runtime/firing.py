"""What a fire did, and the check for triggers that no task mentions.

:class:`FireResult` is what :meth:`TriggerManager.fire_result
<triggers_core.runtime.manager.TriggerManager.fire_result>` returns: the
instances a fire scheduled and, for a keyed fire, whether the engine applied
it or found it a duplicate (the engine decides, inside the same commit that
would have recorded it; nothing else is compared).

A fire of a trigger that no task of the session mentions (in ``after``,
``andEvery`` or ``unless``) changes nothing but the trigger's latest kwargs:
usually a typo (``fire("scroe")``). :func:`check_known` looks the name up in
the task table's trigger index (O(1)); a strict fire raises
:class:`~triggers_core.errors.UnknownTriggerError` before anything is
written, any other fire from the application logs one WARNING per process
and trigger on the ``triggers.fire`` logger, with "did you mean" when a
mentioned trigger is close. Cascades (a finished task's name) never pass
through here, so they never warn.
"""

from __future__ import annotations

import difflib
import logging
import threading

import attrs

from triggers_core.engine.state import TaskInstance
from triggers_core.engine.task_table import TaskTable
from triggers_core.errors import UnknownTriggerError

__all__ = ["UNKNOWN_TRIGGER_LOGGER", "FireResult", "check_known", "unknown_trigger_hint"]

#: The logger of the warning about a trigger no task mentions.
UNKNOWN_TRIGGER_LOGGER = "triggers.fire"
#: Warned-about trigger names kept per process; past this many, no more warnings.
MAX_WARNED = 10_000

log = logging.getLogger(UNKNOWN_TRIGGER_LOGGER)
_warned: set[str] = set()
_warned_lock = threading.Lock()


@attrs.frozen
class FireResult:
    """What one fire did."""

    #: The instances it scheduled, as committed (for a duplicate: those the first
    #: fire with the key scheduled, read again from the storage).
    scheduled: list[TaskInstance]
    #: A keyed fire the session had already applied: this one changed nothing.
    duplicate: bool = False


def _mentioned(tasks: TaskTable) -> set[str]:
    names: set[str] = set()
    for task in tasks.values():
        names.update(task.after_names, task.unless_names)
        if task.and_every is not None:
            names.add(task.and_every)
    return names


def unknown_trigger_hint(tasks: TaskTable, trigger: str) -> str:
    """``"; did you mean 'score'?"`` when a mentioned trigger is close, else ""."""
    close = difflib.get_close_matches(trigger, sorted(_mentioned(tasks)), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_known(tasks: TaskTable, trigger: str, session: str, *, strict: bool) -> None:
    """Raise (``strict``) or warn once per process if no task mentions ``trigger``."""
    if tasks.using(trigger):
        return
    if strict:
        raise UnknownTriggerError(trigger, session, unknown_trigger_hint(tasks, trigger))
    with _warned_lock:
        if trigger in _warned or len(_warned) >= MAX_WARNED:
            return
        _warned.add(trigger)
    log.warning(
        "fired %r in session %r, but no task mentions it (in after, andEvery or unless), so "
        "it does nothing%s; pass strict=True to make this an error",
        trigger,
        session,
        unknown_trigger_hint(tasks, trigger),
    )
