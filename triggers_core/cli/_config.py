"""Commands on a configuration file: ``check``, ``graph``, ``simulate``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from triggers_core.cli._common import (
    app_option,
    emit_json,
    fail,
    failures,
    import_modules,
    json_option,
    load_config_file,
    named_json,
    open_session,
    storage_url,
)
from triggers_core.cli._django import settings_option
from triggers_core.cli._safe import echo, print_rows
from triggers_core.engine.config import TaskConfig, parse_configuration
from triggers_core.engine.state import Status
from triggers_core.errors import ConfigurationError
from triggers_core.runtime.tasks import registered_tasks
from triggers_core.tools.lint import Severity, lint
from triggers_core.tools.render import edges, group_nodes, to_dot, to_mermaid
from triggers_core.tools.requirements import lack_words, missing_after
from triggers_core.tools.simulation import Failure, run_simulation

__all__ = ["check", "graph", "simulate"]

CONFIG = click.argument(
    "config_path", metavar="CONFIG", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)


#: ``check`` without ``--app`` names at most this many unchecked run targets.
SHOWN_RUNS = 10


def _run_of(task: object) -> bool:
    return isinstance(task, dict) and isinstance(task.get("run"), str)


def parse_or_fail(raw: Mapping[str, Any], path: Path) -> dict[str, TaskConfig]:
    """The parsed configuration, or exit 1 listing every problem."""
    try:
        return parse_configuration(raw)
    except ConfigurationError as exc:
        fail(f"{path}: {exc}")


@click.command()
@CONFIG
@app_option
@json_option
def check(*, config_path: Path, apps: tuple[str, ...], as_json: bool) -> None:
    """Validate CONFIG (a JSON file) and lint it.

    Exit 1 if the configuration is invalid or lint finds an error or a warning
    (hints alone exit 0). With --app, each `run` must name a trigger task those
    modules register; without it, a note on stderr names the run targets that
    were not checked.
    """
    import_modules(apps)
    raw = load_config_file(config_path)
    # The command line registers no task of its own (it never imports the testing
    # toolbox and its sample tasks): what is registered now is the application's.
    registry = sorted(registered_tasks()) if apps else None
    try:
        findings = lint(raw, task_registry=registry)
    except ConfigurationError as exc:
        if as_json:
            emit_json({"valid": False, "problems": list(exc.problems), "findings": []})
            raise SystemExit(1) from None
        fail(f"{config_path}: {exc}")
    unverified = [] if apps else sorted({task["run"] for task in raw.values() if _run_of(task)})
    if as_json:
        emit_json(
            {
                "valid": True,
                "problems": [],
                "findings": [f.to_json() for f in findings],
                "unverifiedRuns": unverified,
            }
        )
    elif findings:
        for finding in findings:
            echo(f"{finding.severity}: {finding}")
        echo(f"{len(findings)} finding{'s' if len(findings) != 1 else ''}")
    else:
        echo(f"{config_path}: {len(raw)} tasks, valid, no findings")
    if unverified and not as_json:
        shown = ", ".join(unverified[:SHOWN_RUNS])
        more = f" and {len(unverified) - SHOWN_RUNS} more" if len(unverified) > SHOWN_RUNS else ""
        echo(
            f"note: without --app, the run targets were not checked ({shown}{more}): "
            "pass --app MODULE to check that each is a registered trigger task",
            err=True,
        )
    if any(f.severity is not Severity.HINT for f in findings):
        raise SystemExit(1)


@click.command()
@CONFIG
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    show_default=True,
    help="Mermaid flowchart or Graphviz DOT.",
)
@click.option(
    "--session",
    nargs=2,
    metavar="URL UID",
    help="Colour the tasks by the statuses of this session's instances.",
)
@settings_option
@json_option
def graph(*, config_path: Path, fmt: str, session: tuple[str, str] | None, as_json: bool) -> None:
    """Draw CONFIG as a graph: triggers, tasks, groups, after/andEvery/unless/cascade edges."""
    tasks = parse_or_fail(load_config_file(config_path), config_path)
    instances = None
    if session:
        url, uid = session
        try:
            url = storage_url(url)
        except click.BadParameter as exc:
            exc.param_hint = "--session"
            raise
        storage = open_session(url, uid)
        with failures():
            instances = list(storage.load_full().state.instances.values())
    render = to_mermaid if fmt == "mermaid" else to_dot
    text = render(tasks, instances=instances)
    if as_json:
        emit_json(
            {
                "format": fmt,
                "text": text,
                "edges": [
                    {"source": e.source, "target": e.target, "kind": e.kind}
                    | ({"group": e.group} if e.group else {})
                    for e in edges(tasks)
                ],
                "groups": [
                    {
                        "path": g.path,
                        "task": g.task,
                        "directive": g.directive,
                        "parent": g.parent or None,
                        "label": g.label,
                    }
                    for g in group_nodes(tasks)
                ],
            }
        )
    else:
        for line in text.rstrip("\n").split("\n"):  # only the renderer's own line breaks
            echo(line)


@click.command()
@CONFIG
@click.option(
    "--fire",
    "fires",
    multiple=True,
    metavar="NAME[=JSON]",
    help="Fire this trigger (with these kwargs); repeatable, in order.",
)
@click.option(
    "--fail",
    "failing",
    multiple=True,
    metavar="TASK_OR_INSTANCE",
    help="This task (or instance, task#n) fails when it runs; repeatable.",
)
@json_option
def simulate(
    *, config_path: Path, fires: tuple[str, ...], failing: tuple[str, ...], as_json: bool
) -> None:
    """Run CONFIG without storage or workers: fire triggers, every ready task finishes at once.

    Tasks return {} (or fail, with --fail); cascades follow. Prints the order
    instances ran and every instance's end status.
    """
    tasks = parse_or_fail(load_config_file(config_path), config_path)
    steps = [named_json(text, "--fire") for text in fires]
    results = {name: Failure(message=f"{name} failed (--fail)") for name in failing}
    with failures():
        sim = run_simulation(tasks, steps, results=results)
    instances = sorted(sim.state.instances.values(), key=lambda i: (i.task_name, i.number))
    if as_json:
        emit_json(
            {
                "ran": list(sim.ran),
                "fired": list(sim.fired),
                "instances": {i.name: i.status.value for i in instances},
            }
        )
        return
    echo(f"fired: {', '.join(sim.fired) or 'nothing'}")
    echo(f"ran:   {', '.join(sim.ran) or 'nothing'}")
    rows = []
    for instance in instances:
        waiting = instance.status is Status.UNSTARTED
        missing = missing_after(tasks[instance.task_name], instance.kwargs) if waiting else ()
        rows.append((instance.name, instance.status.value, ", ".join(map(lack_words, missing))))
    unused = sorted(set(tasks) - {i.task_name for i in instances})
    rows.extend((name, "(no instance)", "") for name in unused)
    print_rows(("instance", "status", "waits for"), rows)
