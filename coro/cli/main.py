"""`coro`: start a runner, create and watch jobs, steer them (SPEC §5).

This module is the app and the commands that run something here (`start`, `demo`,
`mcp`); the others come from their own modules (`jobs`, `pr`, `campaign`, `plugin`,
`cloud`, `login`, `init`). Every command but `start` and `demo` talks to a runner over
HTTP (`CORO_URL`, default `http://127.0.0.1:3000`). Exit codes: 0 success, 1 failure
(runner unreachable, an API error, or a followed job that did not complete), 2 invalid
usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import webbrowser
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.text import Text

from coro.cli.campaign import campaign_app
from coro.cli.client import (
    report_error,
)
from coro.cli.cloud import cloud_app
from coro.cli.init import init
from coro.cli.jobs import jobs_app
from coro.cli.login import login
from coro.cli.plugin import plugin_app
from coro.cli.pr import pr_app, repo_app
from coro.cli.ui import hide_flag_types, out
from coro.config import CoroConfig, CoroHome

if TYPE_CHECKING:  # for annotations only: `coro --help` does not load the cloud link
    from coro.state.cloud.link import CloudLink

hide_flag_types()
app = typer.Typer(
    name="coro",
    help="Coro runs AI software-engineering jobs defined by markdown workflows.\n\n"
    "The runner serves the API and the dashboard (`coro start`); the other commands talk "
    "to it at $CORO_URL (default http://127.0.0.1:3000), with $CORO_API_TOKEN when set.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)
app.add_typer(jobs_app)
app.add_typer(pr_app)
app.add_typer(repo_app)
app.add_typer(campaign_app)
app.add_typer(plugin_app)
app.add_typer(cloud_app)
app.command("login")(login)
app.command("init")(init)

# --------------------------------------------------------------------------- app


def _version(value: bool) -> None:
    if value:
        from coro.version import __version__

        typer.echo(f"coro {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Coro runs AI software-engineering jobs defined by markdown workflows."""


# --------------------------------------------------------------------------- start


def _headless() -> bool:
    """No browser in CI, over SSH, when asked not to, or on a Unix without a display."""
    env = os.environ
    if env.get("CORO_NO_OPEN", "").strip() not in ("", "0", "false"):
        return True
    if env.get("CI") or any(env.get(k) for k in ("SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY")):
        return True
    unix_desktop = sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd"))
    return unix_desktop and not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def _browse_url(url: str, host: str) -> str:
    """A URL a local browser can open: wildcard binds are reached over loopback."""
    if host == "0.0.0.0":
        return url.replace("//0.0.0.0:", "//127.0.0.1:", 1)
    if host == "::":
        return url.replace("//[::]:", "//[::1]:", 1)
    return url


async def _serve_until_stopped(
    home: CoroHome, config: CoroConfig, host: str, port: int, open_browser: bool
) -> int:
    from coro.api.server import serve
    from coro.runner import Runner
    from coro.version import __version__

    console = out()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(stop.set)

    # uvicorn takes SIGINT/SIGTERM over while it serves and re-raises them after its own
    # graceful shutdown; these handlers catch what arrives before and after that.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        runner = Runner(home, config)
        async with contextlib.AsyncExitStack() as stack:
            with console.status("Starting the runner (recovering interrupted jobs)…"):
                served = await stack.enter_async_context(serve(runner, host, port))
            url = _browse_url(served.url, host)
            console.print(Text(f"Coro runner {__version__} — {runner.mode} mode", style="bold"))
            console.print(f"API:       {served.url}")
            console.print(Text(f"Dashboard: {url}/dashboard/", style="bold green"))
            console.print(f"Home:      {home.root}")
            if runner.link is not None:
                console.print(f"Cloud:     {runner.link.url}")
                reporter = asyncio.create_task(_report_cloud_link(runner.link, console))
                stack.callback(reporter.cancel)
            console.print(Text("Press Ctrl+C to stop.", style="dim"))
            sys.stdout.flush()
            if open_browser:
                threading.Thread(
                    target=webbrowser.open, args=(f"{url}/dashboard/",), daemon=True
                ).start()
            # asleep until a signal: one of ours, or one uvicorn took while it serves
            waiting = {
                asyncio.create_task(stop.wait()),
                asyncio.create_task(served.server.exit_requested()),
            }
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for task in waiting:
                task.cancel()
            console.print(Text("Stopping the runner…", style="dim"))
        console.print("Runner stopped.")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _report_cloud_link(link: CloudLink, console: Console) -> None:
    """One line per change of the hybrid runner's connection to its team cloud."""
    shown: str | None = None

    def changed() -> bool:
        return link.state != shown

    while True:
        await link.wait_until(changed)
        shown = link.state
        if shown == "connected":
            team = link.team_name or link.team_id
            console.print(f"Cloud: connected as {link.runner_id} (team {team})", style="green")
        elif shown != "connecting":
            reason = f": {link.last_error}" if link.last_error else ""
            console.print(f"Cloud: {shown}{reason}", style="yellow")
        sys.stdout.flush()


@app.command()
def start(
    host: Annotated[
        str | None,
        typer.Option(
            metavar="HOST", help="Interface to bind (default: config.json host, 127.0.0.1)."
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            metavar="PORT",
            help="Port (default: config.json port, 3000; 0 = any).",
        ),
    ] = None,
    no_open: Annotated[
        bool, typer.Option("--no-open", help="Do not open the dashboard in a browser.")
    ] = False,
) -> None:
    """Run the runner in the foreground: HTTP API and dashboard, until Ctrl+C."""
    from coro.api.server import check_bind
    from coro.config import ConfigError, CoroHome

    home = CoroHome.from_env()
    try:
        config = home.load_config()
    except ConfigError as exc:
        report_error(str(exc))
        raise typer.Exit(1) from None
    bind_host = (host or config.host).strip()
    bind_port = config.port if port is None else port
    try:
        check_bind(bind_host, config)
    except SystemExit as exc:
        report_error(str(exc.code))
        raise typer.Exit(1) from None
    open_browser = not no_open and not _headless()
    try:
        code = asyncio.run(_serve_until_stopped(home, config, bind_host, bind_port, open_browser))
    except KeyboardInterrupt:
        code = 0
    except OSError as exc:
        report_error(
            f"Cannot listen on {bind_host}:{bind_port}: {exc.strerror or exc}. Is another "
            "runner using it? Choose another port with --port."
        )
        code = 1
    raise typer.Exit(code)


# --------------------------------------------------------------------------- demo


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the temporary CORO_HOME and print its path.")
    ] = False,
) -> None:
    """Run a job end to end offline (no keys, no network) with the script executor."""
    from coro.cli.demo import run_demo  # (the local SCM and git: not for every command)

    raise typer.Exit(run_demo(keep=keep))


# --------------------------------------------------------------------------- mcp


@app.command("mcp")
def mcp_server(
    job: Annotated[str, typer.Option("--job", "-j", help="The job whose tools to serve.")],
    tools: Annotated[
        list[str] | None,
        typer.Option(
            "--tools",
            help="Serve only these tools (names or globs, e.g. 'file_*'); repeatable. "
            "Default: every tool.",
        ),
    ] = None,
) -> None:
    """Serve Coro's tools for one job to an MCP client over stdio (until stdin closes).

    Reads $CORO_HOME directly; a runner may be running too.

    A running runner serves the same tools over streamable HTTP at /mcp/<jobId>.
    """
    from coro.mcp.server import serve_stdio

    raise typer.Exit(serve_stdio(job, tools or None))


def main() -> None:
    """Console-script entry point (`coro`)."""
    app()


if __name__ == "__main__":
    main()
