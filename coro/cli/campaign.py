"""`coro campaign …`: list campaigns, show their children, and steer a child (SPEC §4.5,
§5) through the runner's `/campaigns` and `/jobs/:id/children/…` API."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from coro.cli.client import RunnerClient, connect

campaign_app = typer.Typer(
    name="campaign",
    help="Campaigns (a job split into child jobs): list, show, and skip / rerun / cancel / "
    "abandon / resume / start a child.",
    no_args_is_help=True,
)

CHILD_STYLES = {
    "pending": "dim",
    "ready": "cyan",
    "dispatched": "blue",
    "complete": "bold green",
    "failed": "bold red",
    "escalated": "bold red",
    "skipped": "dim",
    "cancelled": "dim",
}

JobId = Annotated[str, typer.Argument(metavar="JOB_ID", help="The campaign job's id.")]
ChildName = Annotated[str, typer.Argument(metavar="CHILD", help="The child's name.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the raw JSON.")]
Reason = Annotated[
    str | None, typer.Option("--reason", "-r", metavar="TEXT", help="Why (kept in the log).")
]


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _status(status: Any) -> Text:
    text = str(status or "-")
    if text in CHILD_STYLES:
        return Text(text, style=CHILD_STYLES[text])
    if text.startswith("awaiting-"):
        return Text(text, style="yellow")
    return Text(text)


def _counts(by_status: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in by_status.items() if n) or "no children"


@campaign_app.command("list")
def list_campaigns(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=200)] = 50,
    json_output: JsonFlag = False,
) -> None:
    """Campaign jobs, newest first."""
    with connect() as client:
        page = client.get("/campaigns", params={"limit": limit})
    if json_output:
        _print_json(page)
        return
    campaigns: list[dict[str, Any]] = page.get("campaigns", [])
    console = _out()
    if not campaigns:
        console.print("No campaigns yet.")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("JOB", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("PHASE", no_wrap=True)
    table.add_column("CHILDREN", overflow="fold")
    table.add_column("TITLE", overflow="fold")
    for item in campaigns:
        table.add_row(
            str(item.get("jobId")),
            _status(item.get("status")),
            str(item.get("phase") or "-"),
            f"{item.get('totalChildren', 0)}: {_counts(item.get('byStatus') or {})}",
            str(item.get("title") or "")[:80],
        )
    console.print(table, soft_wrap=False)


@campaign_app.command("show")
def show_campaign(job_id: JobId, json_output: JsonFlag = False) -> None:
    """A campaign's children: status, dependencies and child job."""
    with connect() as client:
        data = client.get(RunnerClient.job_path(job_id, "children"))
        job = client.get(RunnerClient.job_path(job_id)) if not json_output else None
    if json_output:
        _print_json(data)
        return
    console = _out()
    header = Text.assemble(
        ("Campaign ", "bold"),
        (job_id, "bold"),
        "  ",
        _status(data.get("status")),
        f"  phase {data.get('phase')}  (max {data.get('maxParallelChildren')} in parallel)",
    )
    console.print(header)
    message = (job or {}).get("escalationMessage")
    if message:
        console.print(Text(message, style="bold red"))
    children: list[dict[str, Any]] = data.get("children", [])
    if not children:
        console.print("No children registered yet.")
    else:
        table = Table(box=None, header_style="bold", pad_edge=False)
        table.add_column("CHILD", no_wrap=True)
        table.add_column("STATUS", no_wrap=True)
        table.add_column("DEPENDS ON", overflow="fold")
        table.add_column("JOB", no_wrap=True)
        table.add_column("JOB STATUS", no_wrap=True)
        table.add_column("PRS", justify="right", no_wrap=True)
        for child in children:
            summary = child.get("summary") or {}
            table.add_row(
                str(child.get("name")),
                _status(child.get("status")),
                ", ".join(child.get("dependsOn") or []) or "-",
                str(child.get("jobId") or "-"),
                _status(summary.get("status")) if summary else Text("-"),
                str(len(summary.get("prMappings") or [])) if summary else "-",
            )
        console.print(table, soft_wrap=False)
    totals = data.get("totals") or {}
    tokens = int(totals.get("inputTokens", 0)) + int(totals.get("outputTokens", 0))
    console.print(
        f"{_counts(data.get('byStatus') or {})} · {totals.get('childJobCount', 0)} child "
        f"job(s) · {tokens} tokens · ${float(totals.get('totalCostUsd', 0.0)):.4f} · "
        f"{totals.get('prCount', 0)} PR(s)"
    )


def _act(job_id: str, child: str, action: str, body: dict[str, Any]) -> None:
    with connect() as client:
        result = client.post(RunnerClient.job_path(job_id, "children", child, action), body)
    entry = result.get("child") or {}
    job = f" (job {entry['jobId']})" if entry.get("jobId") else ""
    _out().print(
        Text.assemble(f'{action}: child "{child}" is now ', _status(entry.get("status")), job)
    )


def _control(action: str, doc: str) -> None:
    def command(job_id: JobId, child: ChildName, reason: Reason = None) -> None:
        _act(job_id, child, action, {"reason": reason} if reason else {})

    command.__doc__ = doc
    campaign_app.command(action)(command)


_control("skip", "Skip a child that has not finished (a failed one is abandoned instead).")
_control("rerun", "Reset a finished child; a new child job is created when its deps allow.")
_control("cancel", "Cancel a child that has not finished, and its job.")
_control("abandon", "Cancel a child, or do nothing if it is already cancelled or skipped.")
_control("start", "Dispatch a ready child now, past the parallelism cap.")


@campaign_app.command("resume")
def resume_child(
    job_id: JobId,
    child: ChildName,
    note: Annotated[
        str | None,
        typer.Option("--note", metavar="TEXT", help="A message for the child's agent."),
    ] = None,
) -> None:
    """Re-enter a failed or escalated child's job in place, optionally with a note."""
    _act(job_id, child, "resume", {"note": note} if note else {})
