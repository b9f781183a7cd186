"""`coro`: start a runner, create and watch jobs, steer them (SPEC §5).

Every command but `start` and `demo` talks to a runner over HTTP (`CORO_URL`, default
`http://127.0.0.1:3000`). Exit codes: 0 success, 1 failure (runner unreachable, an API
error, or a followed job that did not complete), 2 invalid usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import webbrowser
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from coro.cli.campaign import campaign_app
from coro.cli.client import (
    LogLine,
    RunnerClient,
    StreamDone,
    connect,
    report_error,
)
from coro.cli.cloud import cloud_app
from coro.cli.init import init
from coro.cli.login import login
from coro.cli.plugin import plugin_app
from coro.cli.pr import pr_app, repo_app
from coro.cli.ui import hide_flag_types, local_time, parse_time, print_listing
from coro.config import CoroConfig, CoroHome
from coro.domain.models import (
    CANCELLED,
    COMPLETE,
    ESCALATED,
    FAILED,
    PARKING,
    QUEUED,
    STATUS_GROUPS,
)

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
app.add_typer(pr_app)
app.add_typer(repo_app)
app.add_typer(campaign_app)
app.add_typer(plugin_app)
app.add_typer(cloud_app)
app.command("login")(login)
app.command("init")(init)

DEFAULT_WORKFLOW = "workflows/job/workflow.md"


def out() -> Console:
    """Standard output, created per command so test runners can capture it.

    Soft wrap keeps ids, URLs and log lines whole; tables pass `soft_wrap=False`.
    """
    return Console(highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


# --------------------------------------------------------------------------- rendering

STATUS_STYLES = {
    "complete": "bold green",
    "cancelled": "dim",
    "failed": "bold red",
    "escalated": "bold red",
    "queued": "cyan",
}


def status_style(status: str) -> str:
    if status in STATUS_STYLES:
        return STATUS_STYLES[status]
    if status.startswith("awaiting-"):
        return "yellow"
    return "blue"  # a phase status: the job is running


def status_text(status: str) -> Text:
    return Text(status, style=status_style(status))


def line_style(text: str) -> str:
    """Colour of one log line, by the runner's line conventions."""
    if text.startswith("→ "):
        return "cyan"
    if text.startswith(("[error]", "[tool-error]", "[escalated]")):
        return "bold red"
    if text.startswith("[control]"):
        return "magenta"
    if text.startswith("Phase advanced"):
        return "bold blue"
    if text.startswith("Phase ") and "(visit " in text:
        return "bold"
    if text.startswith("Job parked"):
        return "bold yellow"
    if text.startswith("All phases complete"):
        return "bold green"
    if text.startswith("[human]"):
        return "bright_magenta"
    if text.startswith(("[approval]", "[manual-resume]", "[work-item", "[artifact")):
        return "green"
    if text.startswith(("[warning]", "[rate-limit]", "[completion-gate]", "[recovery]")):
        return "yellow"
    if text.startswith(("[usage]", "[created]", "Runner started", "[thinking]")):
        return "dim"
    return ""


def render_line(item: LogLine, *, raw: bool = False, clip: int | None = None) -> Text:
    """`<local time> <text>`, coloured; `raw` keeps the stored UTC timestamp.

    `clip` shortens long tool-call lines (their JSON input) for a compact display. Print
    it with soft wrap to keep lines whole.
    """
    stamp, text = item.timestamp, item.text
    if clip is not None and text.startswith("→ ") and len(text) > clip:
        text = text[: clip - 1] + "…"
    if not stamp:
        return Text(text, style=line_style(text))
    if not raw:
        stamp = local_time(stamp)
    return Text.assemble((stamp, "dim"), " ", (text, line_style(text)))


