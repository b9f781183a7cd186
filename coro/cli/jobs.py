"""The commands on jobs: create one (`coro job`), list them (`coro jobs`), read one
(`status`, `logs`, following its live log), and steer it (`message`, `resume`, `cancel`,
`pause`). Each talks to the runner at `$CORO_URL`."""

from __future__ import annotations

import contextlib
import json
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from coro.cli.client import LogLine, RunnerClient, StreamDone, connect
from coro.cli.ui import (
    age,
    cost,
    local_time,
    out,
    print_json,
    print_listing,
    render_line,
    status_style,
    status_text,
    tokens,
)
from coro.domain.models import (
    CANCELLED,
    COMPLETE,
    ESCALATED,
    FAILED,
    PARKING,
    QUEUED,
    STATUS_GROUPS,
)

jobs_app = typer.Typer()

DEFAULT_WORKFLOW = "workflows/job/workflow.md"


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


@jobs_app.command("job")
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


@jobs_app.command("jobs")
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


@jobs_app.command()
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


@jobs_app.command()
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


@jobs_app.command()
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


@jobs_app.command()
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


@jobs_app.command()
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


@jobs_app.command()
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
