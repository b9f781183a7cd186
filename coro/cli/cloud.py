"""`coro cloud` (serve the team control plane) and `coro cloud migrate` (SPEC §3).

Settings come from the environment (see `coro.cloud.settings`). Exit codes: 0 stopped
cleanly, 1 could not start (database unreachable, port taken), 2 invalid settings. The
cloud package is imported inside the commands, so `coro --help` stays cheap.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:  # imported for real inside the commands: `coro --help` stays cheap
    from coro.cloud.settings import CloudSettings

cloud_app = typer.Typer(
    name="cloud",
    help="The team control plane: accounts, teams, runner tokens (PostgreSQL; settings "
    "from DATABASE_URL, JWT_SECRET, CLOUD_HOST, CLOUD_PORT …). Applies its migrations, "
    "then serves until SIGINT/SIGTERM.",
    invoke_without_command=True,
)


def _settings() -> CloudSettings:
    from coro.cloud.settings import CloudSettings, SettingsError

    try:
        return CloudSettings.from_env(os.environ)
    except SettingsError as exc:
        for problem in exc.problems:
            typer.echo(f"coro cloud: {problem}", err=True)
        typer.echo("coro cloud: refusing to start (fix the environment above)", err=True)
        raise typer.Exit(2) from None


@cloud_app.callback()
def cloud(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is not None:
        return
    from coro.cloud.server import run

    raise typer.Exit(run(_settings()))


@cloud_app.command("migrate")
def migrate() -> None:
    """Apply the cloud's database migrations, then exit."""
    from coro.cloud.server import StartupFailed, migrate_only

    settings = _settings()
    try:
        revision = asyncio.run(migrate_only(settings))
    except StartupFailed as exc:
        typer.echo(f"coro cloud migrate: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Cloud database at revision {revision}.")
