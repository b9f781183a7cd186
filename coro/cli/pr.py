"""`coro pr …` and `coro repo …`: review the pull requests of the offline `local` SCM
(SPEC §4.7, §5) through the runner's `/scm/local/…` API.

Pull request numbers are unique across every local repository, so a number alone names
one. Approvals and comments are made as `--as NAME` (default: `$USER`, else
"developer").
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, Literal

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from coro.cli.client import connect
from coro.cli.ui import local_time, print_listing

pr_app = typer.Typer(
    name="pr",
    help="Pull requests of the offline `local` SCM: list, show, approve, comment, merge, decline.",
    no_args_is_help=True,
)
repo_app = typer.Typer(
    name="repo",
    help="Repositories of the offline `local` SCM (bare git repositories on disk).",
    no_args_is_help=True,
)

PRS = "/scm/local/prs"
REPOS = "/scm/local/repos"
MAX_NAME = 100
STATE_STYLES = {"open": "bold green", "merged": "bold magenta", "declined": "dim"}

PrNumber = Annotated[int, typer.Argument(metavar="N", min=1, help="The pull request number.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the raw JSON.")]
AsName = Annotated[
    str | None,
    typer.Option("--as", metavar="NAME", help="Who you are (default: $USER, else developer)."),
]


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _me(name: str | None) -> str:
    chosen = (name or os.environ.get("USER") or "").strip() or "developer"
    return chosen[:MAX_NAME]


def _pr_path(number: int, *rest: str) -> str:
    return "/".join([PRS, str(number), *rest])


def _when(raw: Any) -> str:
    return local_time(raw)


def _state(state: Any) -> Text:
    text = str(state or "-")
    return Text(text, style=STATE_STYLES.get(text, ""))


def _branches(pr: dict[str, Any]) -> str:
    return f"{pr.get('sourceBranch')} → {pr.get('targetBranch')}"


# --------------------------------------------------------------------------- pr


@pr_app.command("list")
def list_prs(
    repo: Annotated[
        str | None, typer.Option("--repo", "-r", metavar="NAME", help="Only this repository.")
    ] = None,
    state: Annotated[
        Literal["open", "merged", "declined"] | None,
        typer.Option("--state", "-s", help="Only pull requests in this state."),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """List pull requests, newest first."""
    params = {k: v for k, v in (("repo", repo), ("state", state)) if v}
    with connect() as client:
        page = client.get(PRS, params=params)
    if json_output:
        _print_json(page)
        return
    prs: list[dict[str, Any]] = page.get("pullRequests", [])
    console = _out()
    if not prs:
        console.print("No pull requests match." if params else "No pull requests yet.")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("REPO", no_wrap=True)
    table.add_column("TITLE", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("BRANCHES", no_wrap=True)
    table.add_column("APPROVALS", no_wrap=True)
    table.add_column("COMMENTS", justify="right", no_wrap=True)
    table.add_column("UPDATED", no_wrap=True)
    for pr in prs:
        approvals = [str(a) for a in pr.get("approvals") or []]
        table.add_row(
            str(pr.get("id")),
            str(pr.get("repo")),
            Text(str(pr.get("title"))),
            _state(pr.get("state")),
            Text(_branches(pr)),
            Text(", ".join(approvals) if approvals else "-"),
            str(pr.get("commentCount", 0)),
            _when(pr.get("updatedAt")),
        )
    print_listing(console, table, prs, _pr_row)


def _pr_row(pr: dict[str, Any]) -> tuple[Text, Text]:
    """A pull request as two lines: number and title, then the other columns."""
    approvals = ", ".join(str(a) for a in pr.get("approvals") or []) or "none"
    return Text.assemble((f"#{pr.get('id')} ", "bold"), str(pr.get("title"))), Text.assemble(
        _state(pr.get("state")),
        f" · {pr.get('repo')} · {_branches(pr)} · approvals: {approvals} · "
        f"{pr.get('commentCount', 0)} comments · updated {_when(pr.get('updatedAt'))}",
    )


@pr_app.command("show")
def show_pr(number: PrNumber, json_output: JsonFlag = False) -> None:
    """Show a pull request: details, comments and its diff."""
    with connect() as client:
        pr = client.get(_pr_path(number))
    if json_output:
        _print_json(pr)
        return
    console = _out()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("Pull request", Text(f"#{pr.get('id')} {pr.get('title')}", style="bold"))
    grid.add_row("State", _state(pr.get("state")))
    grid.add_row("Repository", str(pr.get("repo")))
    grid.add_row("Branches", Text(_branches(pr)))
    grid.add_row("Author", Text(str(pr.get("author") or "-")))
    reviewers = [str(r) for r in pr.get("reviewers") or []]
    if reviewers:
        grid.add_row("Reviewers", Text(", ".join(reviewers)))
    approvals = [str(a) for a in pr.get("approvals") or []]
    grid.add_row(
        "Approvals",
        Text(", ".join(approvals), style="green") if approvals else Text("none", style="dim"),
    )
    grid.add_row("Created", _when(pr.get("createdAt")))
    if pr.get("mergedAt"):
        grid.add_row("Merged", f"{_when(pr.get('mergedAt'))}  ({pr.get('mergeSha')})")
    grid.add_row("URL", str(pr.get("url")))
    console.print(grid)
    body = str(pr.get("body") or "").strip()
    if body:
        console.print()
        console.print(Text(body))
    _print_comments(console, pr.get("comments") or [])
    console.print()
    diff = str(pr.get("diff") or "")
    if pr.get("diffError"):
        console.print(Text(f"No diff: {pr['diffError']}", style="yellow"))
    elif not diff.strip():
        console.print(Text("No changes.", style="dim"))
    else:
        console.print(Text("Diff", style="bold"))
        console.print(
            Syntax(diff, "diff", theme="ansi_dark", word_wrap=True, background_color="default")
        )
        if pr.get("diffTruncated"):
            console.print(Text("… the diff was cut (too large to show whole)", style="yellow"))


def _print_comments(console: Console, comments: list[dict[str, Any]]) -> None:
    if not comments:
        return
    console.print()
    console.print(Text(f"Comments ({len(comments)})", style="bold"))
    for comment in comments:
        reply = comment.get("inReplyTo")
        title = (
            f"#{comment.get('id')} {escape(str(comment.get('author')))} · "
            f"{_when(comment.get('createdAt'))}"
            + (f" · reply to #{reply}" if reply is not None else "")
        )
        console.print(
            Panel(
                Group(Text(str(comment.get("body") or ""))),
                title=title,
                title_align="left",
                border_style="dim",
            ),
            soft_wrap=False,
        )


@pr_app.command("approve")
def approve_pr(number: PrNumber, as_name: AsName = None, json_output: JsonFlag = False) -> None:
    """Approve a pull request (again: no change)."""
    with connect() as client:
        pr = client.post(_pr_path(number, "approve"), {"reviewer": _me(as_name)})
    if json_output:
        _print_json(pr)
        return
    approvals = ", ".join(str(a) for a in pr.get("approvals") or [])
    _out().print(
        Text.assemble(
            ("Approved ", "green"), (f"#{number}", "bold"), f" — approvals: {approvals or '-'}"
        )
    )


@pr_app.command("comment")
def comment_pr(
    number: PrNumber,
    text: Annotated[str, typer.Argument(metavar="TEXT", help="The comment.")],
    as_name: AsName = None,
    reply_to: Annotated[
        int | None,
        typer.Option("--reply-to", metavar="ID", min=1, help="Reply to this comment id."),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Comment on a pull request (or reply to one of its comments)."""
    body: dict[str, Any] = {"body": text, "author": _me(as_name)}
    if reply_to is not None:
        body["inReplyTo"] = reply_to
    with connect() as client:
        comment = client.post(_pr_path(number, "comments"), body)
    if json_output:
        _print_json(comment)
        return
    _out().print(
        Text.assemble(
            ("Commented on ", "green"), (f"#{number}", "bold"), f" (comment {comment.get('id')})"
        )
    )


