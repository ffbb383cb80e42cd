"""What an operation reads (:class:`Scope`) and writes (:class:`Changes`).

A storage loads the session *header* (tasks, latest kwargs, counters,
``unsettled`` and ``settled``) plus the instances a :class:`Scope` asks for, and writes the
header plus the instances named by :class:`Changes`. These rules say which
instances each operation can read or change, so that computing it on that
narrow working set gives exactly the result it would give on the whole
session (``tests/core/test_scopes.py`` proves it for random sessions).

A fire of trigger ``X`` reaches the tasks that use ``X`` (``TaskTable.using``).
For each such task ``T``:

* if ``X`` is only ``T``'s ``andEvery`` trigger, an unstarted instance that
  already recorded ``X`` stays exactly as it is unless it is already complete
  or abandonable (possible after a configuration change or a forced status),
  so the fire needs only ``T``'s *unsettled* instances (see
  :class:`~triggers_core.engine.state.SessionState`): normally none;
* if ``X`` is one of ``T``'s ``unless`` triggers, or one of its ``after``
  triggers other than its ``andEvery``, the fire may record ``X`` on any
  unstarted instance of ``T``: it needs *every unstarted instance of T*,
  unless the header says that every one of them has already recorded ``X``
  (``X`` is in ``T``'s *settled* triggers): then, as above, it needs only
  ``T``'s unsettled instances. A repeat fire of a trigger that many tasks wait
  for therefore reads none of their waiting instances.

``settled`` is conservative (it may miss a trigger, never claim one falsely)
and deterministic given the header and the transition, so that the narrowed
computation keeps it exactly as the full one does: putting an unstarted
instance of ``T`` keeps only the triggers that instance has recorded; a fire
that read every unstarted instance of ``T`` (``X`` was not settled), and
``update_configuration`` replacing ``T``, recompute it from all of them.

A finish, ``skip_failed(cascade=True)`` or ``update_status(cascade=True)``
needs its instance plus what a fire of the instance's task name needs; every
other instance operation needs only its instance. ``update_configuration``
needs the unstarted instances of the tasks it replaces, to recompute their
``unsettled`` and ``settled`` sets against the new configuration. Resolved history is never
needed, except an instance an operation names.

Fire records (:mod:`triggers_core.engine.idempotency`) live outside the header too: a
keyed fire needs the record of its key (``Scope.fire_keys``) besides what the
fire needs, and writes a new record (``Changes.fire_records``) in the same
compare-and-swap; a finish that guards its cascade needs and writes the
record of its :func:`~triggers_core.engine.idempotency.cascade_key`. Nothing else
reads records, so a session's keys never weigh on other operations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import attrs

from triggers_core.engine.config import TaskConfig
from triggers_core.engine.idempotency import FireKey
from triggers_core.engine.leases import Due
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.engine.task_table import TaskTable

__all__ = [
    "HEADER_ONLY",
    "Cascade",
    "Changes",
    "Fixed",
    "Scope",
    "Selector",
    "configuration_scope",
    "fire_needs",
    "fire_scope",
    "instance_scope",
    "is_unsettled",
    "known_part",
    "narrowed",
    "read_in_full",
    "reads_every_unstarted",
    "resolve",
    "settled_of",
    "settled_triggers",
    "still_settled",
    "task_of",
    "task_triggers",
    "unsettled_of",
]


def _names(value: Iterable[str]) -> frozenset[str]:
    return value if isinstance(value, frozenset) else frozenset(value)


def _keys(value: Iterable[FireKey]) -> frozenset[FireKey]:
    return value if isinstance(value, frozenset) else frozenset(value)


_NO_KEYS: frozenset[FireKey] = frozenset()


@attrs.frozen
class Scope:
    """Which instances a load returns besides the header.

    A storage returns at least these (a backend that keeps one document may
    return more); instances that do not exist are simply absent.
    """

    #: These instances, whatever their status, if they exist.
    names: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    #: Every *unstarted* instance of these tasks.
    unstarted_of: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    #: Every unresolved instance (inspection; no operation needs it).
    unresolved: bool = False
    #: The fire records of these keys, if they exist (``SessionState.fire_records``).
    fire_keys: frozenset[FireKey] = attrs.field(default=_NO_KEYS, converter=_keys)

    def __or__(self, other: Scope) -> Scope:
        keys, more = self.fire_keys, other.fire_keys
        return Scope(
            names=self.names | other.names,
            unstarted_of=self.unstarted_of | other.unstarted_of,
            unresolved=self.unresolved or other.unresolved,
            fire_keys=keys | more if keys and more else keys or more,
        )

    def wants(self, instance: TaskInstance) -> bool:
        """True if ``instance`` belongs to this scope."""
        return (
            instance.name in self.names
            or (self.unresolved and not instance.is_resolved)
            or (instance.status is Status.UNSTARTED and instance.task_name in self.unstarted_of)
        )


#: No instance: just the header.
HEADER_ONLY = Scope()

#: Decides the scope from the header alone, inside the storage's snapshot.
Selector = Callable[[SessionState], Scope]


@attrs.frozen
class Changes:
    """What a compare-and-swap writes besides the header."""

    #: Instances to write (created or changed).
    instances: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    #: The subset of ``instances`` that must not exist yet: finding one stored is
    #: corruption (e.g. a counter lowered by hand), never something to overwrite.
    created: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    #: The task configuration changed (storages may skip writing it otherwise).
    config: bool = False
    #: Fire records to create: key -> names of the instances its fire scheduled. One
    #: that is already stored is a conflict (the fire was applied meanwhile), never
    #: something to overwrite.
    fire_records: Mapping[FireKey, tuple[str, ...]] = attrs.field(factory=dict, hash=False)
    #: Due-index entries of changed instances that changed: name -> its entry now
    #: (None: it has none any more). Names absent here keep what they have, so a
    #: renewed lease is never moved back (see :mod:`triggers_core.engine.leases`).
    due: Mapping[str, Due | None] = attrs.field(factory=dict, hash=False)


def resolve(scope: Scope | Selector, header: SessionState) -> Scope:
    """The scope itself, or what the selector picks for ``header``."""
    return scope if isinstance(scope, Scope) else scope(header)


def task_of(name: str) -> str:
    """The task name in an instance name ``{task}#{n}`` (the name itself if no ``#``)."""
    return name.rpartition("#")[0] or name