def age(raw: str | None) -> str:
    parsed = parse_time(raw) if raw else None
    if parsed is None:
        return raw or "-"
    seconds = max(0, int((datetime.now(UTC) - parsed).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def cost(value: Any) -> str:
    try:
        return f"${float(value):.4f}"
    except (TypeError, ValueError):
        return "-"


def tokens(usage: dict[str, Any]) -> str:
    return (
        f"{int(usage.get('inputTokens') or 0):,} in / {int(usage.get('outputTokens') or 0):,} out"
    )


def follow_log(
    client: RunnerClient,
    job_id: str,
    console: Console,
    *,
    tail: int | None = None,
    raw: bool = False,
) -> str | None:
    """Print the log stream until `event: done`; the final status, or None if detached."""
    final: str | None = None
    try:
        with (
            console.status(f"Following {job_id} — Ctrl+C detaches", spinner="dots"),
            contextlib.closing(client.stream_log(job_id, tail=tail)) as stream,
        ):
            for item in stream:
                if isinstance(item, StreamDone):
                    final = item.status
                    break
                console.print(render_line(item, raw=raw))
    except KeyboardInterrupt:
        console.print(
            Text(
                f"Detached — the job keeps running. Watch again: coro logs {job_id} --follow",
                style="yellow",
            )
        )
        return None
    if final is None:  # stream_log ends with StreamDone or raises; never silently
        return None
    label = "Job complete" if final == "complete" else f"Job stopped: {final}"
    console.print(Text(label, style=status_style(final)))
    return final


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


# --------------------------------------------------------------------------- job


def parse_params(params_json: str | None, pairs: list[str]) -> dict[str, Any]:
    """`--params-json` (an object) first, then each `--param key=value` / `key:=<json>`."""
    params: dict[str, Any] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="--params-json") from None
        if not isinstance(loaded, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--params-json")
        params.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.rstrip(":").strip():
            raise typer.BadParameter(
                f"{pair!r}: expected key=value (string) or key:=<json>", param_hint="--param"
            )
        if key.endswith(":"):
            try:
                params[key[:-1].strip()] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise typer.BadParameter(
                    f"{pair!r}: the value after ':=' must be JSON ({exc})", param_hint="--param"
                ) from None
        else:
            params[key.strip()] = value
    return params


@app.command("job")
def create_job(
    repo: Annotated[
        str | None, typer.Option(metavar="REPO", help="Repository (URL or slug) to work on.")
    ] = None,
    description: Annotated[
        str | None, typer.Option(metavar="TEXT", help="What the job should do.")
    ] = None,
    workflow: Annotated[
        str,
        typer.Option(
            metavar="PATH", help="Workflow path, resolved through the intelligence layers."
        ),
    ] = DEFAULT_WORKFLOW,
    reviewers: Annotated[
        str | None,
        typer.Option(metavar="A,B", help="Comma-separated PR reviewers, e.g. alice,bob."),
    ] = None,
    service_name: Annotated[
        str | None,
        typer.Option("--service-name", metavar="NAME", help="Service label (default: the repo)."),
    ] = None,
    interactive: Annotated[
        bool, typer.Option("--interactive", help="Stop for approval at checkpoint phases.")
    ] = False,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            metavar="KEY=VALUE",
            help="Extra job param: key=value (a string) or key:=<json>. Repeatable.",
        ),
    ] = None,
    params_json: Annotated[
        str | None,
        typer.Option(
            "--params-json",
            hidden=True,
            help="All params as one JSON object (e.g. a `script` for the script executor).",
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream the job's log until it stops.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the runner's answer as JSON.")
    ] = False,
) -> None:
    """Create a job (POST /jobs) and print its id and stream URL."""
    if follow and json_output:
        raise typer.BadParameter("use either --follow or --json", param_hint="--json")
    body: dict[str, Any] = {
        "workflowPath": workflow,
        "params": parse_params(params_json, param or []),
        "triggerSource": "cli",
    }
    if repo:
        body["repo"] = repo
    if description:
        body["description"] = description
    if service_name:
        body["serviceName"] = service_name
    if reviewers:
        body["reviewers"] = [r.strip() for r in reviewers.split(",") if r.strip()]
    if interactive:
        body["interactive"] = True
    console = out()
    with connect() as client:
        created = client.post("/jobs", body)
        if json_output:
            print_json(created)
            return
        job_id = str(created["jobId"])
        console.print(
            Text.assemble(
                "Created job ",
                (job_id, "bold"),
                " (",
                status_text(str(created.get("status", "queued"))),
                ")",
            )
        )
        console.print(f"Stream: {client.base_url}{created.get('streamUrl', '')}")
        if not follow:
            console.print(Text(f"Follow it with: coro logs {job_id} --follow", style="dim"))
            return
        final = follow_log(client, job_id, console)
    if final is not None and final != "complete":
        raise typer.Exit(1)


# --------------------------------------------------------------------------- jobs


#: statuses every job can have; the others are the `status` of a workflow's phases
FIXED_STATUSES = (
    QUEUED,
    *sorted(PARKING - {FAILED, ESCALATED}),
    COMPLETE,
    CANCELLED,
    FAILED,
    ESCALATED,
)


def _check_statuses(client: RunnerClient, statuses: list[str]) -> None:
    """Refuse a `--status` no job can have, naming the valid ones.

    Phase statuses come from the workflows (`GET /workflows`); a status outside them
    that some job still has (a workflow since removed) is accepted.
    """
    unknown = [s for s in statuses if s not in FIXED_STATUSES]
    if not unknown:
        return
    workflows = client.get("/workflows").get("workflows") or []
    phase_statuses = sorted(
        {
            str(phase.get("status"))
            for workflow in workflows
            for phase in workflow.get("phases") or []
            if phase.get("status") and phase.get("status") not in FIXED_STATUSES
        }
    )
    for wanted in unknown:
        if wanted in phase_statuses:
            continue
        if client.get("/jobs", params=[("status", wanted), ("limit", 1)]).get("total"):
            continue
        hint = f" (a group: use --group {wanted})" if wanted in STATUS_GROUPS else ""
        raise typer.BadParameter(
            f"unknown status {wanted!r}{hint}. Statuses: {', '.join(FIXED_STATUSES)}; "
            f"phase statuses of the workflows: {', '.join(phase_statuses) or 'none'}. "
            f"Groups (--group): {', '.join(STATUS_GROUPS)}.",
            param_hint="--status",
        )


def _job_row(job: dict[str, Any]) -> tuple[Text, Text]:
    """A job as two lines: its id (whole), then the other columns."""
    return Text(str(job.get("id")), style="bold"), Text.assemble(
        status_text(str(job.get("status"))),
        f" · phase {job.get('phase') or '-'} · updated {age(job.get('updatedAt'))} · ",
        cost((job.get("tokenUsage") or {}).get("totalCostUsd")),
    )


@app.command("jobs")
def list_jobs(
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            "-s",
            metavar="STATUS",
            help="Only this status (queued, complete, awaiting-…, a phase's status). Repeatable.",
        ),
    ] = None,
    group: Annotated[
        Literal["active", "waiting", "stopped"] | None,
        typer.Option(help="active (running/queued), waiting (parked) or stopped."),
    ] = None,
    job_type: Annotated[
        str | None, typer.Option("--type", metavar="TYPE", help="Only jobs of this type.")
    ] = None,
    query: Annotated[
        str | None,
        typer.Option("--query", "-q", metavar="TEXT", help="Substring of id, description or repo."),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=200, metavar="N", help="At most this many jobs.")
    ] = 50,
    offset: Annotated[
        int, typer.Option(min=0, metavar="N", help="Skip this many (newest first).")
    ] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the raw JSON.")] = False,
) -> None:
    """List jobs, newest first (ids are never shortened)."""
    params: list[tuple[str, str | int]] = [("limit", limit), ("offset", offset)]
    params += [("status", s) for s in status or []]
    if group:
        params.append(("group", group))
    if job_type:
        params.append(("type", job_type))
    if query:
        params.append(("q", query))
    with connect() as client:
        _check_statuses(client, status or [])
        page = client.get("/jobs", params=params)
    if json_output:
        print_json(page)
        return
    jobs: list[dict[str, Any]] = page.get("jobs", [])
    console = out()
    if not jobs:
        console.print(
            "No jobs match." if (status or group or job_type or query) else "No jobs yet."
        )
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("PHASE", no_wrap=True)
    table.add_column("UPDATED", no_wrap=True)
    table.add_column("COST", justify="right", no_wrap=True)
    for job in jobs:
        table.add_row(
            str(job.get("id")),
            status_text(str(job.get("status"))),
            str(job.get("phase") or "-"),
            age(job.get("updatedAt")),
            cost((job.get("tokenUsage") or {}).get("totalCostUsd")),
        )
    print_listing(console, table, jobs, _job_row)
    total = int(page.get("total", len(jobs)))
    if total > len(jobs):
        shown = f"{offset + 1}–{offset + len(jobs)}"
        console.print(Text(f"Showing {shown} of {total} (use --limit/--offset)", style="dim"))


