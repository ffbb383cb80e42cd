"""The shell core: every decision a manager makes around the pure engine, written once, sans I/O.

A manager operation is a generator of *requests*: it yields what it needs done
(:class:`Load` a scope, :class:`Swap` a state in, take or end the commit
:data:`TURN`, :class:`Backoff`, :class:`CallHook`, :class:`Dispatch` an
instance, :class:`RunBody`...) and is sent back the result, or has the error
thrown in at the ``yield``. It never does I/O itself, so one generator serves
both faces: :func:`triggers_core.runtime.commit.drive` runs it with blocking
calls for :class:`~triggers_core.runtime.manager.TriggerManager`, the
:class:`~triggers_core.runtime.async_manager.AsyncTriggerManager` awaits each
request instead. The commit loop (load -> compute -> compare-and-swap -> on
conflict back off and start over), the observer calls around it, the order
after a commit (log -> hooks -> dispatch, even if a hook raised -> record
dispatch failures -> :class:`~triggers_core.errors.DispatchError`), the fire
checks (names, sizes, idempotency keys, strict) and the configuration checks
live here and nowhere else.

The commit turn (the storage's ``commit_lock``) is taken by :data:`TURN` or a
:class:`Load` with ``turn`` (not again while held), and a driver gives it back
before any request other than :data:`TURN`, :class:`Load` and :class:`Swap`
(a hook, a dispatch, a backoff...) and when the generator ends, however it
ends: the commit loop holds it from its load to its compare-and-swap and
never across a hook, a dispatch, a backoff or a task body.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Generator, Mapping
from datetime import datetime
from typing import Any, Protocol, TypeVar

import attrs

from triggers_core import engine
from triggers_core.engine.config import parse_configuration
from triggers_core.engine.effects import (
    InstanceReplayed,
    InstanceSkipped,
    ScheduleInstance,
    TriggerFired,
)
from triggers_core.engine.idempotency import fire_key
from triggers_core.engine.scopes import (
    HEADER_ONLY,
    Scope,
    Selector,
    configuration_scope,
    fire_scope,
    instance_scope,
)
from triggers_core.engine.sizes import bounded_mapping, check_task_sizes, check_task_timers
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.engine.transition import Transition
from triggers_core.errors import (
    ConcurrencyError,
    ConflictError,
    DispatchError,
    InvalidTransitionError,
    UnknownInstanceError,
)
from triggers_core.runtime.firing import FireResult, check_known
from triggers_core.runtime.lifecycle import LIFECYCLE_LOGGER, log_transition
from triggers_core.runtime.observe import Observer, current
from triggers_core.runtime.outcomes import Compute, exception_type_name, format_exception
from triggers_core.runtime.registry import runners as runner_registry
from triggers_core.runtime.storage import Snapshot

__all__ = [
    "TURN",
    "Backoff",
    "CallHook",
    "CommitPolicy",
    "Dispatch",
    "Load",
    "ShellHost",
    "Steps",
    "StorageCall",
    "Swap",
    "Turn",
    "commit_steps",
    "fire_commit_steps",
    "fire_result_steps",
    "fire_steps",
    "perform",
    "stored_steps",
    "update_configuration_steps",
]

lifecycle = logging.getLogger(LIFECYCLE_LOGGER)


# -- requests ----------------------------------------------------------------------------


class Turn:
    """Take the storage's commit turn: :data:`TURN` (see the module on when it is given back)."""

    __slots__ = ()


#: Take the commit turn (a driver that waits too long raises ConcurrencyError).
TURN = Turn()


class Load(tuple[Any, ...]):
    """``Load((scope, turn))``: ``storage.load(scope)``; sent back the
    :class:`~triggers_core.runtime.storage.Snapshot`.

    With ``turn`` true, the commit turn is taken first (as :data:`TURN` would:
    one request less on the hot path). The hot requests are tuples, built in C
    without a Python call: a driver reads their fields by position.
    """

    __slots__ = ()


class Swap(tuple[Any, ...]):
    """``Swap((expected, state, changes))``: ``storage.compare_and_swap(expected, state,
    changes)``; sent back the new version."""

    __slots__ = ()