# -- unsettled instances ---------------------------------------------------------------


def is_unsettled(task: TaskConfig | None, instance: TaskInstance) -> bool:
    """An unstarted instance a fire of ``task``'s ``andEvery`` trigger may still change.

    It has not recorded the ``andEvery`` trigger, or it is already complete or
    abandonable (so the next fire that reaches its task schedules or abandons it).
    """
    if instance.status is not Status.UNSTARTED or task is None:
        return False
    recorded = instance.kwargs
    if task.and_every is not None and task.and_every not in recorded:
        return True
    if task.is_abandoned_by(instance.unless_fired):
        return True
    return task.is_ready(recorded)


def unsettled_of(
    tasks: Mapping[str, TaskConfig], instances: Iterable[TaskInstance]
) -> dict[str, frozenset[str]]:
    """``SessionState.unsettled`` computed from scratch over ``instances``."""
    found: dict[str, set[str]] = {}
    for instance in instances:
        if is_unsettled(tasks.get(instance.task_name), instance):
            found.setdefault(instance.task_name, set()).add(instance.name)
    return {task: frozenset(names) for task, names in found.items()}


# -- settled triggers ------------------------------------------------------------------


def task_triggers(task: TaskConfig) -> frozenset[str]:
    """Every trigger ``task`` uses (after, andEvery, unless)."""
    return task.required_triggers | task.unless_triggers


def settled_triggers(task: TaskConfig, instance: TaskInstance) -> frozenset[str]:
    """The triggers of ``task`` that ``instance`` has recorded in every role they have.

    A required (after/andEvery) trigger counts once it is in ``kwargs``, an
    ``unless`` trigger once it is in ``unless_fired``, a trigger that is both
    once it is in both. Membership only: how readiness is decided plays no part.
    """
    required, unless = task.required_triggers, task.unless_triggers
    missing = (required - instance.kwargs.keys()) | (unless - instance.unless_fired)
    return (required | unless) - missing


def settled_of(
    tasks: Mapping[str, TaskConfig], instances: Iterable[TaskInstance]
) -> dict[str, frozenset[str]]:
    """``SessionState.settled`` of ``tasks`` computed from scratch over ``instances``.

    ``instances`` must hold every unstarted instance of those tasks. A task
    without unstarted instances has all its triggers settled; empty sets are
    omitted.
    """
    found: dict[str, frozenset[str]] = {}
    for instance in instances:
        task = tasks.get(instance.task_name)
        if task is not None and instance.status is Status.UNSTARTED:
            mine = settled_triggers(task, instance)
            known = found.get(task.name)
            found[task.name] = mine if known is None else known & mine
    for name, task in tasks.items():
        if name not in found:
            found[name] = task_triggers(task)
    return {name: triggers for name, triggers in found.items() if triggers}


def reads_every_unstarted(
    task: TaskConfig, trigger: str, settled: Mapping[str, frozenset[str]]
) -> bool:
    """True if a fire of ``trigger`` needs every unstarted instance of ``task``.

    False when ``trigger`` is only ``task``'s andEvery trigger, or when every
    unstarted instance of ``task`` has recorded it (it is in ``settled``): the
    fire then needs only ``task``'s unsettled instances. The engine recomputes
    ``settled`` for the tasks this is True for, from the instances it read.
    """
    if trigger == task.and_every and trigger not in task.unless_triggers:
        return False
    known = settled.get(task.name)
    return known is None or trigger not in known