# --------------------------------------------------------------------------- status


def _print_status(job: dict[str, Any], console: Console) -> None:
    job_id = str(job.get("id"))
    params: dict[str, Any] = job.get("params") or {}
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("Job", job_id)
    grid.add_row("Status", status_text(str(job.get("status"))))
    grid.add_row("Phase", str(job.get("phase") or "-"))
    phases = [str(p.get("name")) for p in job.get("workflowPhases") or []]
    grid.add_row(
        "Workflow", f"{job.get('workflowPath')}" + (f"  ({' → '.join(phases)})" if phases else "")
    )
    grid.add_row("Type", f"{job.get('type')} (trigger: {job.get('triggerSource')})")
    if params.get("description"):
        grid.add_row("Description", str(params["description"]))
    if params.get("repo"):
        grid.add_row("Repository", str(params["repo"]))
    flags = [name for name in ("interactive", "paused") if job.get(name)]
    if flags:
        grid.add_row("Flags", ", ".join(flags))
    grid.add_row("Created", local_time(job.get("createdAt")))
    grid.add_row("Updated", f"{local_time(job.get('updatedAt'))} ({age(job.get('updatedAt'))})")
    if job.get("awaitingEvent"):
        waiting = str(job["awaitingEvent"])
        if job.get("awaitingNextPhase"):
            waiting += f" (then phase {job['awaitingNextPhase']})"
        grid.add_row("Awaiting", Text(waiting, style="yellow"))
    if job.get("escalationMessage"):
        grid.add_row("Escalation", Text(str(job["escalationMessage"]), style="red"))
    if job.get("currentWorkItem"):
        grid.add_row("Current item", str(job["currentWorkItem"]))
    console.print(grid, soft_wrap=False)

    items = job.get("workItems") or []
    if items:
        table = Table(title="Work items", title_justify="left", box=None, header_style="bold")
        table.add_column("NAME", overflow="fold")
        table.add_column("STATUS", no_wrap=True)
        table.add_column("LOOPS", justify="right")
        for item in items:
            item_status = str(item.get("status"))
            style = {"complete": "green", "in-progress": "blue", "escalated": "red"}.get(
                item_status, "yellow"
            )
            table.add_row(
                str(item.get("name")), Text(item_status, style=style), str(item.get("loopCount", 0))
            )
        console.print()
        console.print(table, soft_wrap=False)

    artifacts = job.get("artifacts") or []
    if artifacts:
        table = Table(title="Artefacts", title_justify="left", box=None, header_style="bold")
        table.add_column("PHASE", no_wrap=True)
        table.add_column("KIND", no_wrap=True)
        table.add_column("TITLE", overflow="fold")
        table.add_column("WHERE", overflow="fold")
        for art in artifacts:
            data = art.get("data") or {}
            where = data.get("path") or data.get("url") or ""
            table.add_row(
                str(art.get("phase")), str(art.get("kind")), str(art.get("title")), str(where)
            )
        console.print()
        console.print(table, soft_wrap=False)

    prs = job.get("prMappings") or []
    if prs:
        table = Table(title="Pull requests", title_justify="left", box=None, header_style="bold")
        for column in ("PR", "WORK ITEM", "STATE", "URL"):
            table.add_column(column, overflow="fold")
        for pr in prs:
            state = "merged" if pr.get("mergedAt") else "open"
            table.add_row(
                f"#{pr.get('prId')}",
                str(pr.get("workItem")),
                state,
                str(pr.get("url") or pr.get("repoSlug") or ""),
            )
        console.print()
        console.print(table, soft_wrap=False)

    usage_rows = _usage_by_phase(job)
    if usage_rows:
        table = Table(title="Usage by phase", title_justify="left", box=None, header_style="bold")
        table.add_column("PHASE", no_wrap=True)
        table.add_column("RUNS", justify="right")
        table.add_column("INPUT", justify="right")
        table.add_column("OUTPUT", justify="right")
        table.add_column("COST", justify="right")
        for phase, row in usage_rows.items():
            table.add_row(
                phase,
                str(row["runs"]),
                f"{row['inputTokens']:,}",
                f"{row['outputTokens']:,}",
                cost(row["costUsd"]),
            )
        console.print()
        console.print(table, soft_wrap=False)
    total = job.get("tokenUsage") or {}
    console.print()
    console.print(f"Total: {tokens(total)} tokens, {cost(total.get('totalCostUsd'))}")
    for hint in _next_steps(job):
        console.print(Text(hint, style="dim"))


