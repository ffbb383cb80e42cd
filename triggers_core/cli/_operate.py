"""Commands that change a session: ``fire``, ``replay``, ``skip``, ``fail``; and ``recover``.

Instances these commands schedule go to their task's runner (``using``) or
to ``--runner`` (default ``threading``: this process runs them, and waits for
them and their cascades before it exits). Before anything is stored, the
command works out on a copy which instances would run here and refuses if a
task is not registered in this process (``--app`` imports the modules that
register them), instead of recording a failure the operator did not cause.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable

import click

from triggers_core.cli._common import (
    UrlCommand,
    app_option,
    fail,
    failures,
    import_modules,
    json_argument,
    open_session,
    storage_url,
)
from triggers_core.cli._django import settings_option
from triggers_core.cli._safe import echo, visible
from triggers_core.engine.leases import DEFAULT_DISPATCH_LEASE
from triggers_core.engine.state import SessionState
from triggers_core.errors import RegistryError
from triggers_core.runtime.manager import TriggerManager
from triggers_core.runtime.runners import ThreadingTaskRunner
from triggers_core.runtime.storage import Storage
from triggers_core.runtime.tasks import registered_tasks
from triggers_core.tools.recovery import recover, tick
from triggers_core.tools.simulation import ReplayFailed, SkipFailed, Step, run_simulation

__all__ = ["fail_command", "fire", "recover_command", "replay", "skip", "tick_command"]

URL = click.argument("url", metavar="URL", callback=lambda _c, _p, v: storage_url(v))
UID = click.argument("uid", metavar="UID")


def _runner_options(function: Callable[..., None]) -> Callable[..., None]:
    function = click.option(
        "--wait",
        type=click.FloatRange(0, 3600),
        default=60.0,
        show_default=True,
        help="Seconds to wait for instances this process runs (runner threading).",
    )(function)
    function = click.option(
        "--runner",
        default="threading",
        show_default=True,
        help="Runner for tasks without a `using` directive (e.g. celery; it needs --app).",
    )(function)
    return settings_option(app_option(function))


def default_actor() -> str:
    """Who the command acts as, unless ``--actor`` says: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "cli"


ACTOR = click.option(
    "--actor",
    metavar="NAME",
    default=default_actor,
    show_default="cli:<login name>",
    help="Who does this, recorded in the instance's metadata and the lifecycle log.",
)


def _check_runner(manager: TriggerManager, name: str, why: str) -> None:
    """A usage error if runner ``name`` is unknown or cannot dispatch from this process."""
    try:
        runner = manager.get_runner(name)
    except RegistryError as exc:
        raise click.UsageError(visible(f"{why}: {exc}")) from None
    problem = runner.setup_problem()
    if problem is not None:
        raise click.UsageError(visible(f"{why}: {problem}; nothing was changed"))


def _check_runnable(manager: TriggerManager, state: SessionState, step: Step, runner: str) -> None:
    """Refuse if an instance the step would run cannot be dispatched as set up.

    In this process (runner ``threading``) its task must be registered; any
    other runner must be ready to dispatch (``--runner celery`` needs the app).
    """
    if runner != "threading":
        _check_runner(manager, runner, f"--runner {runner}")
    ran = run_simulation(state.tasks, [step], state=state).ran
    known = registered_tasks()
    checked = {runner}
    for name in ran:
        task = state.tasks[name.rpartition("#")[0]]
        using = task.using or runner
        if using == "threading" and task.run not in known:
            fail(
                f"{name} would run in this process (runner 'threading'), but no trigger task "
                f"is registered under {task.run!r} here: pass --app MODULE (the module that "
                "registers it), or --runner with the runner your workers use; nothing was changed"
            )
        if using not in checked:
            checked.add(using)
            _check_runner(manager, using, f"{name} would go to runner {using!r} (using)")


