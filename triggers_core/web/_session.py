"""What a session page shows, read without loading the session's history.

A session of 10,000 instances is mostly history (resolved instances that
never change). The page reads the session's header and its *unresolved*
instances (one indexed read: failed, running, scheduled, unstarted), and
then only the page of instances it draws, by name: names are ``{task}#{n}``
with ``n`` below the task's counter, so the header alone says which exist.

Order of the table: the unresolved instances first (oldest first: what
needs attention), then the others by task and newest first. The counts
are per status for unresolved instances and one number for the resolved
ones. Filtering by a resolved status (``finished``, ``skipped``...) is the
one view that reads the whole session, and says so.

Cost: O(u log u + n) for u unresolved instances and n instances in all
(names only), plus reading one page of instances.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import attrs

from triggers_core.engine.scopes import Scope
from triggers_core.engine.state import SessionState, TaskInstance
from triggers_core.runtime.storage import UNRESOLVED, Storage

__all__ = ["SessionView", "read_session"]

#: Statuses a filter can find among the unresolved instances alone.
_UNRESOLVED_VALUES = frozenset({"failed", "running", "scheduled", "unstarted"})


@attrs.frozen
class SessionView:
    """One page of a session's instances and what the page says about the rest."""

    header: SessionState
    #: Instances of the page, in table order.
    shown: tuple[TaskInstance, ...]
    #: The shown instances and their originals (for the timeline's "retry of").
    known: Mapping[str, TaskInstance]
    #: Unresolved instances (all of them), and their count per status.
    unresolved: tuple[TaskInstance, ...]
    counts: Mapping[str, int]
    total: int
    #: Per task: how many instances in all, and unresolved ones per status.
    by_task: Mapping[str, tuple[int, Counter[str]]]
    matching: int
    page: int
    pages: int
    #: The whole session was read (a filter by a resolved status).
    read_all: bool = False


def _created(instance: TaskInstance) -> tuple[str, str, int]:
    created = instance.metadata.get("created")
    return (created if isinstance(created, str) else "", instance.task_name, instance.number)


def _names_of(counters: Mapping[str, int], tasks: Sequence[str]) -> list[str]:
    """Every instance name the counters say exist, by task, newest first."""
    return [f"{task}#{n}" for task in tasks for n in range(counters.get(task, 0) - 1, -1, -1)]


def read_session(storage: Storage, *, status: str, task: str, page: int, size: int) -> SessionView:
    """The view of ``storage``'s session for a page of the instance table."""
    snapshot = storage.load(UNRESOLVED).state
    unresolved = sorted((i for i in snapshot.instances.values() if not i.is_resolved), key=_created)
    counts = Counter(i.status.value for i in unresolved)
    counters = snapshot.counters
    total = sum(counters.values())
    tasks = sorted({*snapshot.tasks, *counters})
    by_task = {
        name: (
            counters.get(name, 0),
            Counter(i.status.value for i in unresolved if i.task_name == name),
        )
        for name in tasks
    }
    if status and status not in _UNRESOLVED_VALUES:
        return _read_all(
            storage,
            snapshot=snapshot,
            unresolved=unresolved,
            counts=counts,
            total=total,
            by_task=by_task,
            status=status,
            task=task,
            page=page,
            size=size,
        )
    wanted = [i for i in unresolved if (not status or i.status.value == status)]
    wanted = [i for i in wanted if not task or i.task_name == task]
    order: list[str | TaskInstance] = list(wanted)
    if not status:
        seen = {i.name for i in unresolved}
        order += [n for n in _names_of(counters, [task] if task else tasks) if n not in seen]
    pages = max(1, -(-len(order) // size))
    page = min(page, pages)
    window = order[(page - 1) * size : page * size]
    names = frozenset(n for n in window if isinstance(n, str))
    loaded = storage.load(Scope(names=names)).state.instances if names else {}
    shown = [
        i if isinstance(i, TaskInstance) else loaded[i]
        for i in window
        if not isinstance(i, str) or i in loaded
    ]
    known = _with_originals(storage, shown, {**snapshot.instances, **loaded})
    return SessionView(
        snapshot,
        tuple(shown),
        known,
        tuple(unresolved),
        counts,
        total,
        by_task,
        len(order),
        page,
        pages,
    )


def _with_originals(
    storage: Storage, shown: Sequence[TaskInstance], known: Mapping[str, TaskInstance]
) -> dict[str, TaskInstance]:
    """``known`` plus the originals of the shown clones that are not loaded yet."""
    found = dict(known)
    missing = frozenset(
        parent
        for i in shown
        if isinstance(parent := i.metadata.get("parent"), str) and parent not in found
    )
    if missing:
        found.update(storage.load(Scope(names=missing)).state.instances)
    return found


def _read_all(
    storage: Storage,
    *,
    snapshot: SessionState,
    unresolved: list[TaskInstance],
    counts: Counter[str],
    total: int,
    by_task: Mapping[str, tuple[int, Counter[str]]],
    status: str,
    task: str,
    page: int,
    size: int,
) -> SessionView:
    every = storage.load_full().state.instances
    chosen = sorted(
        (
            i
            for i in every.values()
            if i.status.value == status and (not task or i.task_name == task)
        ),
        key=_created,
    )
    pages = max(1, -(-len(chosen) // size))
    page = min(page, pages)
    shown = chosen[(page - 1) * size : page * size]
    return SessionView(
        snapshot,
        tuple(shown),
        every,
        tuple(unresolved),
        counts,
        total,
        by_task,
        len(chosen),
        page,
        pages,
        read_all=True,
    )