def _usage_by_phase(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for usage in job.get("phaseUsage") or []:
        row = rows.setdefault(
            str(usage.get("phase")),
            {"runs": 0, "inputTokens": 0, "outputTokens": 0, "costUsd": 0.0, "durationMs": 0},
        )
        row["runs"] += 1
        row["inputTokens"] += int(usage.get("inputTokens") or 0)
        row["outputTokens"] += int(usage.get("outputTokens") or 0)
        row["costUsd"] += float(usage.get("costUsd") or 0.0)
        row["durationMs"] += int(usage.get("durationMs") or 0)
    return rows


def _next_steps(job: dict[str, Any]) -> list[str]:
    job_id = job.get("id")
    status = str(job.get("status"))
    awaiting = str(job.get("awaitingEvent") or "")
    if awaiting.startswith("developer-input: approval after"):
        return [
            f"Approve and continue: coro resume {job_id}",
            f"Or ask for changes:   coro message {job_id} '<feedback>'",
        ]
    if job.get("paused"):
        return [f"Paused: continue with coro resume {job_id}  or  coro message {job_id} '<text>'"]
    if status == "awaiting-developer-input":
        return [f"Answer: coro message {job_id} '<your reply>'"]
    if status in ("failed", "escalated"):
        return [f"Reply to continue: coro message {job_id} '<guidance>'  (or coro resume {job_id})"]
    return []


@app.command()
def status(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The job id.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the full job JSON.")] = False,
) -> None:
    """Show one job: status, phase, work items, artefacts, usage, what it waits for."""
    with connect() as client:
        job = client.get(client.job_path(job_id))
    if json_output:
        print_json(job)
        return
    _print_status(job, out())


# --------------------------------------------------------------------------- logs


def stored_log(client: RunnerClient, job_id: str, tail: int | None) -> list[LogLine]:
    """The log as stored when the command runs, without waiting for more.

    The SSE stream is the only log API and it stays open while a job is parked or
    running, so a "print and exit" needs to know where the stored log ends. First ask
    for `?tail=1`: the single line replayed is the last stored one, and its id is the
    log's last index. Then read from `Last-Event-ID: last - tail` (or from the start)
    and stop at that index. A stopped job's stream also ends by itself (`event: done`).
    """
    last: int | None = None
    with contextlib.closing(client.stream_log(job_id, tail=1)) as probe:
        first = next(probe, None)
        if isinstance(first, LogLine):
            last = first.index
    if last is None:
        return []
    start_after = last - tail if tail is not None and last - tail >= 0 else None
    lines: list[LogLine] = []
    with contextlib.closing(client.stream_log(job_id, last_event_id=start_after)) as stream:
        for item in stream:
            if isinstance(item, StreamDone):
                break
            lines.append(item)
            if item.index >= last:
                break
    return lines


@app.command()
def logs(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The job id.")],
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Keep streaming until the job stops (exit 1 unless it completed).",
        ),
    ] = False,
    tail: Annotated[
        int | None,
        typer.Option("--tail", "-n", min=0, metavar="N", help="Only the last N stored lines."),
    ] = None,
    raw: Annotated[
        bool,
        typer.Option("--raw", help="Print the lines as stored: UTC ISO timestamps, no colour."),
    ] = False,
) -> None:
    """Print a job's log (local times, YYYY-MM-DD HH:MM:SS); with --follow, stream new
    lines as they arrive."""
    console = Console(highlight=False, soft_wrap=True, no_color=True) if raw else out()
    with connect() as client:
        if not follow:
            if tail == 0:
                client.get(client.job_path(job_id))  # still report an unknown job
                return
            for item in stored_log(client, job_id, tail):
                console.print(render_line(item, raw=raw))
            return
        final = follow_log(client, job_id, console, tail=tail, raw=raw)
    if final is not None and final != "complete":
        raise typer.Exit(1)