def _operate(
    *,
    url: str,
    uid: str,
    apps: tuple[str, ...],
    runner: str,
    wait: float,
    step: Step,
    action: Callable[[TriggerManager], str],
) -> None:
    import_modules(apps)
    storage = open_session(url, uid)
    manager = TriggerManager(storage, default_runner=runner)
    # An operator's command acts on its session only: no background sweep of the store
    # from this short-lived process (that is `triggers recover`, or the workers' job).
    manager.sweep_interval = None
    with failures():
        before = storage.load_full().state
        _check_runnable(manager, before, step, runner)
        echo(action(manager))
        local = manager.runners.get("threading")
        if isinstance(local, ThreadingTaskRunner):
            local.join_all(wait)
        after = storage.load_full().state
    for name in sorted(after.instances):
        instance = after.instances[name]
        if before.instances.get(name) != instance:
            echo(f"{name} {instance.status}")


@click.command(cls=UrlCommand)
@URL
@UID
@click.argument("name", metavar="NAME")
@click.argument("kwargs", metavar="[JSON]", required=False)
@click.option(
    "--idempotency-key",
    "key",
    metavar="KEY",
    help="Apply this fire once per session and trigger: a repeat with KEY changes nothing.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse a trigger that no task of the session mentions (else: a warning).",
)
@_runner_options
def fire(
    *,
    url: str,
    uid: str,
    name: str,
    kwargs: str | None,
    key: str | None,
    strict: bool,
    apps: tuple[str, ...],
    runner: str,
    wait: float,
) -> None:
    """Fire trigger NAME in session UID, with JSON kwargs (default {}).

    Prints what it scheduled, then each instance that changed. With
    --idempotency-key, a fire the session already applied with that key
    changes nothing and says so. A trigger no task mentions is fired with a
    warning (with --strict: refused).
    URL may be left out when TRIGGERS_STORAGE_URL is set.
    """
    data = json_argument(kwargs, "JSON") or {}

    def action(manager: TriggerManager) -> str:
        result = manager.fire_result(name, data, idempotency_key=key, strict=strict)
        names = ", ".join(i.name for i in result.scheduled) or "nothing"
        if result.duplicate:
            return (
                f"not fired {name!r}: a duplicate (this key was used before; "
                f"that fire scheduled {names})"
            )
        return f"fired {name!r}: scheduled {names}"

    _operate(
        url=url, uid=uid, apps=apps, runner=runner, wait=wait, step=(name, data), action=action
    )


@click.command(cls=UrlCommand)
@URL
@UID
@click.argument("instance", metavar="INSTANCE")
@click.option(
    "--kwargs",
    metavar="JSON",
    help="Replacement kwargs ({trigger: {...}}), replacing the recorded ones wholly.",
)
@ACTOR
@_runner_options
def replay(
    *,
    url: str,
    uid: str,
    instance: str,
    kwargs: str | None,
    actor: str,
    apps: tuple[str, ...],
    runner: str,
    wait: float,
) -> None:
    """Replay the failed INSTANCE of session UID: a clone with the same (or new) kwargs runs.

    URL may be left out when TRIGGERS_STORAGE_URL is set.
    """
    replacement = json_argument(kwargs, "--kwargs")

    def action(manager: TriggerManager) -> str:
        clone = manager.replay_failed_instance(instance, replacement, actor=actor)
        return f"replayed {instance} as {clone.name}"

    step = ReplayFailed(instance, replacement)
    _operate(url=url, uid=uid, apps=apps, runner=runner, wait=wait, step=step, action=action)


@click.command(cls=UrlCommand)
@URL
@UID
@click.argument("instance", metavar="INSTANCE")
@click.option("--cascade", is_flag=True, help="Fire the task's name, so what waits for it runs.")
@click.option("--result", metavar="JSON", help="The kwargs of that cascade (default {}).")
@ACTOR
@_runner_options
def skip(
    *,
    url: str,
    uid: str,
    instance: str,
    cascade: bool,
    result: str | None,
    actor: str,
    apps: tuple[str, ...],
    runner: str,
    wait: float,
) -> None:
    """Skip the failed INSTANCE of session UID (optionally cascading with a stand-in result).

    URL may be left out when TRIGGERS_STORAGE_URL is set.
    """
    data = json_argument(result, "--result")
    if data is not None and not cascade:
        raise click.UsageError("--result is the kwargs of the cascade: give --cascade too")

    def action(manager: TriggerManager) -> str:
        manager.skip_failed_instance(instance, cascade=cascade, result=data, actor=actor)
        return f"skipped {instance}" + (" and fired its task's name" if cascade else "")

    step = SkipFailed(instance, cascade, data)
    _operate(url=url, uid=uid, apps=apps, runner=runner, wait=wait, step=step, action=action)


