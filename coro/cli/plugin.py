"""`coro plugin list|install|remove`: the runner's plugins (SPEC §2.5, §5).

Drop-ins are Python distributions with a `coro.plugins` entry point; the runner installs
them with pip into `$CORO_HOME/plugins/site` and loads them without a restart.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from coro.cli.client import ApiError, ClientError, RunnerClient, RunnerUnreachable

plugin_app = typer.Typer(
    name="plugin",
    help="Plugins: list the installed ones, install or remove drop-ins.",
    no_args_is_help=True,
)

#: pip may take a while (an index, a build): the runner allows it 600 s.
INSTALL_TIMEOUT = 660.0

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the raw JSON.")]


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _client(timeout: float | None = None) -> Iterator[RunnerClient]:
    """Like `coro.cli.client.connect`, with a longer timeout where pip runs."""
    try:
        kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        with RunnerClient(**kwargs) as client:
            yield client
    except RunnerUnreachable as exc:
        _err().print(Text(exc.message, style="yellow"))
        raise typer.Exit(1) from None
    except ClientError as exc:
        _err().print(Text(f"Error: {exc.message}", style="bold red"))
        raise typer.Exit(1) from None


def _status(entry: dict[str, Any]) -> Text:
    if entry.get("error"):
        return Text(f"error: {entry['error']}", style="bold red")
    if entry.get("active"):
        return Text("active", style="bold green")
    if entry.get("configured") and not entry.get("enabled"):
        return Text("disabled", style="dim")
    return Text("not configured", style="yellow")


@plugin_app.command("list")
def list_plugins(json_output: JsonFlag = False) -> None:
    """List built-in and drop-in plugins with their state."""
    with _client() as client:
        listing = client.get("/plugins")
    if json_output:
        typer.echo(json.dumps(listing, indent=2, ensure_ascii=False))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("ID", "KIND", "VERSION", "SOURCE", "STATUS"):
        table.add_column(name, overflow="fold", no_wrap=name != "STATUS")
    for entry in listing.get("plugins", []):
        table.add_row(
            str(entry.get("id")),
            str(entry.get("kind") or "-"),
            str(entry.get("version") or "-"),
            str(entry.get("source")),
            _status(entry),
        )
    _out().print(table, soft_wrap=False)


@plugin_app.command("install")
def install_plugin(
    target: Annotated[
        str,
        typer.Argument(
            metavar="PACKAGE-OR-PATH",
            help="A pip requirement (name, name==1.2, git+https://…) or a local wheel/directory.",
        ),
    ],
    json_output: JsonFlag = False,
) -> None:
    """Install a drop-in plugin into the runner (pip) and load it without a restart."""
    local = Path(target).expanduser()
    body = {"path": str(local.resolve())} if local.exists() else {"package": target}
    console = _out()
    with _client(INSTALL_TIMEOUT) as client:
        try:
            with console.status(f"Installing {target} (pip)…", spinner="dots"):
                result = client.post("/plugins/install", body)
        except ApiError as exc:
            if json_output:
                typer.echo(json.dumps(exc.body, indent=2, ensure_ascii=False))
            else:
                _report_failure(exc)
            raise typer.Exit(1) from None
    if json_output:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    for dist in result.get("installed", []):
        console.print(Text(f"Installed {dist.get('name')} {dist.get('version')}", style="green"))
    for entry in result.get("plugins", []):
        line = Text(f"  {entry.get('id')} ({entry.get('kind')}) ")
        line.append_text(_status(entry))
        console.print(line)
        if entry.get("hint"):
            console.print(Text(f"    {entry['hint']}", style="dim"))


def _report_failure(exc: ApiError) -> None:
    console = _err()
    console.print(Text(f"Error: {exc.error}", style="bold red"))
    body = exc.body if isinstance(exc.body, dict) else {}
    for entry in body.get("plugins", []) or []:
        if isinstance(entry, dict) and entry.get("error"):
            console.print(Text(f"  {entry.get('id')}: {entry['error']}", style="red"))
    output = body.get("output")
    if isinstance(output, str) and output.strip():
        console.print(Text("pip said:", style="bold"))
        console.print(Text(output.strip()[-2000:], style="dim"))


@plugin_app.command("remove")
def remove_plugin(
    plugin_id: Annotated[str, typer.Argument(metavar="ID", help="The drop-in's plugin id.")],
    json_output: JsonFlag = False,
) -> None:
    """Uninstall a drop-in plugin (built-ins cannot be removed; disable them in config)."""
    with _client() as client:
        response = client.request("DELETE", f"/plugins/{quote(plugin_id, safe='')}")
    result = response.json()
    if json_output:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    console = _out()
    console.print(Text(f"Removed {', '.join(result.get('removed', []))}", style="green"))
    if result.get("hint"):
        console.print(Text(result["hint"], style="yellow"))