def read_in_full(
    tasks: TaskTable, settled: Mapping[str, frozenset[str]], trigger: str
) -> list[str]:
    """The tasks using ``trigger`` for which :func:`reads_every_unstarted` is True, sorted.

    One pass over the tasks using ``trigger`` with no call per task: a fire
    that reaches thousands of tasks mostly finds ``trigger`` settled for them.
    """
    nothing: frozenset[str] = frozenset()
    known = settled.get
    found = [t for t in tasks.using(trigger) if trigger not in known(t, nothing)]
    renewed = tasks.renewed_by(trigger)
    if found and renewed:  # the trigger is only the andEvery trigger of these: never in full
        found = [t for t in found if t not in renewed or trigger in tasks[t].unless_triggers]
    return found


def still_settled(
    task: TaskConfig, instance: TaskInstance, settled: frozenset[str]
) -> frozenset[str]:
    """``settled & settled_triggers(task, instance)``, without building sets when unchanged."""
    if not task.unless:  # every trigger is required: recorded means in kwargs
        recorded = instance.kwargs
        for trigger in settled:
            if trigger not in recorded:
                break
        else:
            return settled
    return settled & settled_triggers(task, instance)


# -- what each operation needs ---------------------------------------------------------


def fire_needs(header: SessionState, trigger: str) -> Scope:
    """The instances a fire of ``trigger`` can read or change (see the module docstring).

    A fire may expire an instance whose ``within`` window closed (of a task it
    reaches), and that expiry fires the task's ``onMiss`` trigger: so the needs
    of those ``onMiss`` fires are included too (header only; none without ``onMiss``).
    """
    tasks = header.tasks
    names: set[str] = set()
    unstarted_of: set[str] = set()
    pending, seen = [trigger], {trigger}
    while pending:
        current = pending.pop()
        for task_name, waiting in header.unsettled.items():  # few: normally none
            task = tasks.get(task_name)
            if task is not None and task.uses(current):
                names.update(waiting)
        unstarted_of.update(read_in_full(tasks, header.settled, current))
        if tasks.has_on_miss:
            for task_name in tasks.using(current):
                on_miss = tasks[task_name].on_miss
                if on_miss is not None and on_miss not in seen:
                    seen.add(on_miss)
                    pending.append(on_miss)
    return Scope(names=frozenset(names), unstarted_of=frozenset(unstarted_of))


def fire_scope(trigger: str, key: FireKey | None = None) -> Selector:
    """The selector for a fire of ``trigger``; with ``key``, also that key's fire record."""
    if key is None:
        return lambda header: fire_needs(header, trigger)
    keys = frozenset((key,))

    def keyed(header: SessionState) -> Scope:
        needs = fire_needs(header, trigger)
        return Scope(names=needs.names, unstarted_of=needs.unstarted_of, fire_keys=keys)

    return keyed


@attrs.frozen
class Fixed:
    """A selector that picks :attr:`scope` whatever the header says.

    A storage may read :attr:`scope` before the header, so that it reads the
    header and the instances in one request.
    """

    scope: Scope

    def __call__(self, header: SessionState) -> Scope:
        return self.scope


@attrs.frozen
class Cascade:
    """A selector that picks :attr:`scope` whatever the header says, plus what a fire of
    :attr:`task` needs (decided by the header): an operation whose outcome fires its
    instance's task name.

    A storage may read :attr:`scope` before the header (with it, or with the
    configuration), and the rest after it.
    """

    scope: Scope
    task: str

    def __call__(self, header: SessionState) -> Scope:
        return self.scope | fire_needs(header, self.task)


def known_part(scope: Scope | Selector) -> Scope | None:
    """What ``scope`` picks whatever the header says (None: nothing is known before it).

    A plain :class:`Scope` is all known, a :class:`Fixed` selector too; a
    :class:`Cascade` picks at least its :attr:`Cascade.scope`.
    """
    if isinstance(scope, Scope):
        return scope
    if isinstance(scope, Fixed | Cascade):
        return scope.scope
    return None


def instance_scope(name: str, *, cascade: bool, guard: FireKey | None = None) -> Selector:
    """The selector for an operation on instance ``name``.

    With ``cascade``, also what a fire of the instance's task name needs
    (``finish``, ``skip_failed(cascade=True)``, ``update_status(cascade=True)``);
    with ``guard``, also that fire record (a finish that guards its cascade).
    """
    own = Scope(
        names=frozenset((name,)), fire_keys=_NO_KEYS if guard is None else frozenset((guard,))
    )
    if not cascade:
        return Fixed(own)
    return Cascade(own, task_of(name))


def configuration_scope(task_names: Iterable[str]) -> Scope:
    """The scope for ``update_configuration`` of these tasks."""
    return Scope(unstarted_of=frozenset(task_names))


def narrowed(state: SessionState, scope: Scope | Selector) -> SessionState:
    """``state`` as a storage that honours ``scope`` exactly would load it.

    The selector sees the header without fire records (storages read records
    after the header); the result holds the records the scope names.
    """
    header = attrs.evolve(state, instances={}, fire_records={})
    chosen = resolve(scope, header)
    instances = {name: i for name, i in state.instances.items() if chosen.wants(i)}
    records = {k: state.fire_records[k] for k in chosen.fire_keys if k in state.fire_records}
    return attrs.evolve(header, instances=instances, fire_records=records)