@pr_app.command("merge")
def merge_pr(
    number: PrNumber,
    message: Annotated[
        str | None, typer.Option("--message", "-m", metavar="TEXT", help="The merge message.")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Merge a pull request with a merge commit (refused on conflicts)."""
    with connect() as client:
        answer = client.post(_pr_path(number, "merge"), {"message": message} if message else {})
    if json_output:
        _print_json(answer)
        return
    _out().print(Text(str(answer.get("message") or f"Merged #{number}"), style="green"))


@pr_app.command("decline")
def decline_pr(number: PrNumber, json_output: JsonFlag = False) -> None:
    """Decline (close without merging) a pull request."""
    with connect() as client:
        pr = client.post(_pr_path(number, "decline"))
    if json_output:
        _print_json(pr)
        return
    _out().print(Text.assemble("Declined ", (f"#{number}", "bold"), f" {pr.get('title')}"))


# --------------------------------------------------------------------------- repo


@repo_app.command("list")
def list_repos(json_output: JsonFlag = False) -> None:
    """List the local repositories."""
    with connect() as client:
        page = client.get(REPOS)
    if json_output:
        _print_json(page)
        return
    repos: list[dict[str, Any]] = page.get("repos", [])
    console = _out()
    if not repos:
        console.print("No local repositories yet (create one with `coro repo create NAME`).")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("NAME", no_wrap=True)
    table.add_column("BRANCHES", overflow="fold")
    table.add_column("OPEN PRS", justify="right", no_wrap=True)
    table.add_column("CLONE URL", overflow="fold")
    table.add_column("DESCRIPTION", overflow="fold")
    for repo in repos:
        table.add_row(
            str(repo.get("name")),
            Text(", ".join(str(b) for b in repo.get("branches") or []) or "-"),
            str(repo.get("openPullRequests", 0)),
            Text(str(repo.get("cloneUrl"))),
            Text(str(repo.get("description") or "")),
        )
    console.print(table, soft_wrap=False)


@repo_app.command("create")
def create_repo(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The repository name.")],
    description: Annotated[
        str, typer.Option("--description", "-d", metavar="TEXT", help="What it is.")
    ] = "",
    json_output: JsonFlag = False,
) -> None:
    """Create an empty local repository (clone it, commit, push to start)."""
    with connect() as client:
        repo = client.post(REPOS, {"name": name, "description": description})
    if json_output:
        _print_json(repo)
        return
    console = _out()
    console.print(Text.assemble(("Created ", "green"), (str(repo.get("name")), "bold")))
    console.print(Text(f"Clone it with: git clone {repo.get('cloneUrl')}", style="dim"))