class CallHook(tuple[Any, ...]):
    """``CallHook((hook, args))``: call a manager hook with ``args``; an async driver
    awaits what it returns if that is awaitable."""

    __slots__ = ()


class Dispatch(tuple[Any, ...]):
    """``Dispatch((effect,))``: hand a scheduled instance to its runner (``effect.using``,
    else the default)."""

    __slots__ = ()


class StorageCall:
    """Any other storage method by name (``check_fire_keys``, ``load_full``...)."""

    __slots__ = ("args", "method")

    def __init__(self, method: str, *args: Any) -> None:
        self.method, self.args = method, args


class Backoff:
    """Sleep ``seconds`` (between two attempts of a commit)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


T = TypeVar("T")

#: An operation of the shell: yields requests (:data:`TURN`, :class:`Load`...), is sent
#: their results, returns ``T``.
Steps = Generator[Any, Any, T]


@attrs.frozen
class CommitPolicy:
    """How often to retry a conflicting commit, and how long to back off between tries."""

    #: Compare-and-swap attempts before :class:`ConcurrencyError`.
    max_attempts: int = 100
    #: Backoff between attempts: full jitter up to ``min(cap, base * 2**attempt)`` seconds.
    backoff_base: float = 0.001
    backoff_cap: float = 0.1


class ShellStorage(Protocol):
    """What the shell reads of a storage (sync or async) itself: names and limits."""

    @property
    def uid(self) -> str: ...

    @property
    def backend_name(self) -> str: ...

    @property
    def max_value_bytes(self) -> int: ...

    @property
    def max_timer_seconds(self) -> float | None: ...


class ShellHost(Protocol):
    """The manager as the shell sees it (either face)."""

    @property
    def storage(self) -> ShellStorage: ...

    @property
    def uid(self) -> str: ...

    max_attempts: int
    backoff_base: float
    backoff_cap: float
    max_cascade_depth: int
    default_runner: str

    def now(self) -> datetime: ...

    @property
    def runners(self) -> Mapping[str, Any]: ...

    def _post_fire(self, trigger_name: str, scheduled_instances: list[TaskInstance]) -> Any: ...

    def _post_replay(self, replayed_instance: TaskInstance) -> Any: ...

    def _post_skip(self, instance: TaskInstance, cascade: bool) -> Any: ...


# -- the commit loop ------------------------------------------------------------------


def commit_steps(
    storage: ShellStorage,
    compute: Compute,
    scope: Scope | Selector,
    policy: CommitPolicy,
    observer: Observer | None,
    *,
    loaded: Snapshot | None = None,
    kept: list[Snapshot] | None = None,
) -> Steps[Transition]:
    """Load what ``scope`` names, compute, compare-and-swap; on conflict start over.

    A transition with ``commit`` False (a duplicate fire) is returned without a
    write. An :class:`UnknownInstanceError` from ``compute`` is raised again
    naming the session. ``observer`` (if any) sees each load and
    compare-and-swap, each conflict, and the committed transition.
    ``loaded``: a snapshot of ``scope`` the caller read already (a tick's batch
    load, :meth:`~triggers_core.runtime.storage.Storage.load_sessions`); the
    first attempt computes on it instead of loading (after taking the turn). If
    it is stale, its compare-and-swap fails as any other and the next attempt
    loads. ``kept``: a list that receives the snapshot the commit leaves behind
    (the committed state with the version the storage returned, or the state
    loaded when nothing was written), for a later commit of the same scope to
    pass as ``loaded``. (A function returning the loop's generator, not a
    generator itself: an operation that runs the loop delegates to it
    directly, one level deep.)
    """
    if observer is not None:
        return _observed_steps(storage, compute, scope, policy, observer, loaded=loaded, kept=kept)
    return _steps(storage, compute, scope, policy, loaded=loaded, kept=kept)


def _steps(
    storage: ShellStorage,
    compute: Compute,
    scope: Scope | Selector,
    policy: CommitPolicy,
    *,
    loaded: Snapshot | None = None,
    kept: list[Snapshot] | None = None,
) -> Steps[Transition]:
    """:func:`commit_steps` without an observer."""
    max_attempts, backoff_base, backoff_cap = (
        policy.max_attempts,
        policy.backoff_base,
        policy.backoff_cap,
    )
    for attempt in range(max_attempts):
        try:
            if loaded is None:
                snapshot = yield Load((scope, True))
            else:  # read by the caller: only the turn to take
                yield TURN
                snapshot, loaded = loaded, None
            try:
                transition = compute(snapshot.state)
            except UnknownInstanceError as exc:
                raise UnknownInstanceError(exc.instance, storage.uid) from None
            if transition.commit:  # else nothing changed (a duplicate fire)
                version = yield Swap((snapshot.version, transition.state, transition.changes))
                if kept is not None:
                    kept.append(Snapshot(transition.state, version))
            elif kept is not None:
                kept.append(snapshot)
        except ConflictError:
            pass  # another process wrote first: back off (the turn is given back first), retry
        else:
            return transition
        yield Backoff(random.uniform(0, min(backoff_cap, backoff_base * 2**attempt)))
    raise gave_up(storage, max_attempts)


def gave_up(storage: ShellStorage, max_attempts: int) -> ConcurrencyError:
    """The error of a commit that conflicted ``max_attempts`` times."""
    return ConcurrencyError(
        f"gave up after {max_attempts} conflicting attempts",
        backend=storage.backend_name,
        session=storage.uid,
    )


def _observed_steps(
    storage: ShellStorage,
    compute: Compute,
    scope: Scope | Selector,
    policy: CommitPolicy,
    observer: Observer,
    *,
    loaded: Snapshot | None = None,
    kept: list[Snapshot] | None = None,
    read: bool = True,
) -> Steps[Transition]:
    """:func:`commit_steps`, telling ``observer`` about each step (the same loop otherwise;
    a snapshot ``loaded`` by the caller counts as the first attempt's load if it was
    ``read`` from the storage)."""
    max_attempts, backoff_base, backoff_cap = (
        policy.max_attempts,
        policy.backoff_base,
        policy.backoff_cap,
    )
    spans = observer.watches_storage
    seen: Any = storage  # observers read its names only (no typing.cast: a call)
    for attempt in range(max_attempts):
        if spans:
            yield TURN  # the load's span starts once the turn is ours
        try:
            # A load's span, unless the attempt computes on a snapshot that was not read
            # (the state a commit of this process left: nothing is loaded).
            watch = spans and (loaded is None or read)
            token = observer.load_begin(seen, attempt) if watch else None
            try:
                if loaded is None:
                    snapshot = yield Load((scope, not spans))
                else:  # read by the caller, or left by a commit: only the turn to take
                    if not spans:
                        yield TURN
                    snapshot, loaded = loaded, None
            except BaseException as exc:
                if watch:
                    observer.load_end(token, exc)
                raise
            if watch:
                observer.load_end(token, None)
            try:
                transition = compute(snapshot.state)
            except UnknownInstanceError as exc:
                raise UnknownInstanceError(exc.instance, storage.uid) from None
            if transition.commit:
                token = observer.store_begin(seen, attempt) if spans else None
                try:
                    version = yield Swap((snapshot.version, transition.state, transition.changes))
                except BaseException as exc:
                    if spans:
                        observer.store_end(token, exc)
                    raise
                if spans:
                    observer.store_end(token, None)
                observer.committed(seen, snapshot.state, transition)
                if kept is not None:
                    kept.append(Snapshot(transition.state, version))
            elif kept is not None:
                kept.append(snapshot)
        except ConflictError:
            observer.conflict(seen, attempt)
        else:
            return transition
        yield Backoff(random.uniform(0, min(backoff_cap, backoff_base * 2**attempt)))
    raise gave_up(storage, max_attempts)


def commit(
    host: ShellHost,
    compute: Compute,
    scope: Scope | Selector = HEADER_ONLY,
    loaded: Snapshot | None = None,
    *,
    kept: list[Snapshot] | None = None,
    read: bool = True,
) -> Steps[Transition]:
    """The commit loop on ``host``'s session with ``host``'s retry policy (``loaded``,
    ``kept``: see :func:`commit_steps`; ``read`` False: ``loaded`` was not read from the
    storage, so an observer sees no load for it)."""
    policy = CommitPolicy(host.max_attempts, host.backoff_base, host.backoff_cap)
    observer = current()
    if observer is not None:
        return _observed_steps(
            host.storage, compute, scope, policy, observer, loaded=loaded, kept=kept, read=read
        )
    return _steps(host.storage, compute, scope, policy, loaded=loaded, kept=kept)


# -- after a commit ---------------------------------------------------------------------


def perform(host: ShellHost, transition: Transition) -> Steps[None]:
    """Log the committed transition, call its hooks, then dispatch what it scheduled.

    The hooks see the instances as committed (scheduled instances are
    ``scheduled``). Dispatching happens even if a hook raises: the state is
    stored, so the work must not be stranded. A runner that refuses an
    instance gets it marked ``failed`` and the operation raises
    :class:`~triggers_core.errors.DispatchError` (after a hook's error, if
    both happened, with the hook's error as its context).
    """
    log_transition(lifecycle, host.uid, transition)
    effects = transition.effects
    if not effects:
        return
    hook_error: BaseException | None = None
    try:
        instances = transition.state.instances
        for effect in effects:
            if isinstance(effect, TriggerFired):
                scheduled = [instances[n] for n in effect.scheduled]
                yield CallHook((host._post_fire, (effect.trigger_name, scheduled)))
            elif isinstance(effect, InstanceReplayed):
                yield CallHook((host._post_replay, (instances[effect.instance_name],)))
            elif isinstance(effect, InstanceSkipped):
                yield CallHook((host._post_skip, (instances[effect.instance_name], effect.cascade)))
    except GeneratorExit:
        raise
    except BaseException as exc:
        hook_error = exc  # raised after the dispatch, which happens all the same
    failures: list[tuple[str, BaseException]] = []
    for effect in effects:
        if isinstance(effect, ScheduleInstance):
            try:
                watcher = current()
                if watcher is None or not watcher.watches_dispatch:
                    yield Dispatch((effect,))
                else:
                    token = watcher.dispatch_begin(host.uid, effect)
                    try:
                        yield Dispatch((effect,))
                    except BaseException as exc:
                        watcher.dispatch_end(token, exc)
                        raise
                    watcher.dispatch_end(token, None)
            except Exception as exc:
                failures.append((effect.instance_name, exc))
                yield from record_dispatch_failure(host, effect, exc)
    if failures:
        error = DispatchError(failures)
        error.__context__ = hook_error  # as if raised while the hook's error was handled
        raise error from failures[0][1]
    if hook_error is not None:
        raise hook_error


def record_dispatch_failure(
    host: ShellHost, effect: ScheduleInstance, exc: BaseException
) -> Steps[TaskInstance | None]:
    """Log a runner's refusal and mark the instance ``failed`` (unless it moved on)."""
    name = effect.instance_name
    uid = host.uid
    lifecycle.error(
        "could not dispatch %s of session %r: %s",
        name,
        uid,
        exc,
        exc_info=exc,
        extra={"session": uid, "instance": name, "status": Status.FAILED.value},
    )
    try:
        transition = yield from commit(
            host,
            lambda s: engine.fail(
                s,
                name,
                now=host.now(),
                exception_type=exception_type_name(exc),
                exception_info=format_exception(exc),
                exception_context={"dispatch": effect.using or host.default_runner},
            ),
            instance_scope(name, cascade=False),
        )
    except InvalidTransitionError:
        return None  # it already moved on (e.g. a worker picked it up)
    return transition.state.instances[name]


# -- operations ---------------------------------------------------------------------------


def update_configuration_steps(host: ShellHost, config: Mapping[str, Any]) -> Steps[None]:
    """Parse and check ``config`` (before any I/O), then store it in one commit."""
    known_runners = {*runner_registry.names(), *host.runners}
    parsed = parse_configuration(config, runners=known_runners)  # once, before any I/O
    storage = host.storage
    check_task_sizes(parsed, storage.max_value_bytes)
    check_task_timers(parsed, storage.max_timer_seconds, "the storage's timeout")
    yield from commit(
        host, lambda s: engine.update_configuration(s, parsed), configuration_scope(parsed)
    )


def fire_steps(
    host: ShellHost,
    trigger_name: str,
    trigger_kwargs: Mapping[str, Any] | None,
    idempotency_key: str | None,
    strict: bool,
) -> Steps[FireResult]:
    """A fire (see ``TriggerManager.fire_result``); an observer sees it begin and end."""
    watcher = current()
    storage: Any = host.storage
    token = None if watcher is None else watcher.fire_begin(storage, trigger_name)
    try:
        transition = yield from fire_commit_steps(
            host, trigger_name, trigger_kwargs, idempotency_key, strict, observer=watcher
        )
        yield from perform(host, transition)
        result = yield from fire_result_steps(transition)
    except GeneratorExit:
        raise
    except BaseException as exc:
        if watcher is not None:
            watcher.fire_end(token, 0, False, exc)
        raise
    if watcher is not None:
        watcher.fire_end(token, len(result.scheduled), result.duplicate, None)
    return result


def fire_commit_steps(
    host: ShellHost,
    trigger_name: str,
    trigger_kwargs: Mapping[str, Any] | None,
    idempotency_key: str | None,
    strict: bool,
    *,
    observer: Observer | None,
) -> Steps[Transition]:
    """A fire's checks and its commit loop on ``host.storage`` with ``host``'s policy
    (the hooks and dispatch are :func:`perform`'s, the result :func:`fire_result_steps`'s).

    The checks (names, sizes, the idempotency key, ``strict``) run once, before
    any I/O; every attempt of the commit loop reuses them. ``observer`` sees the
    commit loop (a transactional fire passes one that holds ``committed`` back
    until the caller's transaction commits).
    """
    storage: Any = host.storage
    name = engine.check_trigger_name(trigger_name)
    kwargs = bounded_mapping(trigger_kwargs, "trigger_kwargs", storage.max_value_bytes)
    key = None if idempotency_key is None else fire_key(name, idempotency_key)
    if key is not None:
        yield StorageCall("check_fire_keys")
    uid, now = host.uid, host.now

    def compute(state: SessionState) -> Transition:
        if strict:
            check_known(state.tasks, name, uid, strict=True)
        return engine.fire_checked(state, name, kwargs, now=now(), key=key)

    policy = CommitPolicy(host.max_attempts, host.backoff_base, host.backoff_cap)
    transition = yield from commit_steps(storage, compute, fire_scope(name, key), policy, observer)
    if not strict:
        check_known(transition.state.tasks, name, uid, strict=False)
    return transition


def fire_result_steps(transition: Transition) -> Steps[FireResult]:
    """What a committed fire returns: the instances it scheduled, or, for a duplicate
    keyed fire, those the first one scheduled as stored now."""
    duplicate = None if transition.commit else transition.duplicate
    if duplicate is None:
        return FireResult([transition.state.instances[n] for n in transition.scheduled])
    return FireResult((yield from stored_steps(duplicate.scheduled)), duplicate=True)


def stored_steps(names: tuple[str, ...]) -> Steps[list[TaskInstance]]:
    """The instances ``names`` as stored now, in that order."""
    if not names:
        return []
    snapshot = yield Load((Scope(names=frozenset(names)), False))
    found = snapshot.state.instances
    return [found[name] for name in names if name in found]


def get_instance_steps(uid: str, name: str) -> Steps[TaskInstance]:
    """One instance; :class:`UnknownInstanceError` (a ``KeyError``) if missing."""
    snapshot = yield Load((Scope(names=frozenset((name,))), False))
    found: TaskInstance | None = snapshot.state.instances.get(name)
    if found is None:
        raise UnknownInstanceError(name, uid)
    return found