@click.command("fail", cls=UrlCommand)
@URL
@UID
@click.argument("instance", metavar="INSTANCE")
@click.option("--reason", required=True, metavar="TEXT", help="Why (recorded as the error).")
@ACTOR
@settings_option
def fail_command(*, url: str, uid: str, instance: str, reason: str, actor: str) -> None:
    """Fail INSTANCE of session UID by hand: unstarted, scheduled or running.

    It ends failed (exceptionType triggers_core.errors.FailedByOperator) with
    REASON; replay or skip it next. A running instance's body may still be
    running somewhere: its outcome will be refused. A failed or resolved
    instance is refused, saying why. URL may be left out when
    TRIGGERS_STORAGE_URL is set.
    """
    if not reason.strip():
        raise click.UsageError("--reason must not be empty")
    storage = open_session(url, uid)
    manager = TriggerManager(storage)
    manager.sweep_interval = None
    with failures():
        failed = manager.fail_instance(instance, reason, actor=actor)
    echo(f"{failed.name} {failed.status}")


@click.command("recover", cls=UrlCommand)
@URL
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
@click.option(
    "--dispatch-lease",
    type=click.FloatRange(1, 86_400),
    default=DEFAULT_DISPATCH_LEASE,
    show_default=True,
    help="Seconds an instance may stay scheduled before its message counts as lost.",
)
@_runner_options
def recover_command(
    *,
    url: str,
    dry_run: bool,
    dispatch_lease: float,
    apps: tuple[str, ...],
    runner: str,
    wait: float,
) -> None:
    """Sweep every session at URL once: take over lost runs, re-send lost messages.

    A run whose lease expired (its worker died) ends failed (WorkerLost) and
    is replayed per its task's on_lost policy; an instance scheduled for longer
    than --dispatch-lease is dispatched again. Clones and re-sent instances go
    to their task's runner (using) or --runner. Celery workers run this sweep
    themselves every few seconds; use it when none runs, or with --dry-run to
    see what is due. URL may be left out when TRIGGERS_STORAGE_URL is set.
    """
    import_modules(apps)
    local = ThreadingTaskRunner()

    class _Manager(TriggerManager):
        default_runner = runner
        sweep_interval = None

    def build(storage: Storage) -> TriggerManager:
        manager = _Manager(storage, runners={"threading": local})
        if runner != "threading":
            _check_runner(manager, runner, f"--runner {runner}")
        return manager

    with failures():
        report = recover(url, manager=build, dispatch_lease=dispatch_lease, dry_run=dry_run)
        local.join_all(wait)
    for action in report.actions:
        echo(f"{action.session} {action.instance}: {action.action}, {action.detail}")
    verb = "would act on" if dry_run else "acted on"
    echo(f"examined {report.examined} due entries; {verb} {len(report.acted)}")


@click.command("tick", cls=UrlCommand)
@URL
@click.option("--dry-run", is_flag=True, help="Say which timers are due; change nothing.")
@_runner_options
def tick_command(
    *,
    url: str,
    dry_run: bool,
    apps: tuple[str, ...],
    runner: str,
    wait: float,
) -> None:
    """Apply every timer due now in the store at URL once (the store's clock).

    A within window that closed expires its instance (and fires its onMiss
    trigger); an instance whose delay ended is scheduled, to its task's runner
    (using) or --runner. Workers and in-process runners tick by themselves;
    run this every second or so (cron, a loop) when none runs. URL may be left
    out when TRIGGERS_STORAGE_URL is set.
    """
    import_modules(apps)
    local = ThreadingTaskRunner()

    class _Manager(TriggerManager):
        default_runner = runner
        sweep_interval = None

    def build(storage: Storage) -> TriggerManager:
        manager = _Manager(storage, runners={"threading": local})
        if runner != "threading":
            _check_runner(manager, runner, f"--runner {runner}")
        return manager

    with failures():
        report = tick(url, manager=build, dry_run=dry_run)
        local.join_all(wait)
    for action in report.actions:
        echo(f"{action.session} {action.instance}: {action.action}, {action.detail}")
    verb = "would fire" if dry_run else "fired"
    echo(f"examined {report.examined} due timers; {verb} {len(report.acted)}")
