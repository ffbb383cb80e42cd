"""``triggers web``: the web console (extra ``web``: Starlette, Jinja2, uvicorn)."""

from __future__ import annotations

import click

from triggers_core.cli._common import UrlCommand, app_option, import_modules, storage_url
from triggers_core.errors import RegistryError, install_extra_hint
from triggers_core.web.serve import TOKEN_ENV, is_loopback, serve

__all__ = ["web"]


@click.command(cls=UrlCommand)
@click.argument("url", metavar="URL", callback=lambda _c, _p, v: storage_url(v))
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help=f"Address to listen on. Beyond loopback every page needs the token ({TOKEN_ENV}).",
)
@click.option("--read-only", is_flag=True, help="Only look: every action is refused.")
@click.option(
    "--runner",
    help="Runner the actions dispatch to (e.g. celery, with --app); required unless --read-only.",
)
@app_option
def web(
    *, url: str, port: int, host: str, read_only: bool, runner: str | None, apps: tuple[str, ...]
) -> None:
    """Serve the web console for the sessions at URL (sessions, timelines, explain, actions).

    Actions (replay, skip, fail, fire, recover) need the token: set
    TRIGGERS_WEB_TOKEN, or use the sign-in link printed at start.
    URL may be left out when TRIGGERS_STORAGE_URL is set.
    """
    if runner is None and not read_only:
        raise click.UsageError(
            "name the runner actions dispatch to (--runner celery --app yourproject.celery, "
            "or --runner threading to run tasks in this process), or pass --read-only"
        )
    import_modules(apps)
    if not is_loopback(host):
        click.echo(f"warning: --host {host} is reachable beyond this machine", err=True)
    try:
        serve(url, host=host, port=port, runner=runner, read_only=read_only)
    except RegistryError as exc:
        raise click.BadParameter(str(exc), param_hint="--runner") from None
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"the web console needs {exc.name!r}: {install_extra_hint('web')}"
        ) from None