# --------------------------------------------------------------------------- controls

DELIVERY = {
    "live": "injected into the running agent turn",
    "next-phase": "queued for the job's next phase",
    "resumed": "the job resumes with it",
}


@app.command()
def message(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The job id.")],
    text: Annotated[
        str, typer.Argument(metavar="TEXT", help="The message (an answer, an approval, guidance).")
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print the runner's answer.")] = False,
) -> None:
    """Send a message to a job: the running agent gets it, a parked job resumes with it."""
    with connect() as client:
        answer = client.post(client.job_path(job_id, "message"), {"message": text})
    if json_output:
        print_json(answer)
        return
    delivery = str(answer.get("delivery", ""))
    out().print(
        Text(f"Message sent to {job_id}: {DELIVERY.get(delivery, delivery)}", style="green")
    )


@app.command()
def resume(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The job id.")],
    from_phase: Annotated[
        str | None,
        typer.Option(
            "--from-phase", metavar="PHASE", help="Restart at this phase (fresh session)."
        ),
    ] = None,
    clear_session: Annotated[
        bool, typer.Option("--clear-session", help="Drop the conversation and start afresh.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the runner's answer.")] = False,
) -> None:
    """Resume a parked, failed or escalated job; at a checkpoint this approves and advances."""
    body: dict[str, Any] = {"clearSession": clear_session}
    if from_phase:
        body["fromPhase"] = from_phase
    with connect() as client:
        answer = client.post(client.job_path(job_id, "resume"), body)
    if json_output:
        print_json(answer)
        return
    out().print(
        Text.assemble(
            ("Resumed ", "green"),
            (job_id, "bold"),
            " — status ",
            status_text(str(answer.get("status"))),
            f", phase {answer.get('phase')}",
        )
    )


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The job id.")],
    reason: Annotated[
        str | None, typer.Option(metavar="TEXT", help="Why (kept in the log).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the runner's answer.")] = False,
) -> None:
    """Cancel a job: it stops at its next safe boundary and never resumes."""
    with connect() as client:
        answer = client.post(
            client.job_path(job_id, "cancel"), {"reason": reason} if reason else {}
        )
    if json_output:
        print_json(answer)
        return
    out().print(
        Text.assemble(
            "Cancelled ", (job_id, "bold"), " (", status_text(str(answer.get("status"))), ")"
        )
    )


@app.command()
def pause(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The job id.")],
    reason: Annotated[
        str | None, typer.Option(metavar="TEXT", help="Why (kept in the log).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the runner's answer.")] = False,
) -> None:
    """Pause a running job; continue it later with `coro message` or `coro resume`."""
    with connect() as client:
        answer = client.post(client.job_path(job_id, "pause"), {"reason": reason} if reason else {})
    if json_output:
        print_json(answer)
        return
    console = out()
    console.print(
        Text.assemble(
            "Paused ", (job_id, "bold"), " (", status_text(str(answer.get("status"))), ")"
        )
    )
    console.print(
        Text(
            f"Continue with: coro resume {job_id}  or  coro message {job_id} '<text>'", style="dim"
        )
    )


# --------------------------------------------------------------------------- demo


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the temporary CORO_HOME and print its path.")
    ] = False,
) -> None:
    """Run a job end to end offline (no keys, no network) with the script executor."""
    from coro.cli.demo import run_demo

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
