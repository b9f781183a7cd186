"""`coro demo`: one job end to end, offline, in a few seconds.

A runner is started in-process on a throwaway `CORO_HOME` with the deterministic
`script` executor (no keys, no network) and the offline `local` SCM, which holds a small
bare repository, `greeter`. The demo job runs `workflows/demo/workflow.md` (planning →
implementation → evaluation) as an interactive job, and the demo plays the developer:

1. the job parks after planning; the demo shows the plan and approves it (`POST /resume`);
2. the job clones `greeter`, writes the change on a branch, opens pull request #1 and
   parks waiting for review; the demo shows the diff, approves the PR and leaves a
   comment (what `coro pr approve` / `coro pr comment` do);
3. the PR poller sees both and wakes the job with one prompt; the job answers the
   comment with a fix, replies, merges, and the change is on the repository's `main`.

The log streams to the terminal throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console, Group
from rich.markdown import Markdown
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from coro.cli.client import LogLine, SseParser, StreamDone, StreamItem
from coro.cli.ui import cost, render_line, status_style, status_text
from coro.plugins.scm.local import PLUGIN_ID as LOCAL_SCM
from coro.plugins.scm.local import LocalScm
from coro.system.git import run_git

DEMO_WORKFLOW = "workflows/demo/workflow.md"
DEMO_REPO = "greeter"
DEMO_PR = 1  # the first pull request of a fresh local SCM
REVIEW_LABEL = "pr:review"
REVIEW_COMMENT = "Looks good. Please add a usage line to the README before merging."
REVIEWER = "demo-reviewer"
DEMO_TIMEOUT_SECONDS = 120  # a guard against a hang; the demo takes a few seconds
CHECKPOINT_PREFIX = "developer-input: approval after "
PARKED_PREFIX = "Job parked — waiting for: "
TOOL_LINE_CLIP = 160  # tool calls show their JSON input; the demo keeps them to one line


class DemoError(Exception):
    """The demo could not go on (an API error, an unexpected park, a lost stream)."""


DESCRIPTION = (
    "Add a tiny greeting module (greeter.py) with a self-check to the greeter repository, "
    "through a reviewed pull request."
)

README_MD = "# greeter\n\nGreetings, as a service.\n"
README_WITH_USAGE = README_MD + "\n## Usage\n\n    python greeter.py  # prints Hello, Coro!\n"

PLAN_MD = """# Plan: a greeting module

## Work items
1. **write-greeter**: in the `greeter` repository, create `greeter.py` with
   `greet(name) -> "Hello, <name>!"` and a self-check that runs when the file is executed;
   run it and keep its output in `greeter-output.txt`.
2. **merge-greeter**: open a pull request, answer the review, merge once approved.

## Risks
None: a new file with no dependencies.
"""

GREETER_PY = '''"""A greeting, written by the demo job's implementation phase."""


def greet(name: str) -> str:
    return f"Hello, {name}!"


if __name__ == "__main__":
    assert greet("Coro") == "Hello, Coro!"
    print(greet("Coro"))
    print("self-check passed")
'''

EVALUATION_MD = """# Evaluation

| work item | verdict |
|---|---|
| write-greeter | done: `greeter.py` defines `greet` and checks itself (`greeter-output.txt`) |
| merge-greeter | done: PR #1 approved, review comment answered, merged into `main` |

Every work item is complete; no follow-up needed.
"""


def demo_script(python: str = sys.executable) -> dict[str, Any]:
    """`params.script` for the demo job: what a model would do, replayed step by step."""

    def tool(tool_name: str, /, **tool_input: Any) -> dict[str, Any]:
        return {"tool": tool_name, "input": tool_input}

    def item(name: str, status: str) -> dict[str, Any]:
        return tool("update_work_item", name=name, status=status)

    return {
        "planning": [
            {"text": "Reading the task and planning the change."},
            tool("set_work_items", workItems=["write-greeter", "merge-greeter"]),
            tool("file_write", path="plan.md", content=PLAN_MD),
            tool(
                "post_artifact",
                kind="plan-md",
                title="Implementation plan",
                data={"path": "plan.md"},
            ),
            {"text": "Plan ready: two work items. Waiting for approval."},
            {"usage": {"inputTokens": 1840, "outputTokens": 420, "costUsd": 0.0118}},
        ],
        "implementation": [
            [
                {"text": "Implementing the approved plan in the greeter repository."},
                item("write-greeter", "in-progress"),
                tool("scm_clone_repo", repo=DEMO_REPO),
                tool("file_write", path=f"{DEMO_REPO}/greeter.py", content=GREETER_PY),
                tool(
                    "shell",
                    command=f"{shlex.quote(python)} {DEMO_REPO}/greeter.py "
                    "> greeter-output.txt 2>&1",
                ),
                tool(
                    "post_artifact",
                    kind="command-output",
                    title="Output of greeter.py",
                    data={"path": "greeter-output.txt"},
                ),
                item("write-greeter", "complete"),
                item("merge-greeter", "in-progress"),
                tool(
                    "scm_create_pr",
                    title="Add greeter.py",
                    body="Adds `greet(name)` with a self-check (see the job's artefacts).",
                ),
                {"text": "Pull request opened; waiting for review."},
                {"usage": {"inputTokens": 2960, "outputTokens": 610, "costUsd": 0.0181}},
                tool("await_event", eventName=REVIEW_LABEL, prId=DEMO_PR),
            ],
            [
                {"text": "Review received: approved, with one request. Addressing it."},
                tool("scm_list_pr_comments", prId=DEMO_PR),
                tool("file_write", path=f"{DEMO_REPO}/README.md", content=README_WITH_USAGE),
                tool("scm_push", message="Document usage in the README"),
                tool(
                    "scm_post_pr_comment",
                    prId=DEMO_PR,
                    body="Done: the README now has a usage section.",
                    inReplyTo="1",
                ),
                tool("scm_merge_pr", prId=DEMO_PR),
                item("merge-greeter", "complete"),
                {"usage": {"inputTokens": 1210, "outputTokens": 240, "costUsd": 0.0071}},
            ],
        ],
        "evaluation": [
            {"text": "Checking every work item against the plan."},
            tool("file_write", path="evaluation.md", content=EVALUATION_MD),
            tool(
                "post_artifact",
                kind="evaluation-report",
                title="Evaluation report",
                data={"path": "evaluation.md"},
            ),
            {"text": "All work items verified; the change is complete."},
            {"usage": {"inputTokens": 1520, "outputTokens": 280, "costUsd": 0.0087}},
        ],
    }


# --------------------------------------------------------------------------- entry point


def run_demo(*, keep: bool = False) -> int:
    """Run the demo; 0 if the job completed, else 1."""
    console = Console(highlight=False, soft_wrap=True)  # ids and paths stay whole
    home_dir: contextlib.AbstractContextManager[str]
    if keep:
        home_dir = contextlib.nullcontext(tempfile.mkdtemp(prefix="coro-demo-"))
    else:
        home_dir = tempfile.TemporaryDirectory(prefix="coro-demo-", ignore_cleanup_errors=True)
    with home_dir as root:
        try:
            code = asyncio.run(_demo(Path(root), console))
        except KeyboardInterrupt:
            console.print(Text("Demo interrupted.", style="yellow"))
            code = 1
        if keep:
            console.print(f"Demo home kept at {root} (job files under {Path(root) / 'work'})")
            console.print(Text(f"Inspect it with: CORO_HOME={root} coro start", style="dim"))
    return code


NO_SANDBOX_NOTE = (
    "bubblewrap is not available here, so the demo's own scripted shell commands run "
    "unsandboxed. Install it (apt-get install bubblewrap) before running real agents: "
    "their shell tool refuses to run without it."
)


async def _bubblewrap_works() -> bool:
    from coro.tools.sandbox import SandboxPolicy, SandboxUnavailable, require_bwrap

    try:
        await require_bwrap(SandboxPolicy())
    except SandboxUnavailable:
        return False
    return True


async def _demo(root: Path, console: Console) -> int:
    from coro.api.server import serve
    from coro.config import CoroConfig, CoroHome
    from coro.runner import Runner

    home = CoroHome(root)
    # The reviewer's approval and comment are made a moment apart; polling a little after
    # the last change hands them to the job together.
    settings: dict[str, Any] = {
        "llm": {"defaultProvider": "script"},
        "polling": {"localChangeDelaySeconds": 1.0},
    }
    sandboxed = await _bubblewrap_works()
    if not sandboxed:
        # The demo's commands are its own script, not an agent's: they may run unsandboxed.
        settings["tools"] = {"shell": {"sandbox": "off"}}
    config = CoroConfig.model_validate(settings)
    await asyncio.to_thread(home.save_config, config)
    started = time.monotonic()
    console.rule("[bold]Coro demo")
    console.print(
        "An in-process runner with the deterministic [bold]script[/] executor runs a job on "
        f"[bold]{DEMO_WORKFLOW}[/]: planning → (plan approval) → implementation → pull "
        "request → (review) → merge → evaluation, against a git repository kept by the "
        "offline [bold]local[/] SCM. No model, no keys, no network."
    )
    if not sandboxed:
        console.print(Text(NO_SANDBOX_NOTE, style="yellow"))
    runner = Runner(home, config)
    local = runner.plugins.get("scm", LOCAL_SCM)
    if not isinstance(local, LocalScm):
        console.print(Text("The local SCM is not available.", style="red"))
        return 1
    await _create_repo(local, root)
    try:
        async with contextlib.AsyncExitStack() as stack:
            with console.status("Starting the runner…"):
                served = await stack.enter_async_context(serve(runner, "127.0.0.1", 0))
                client = await stack.enter_async_context(
                    httpx.AsyncClient(base_url=served.url, timeout=30)
                )
            console.print(Text(f"Runner listening on {served.url} (home {root})", style="dim"))
            async with asyncio.timeout(DEMO_TIMEOUT_SECONDS):
                return await _run_job(client, console, started, local.repo_path(DEMO_REPO))
    except TimeoutError:
        console.print(Text(f"The demo did not finish in {DEMO_TIMEOUT_SECONDS}s.", style="red"))
        return 1
    except (httpx.HTTPError, DemoError) as exc:
        console.print(Text(f"Demo failed: {exc}", style="bold red"))
        return 1


async def _run_job(client: httpx.AsyncClient, console: Console, started: float, bare: Path) -> int:
    response = await client.post(
        "/jobs",
        json={
            "workflowPath": DEMO_WORKFLOW,
            "description": DESCRIPTION,
            "interactive": True,
            "serviceName": "demo",
            "repo": DEMO_REPO,
            "triggerSource": "cli",
            "params": {"script": demo_script()},
        },
    )
    created = _ok(response, "create the job")
    job_id = str(created["jobId"])
    console.print(Text.assemble("Created job ", (job_id, "bold"), "\n"))

    final: str | None = None
    with console.status("Job running…", spinner="dots") as spinner:
        async for item in stream_log(client, job_id):
            if isinstance(item, StreamDone):
                final = item.status
                break
            console.print(render_line(item, clip=TOOL_LINE_CLIP))
            if item.text.startswith(PARKED_PREFIX):
                spinner.stop()
                label = item.text.removeprefix(PARKED_PREFIX)
                if label == REVIEW_LABEL:
                    await _review_pull_request(client, console)
                else:
                    await _approve_checkpoint(client, console, job_id, label)
                spinner.start()
    if final is None:
        raise DemoError("the log stream ended before the job stopped")
    job = _ok(await client.get(f"/jobs/{job_id}"), "read the job")
    await _print_summary(client, console, job, time.monotonic() - started, bare)
    return 0 if final == "complete" and job.get("status") == "complete" else 1


async def _create_repo(local: Any, root: Path) -> None:
    source = root / "greeter-source"
    await asyncio.to_thread(source.mkdir)
    await asyncio.to_thread((source / "README.md").write_text, README_MD, encoding="utf-8")
    await local.create_repo(DEMO_REPO, from_dir=source, description="The demo's repository")


async def _review_pull_request(client: httpx.AsyncClient, console: Console) -> None:
    pr = _ok(await client.get(f"/scm/local/prs/{DEMO_PR}"), "read the pull request")
    console.print()
    console.print(
        Panel(
            Syntax(str(pr.get("diff") or "(empty diff)"), "diff", word_wrap=True),
            title=f"PR #{DEMO_PR}: {pr.get('title')} ({pr.get('sourceBranch')} → "
            f"{pr.get('targetBranch')})",
            border_style="cyan",
            expand=False,
        ),
        soft_wrap=False,
    )
    _ok(
        await client.post(f"/scm/local/prs/{DEMO_PR}/approve", json={"reviewer": REVIEWER}),
        "approve the pull request",
    )
    _ok(
        await client.post(
            f"/scm/local/prs/{DEMO_PR}/comments",
            json={"body": REVIEW_COMMENT, "author": REVIEWER},
        ),
        "comment on the pull request",
    )
    console.print(
        Text.assemble(
            (f"✔ The demo approves PR #{DEMO_PR} and comments: ", "bold green"),
            (f"“{REVIEW_COMMENT}”", "green"),
            (
                f" — in real use: `coro pr approve {DEMO_PR}` and `coro pr comment {DEMO_PR} "
                "…`, or the forge's own review. The PR poller wakes the job.\n",
                "green",
            ),
        )
    )


async def _approve_checkpoint(
    client: httpx.AsyncClient, console: Console, job_id: str, label: str
) -> None:
    if not label.startswith(CHECKPOINT_PREFIX):
        raise DemoError(f"the job parked unexpectedly ({label})")
    job = _ok(await client.get(f"/jobs/{job_id}"), "read the job")
    plan = next((a for a in job.get("artifacts", []) if a.get("kind") == "plan-md"), None)
    console.print()
    if plan is None:
        raise DemoError("the planning phase published no plan-md artefact")
    content = await client.get(f"/jobs/{job_id}/artifacts/{plan['id']}/content")
    text = _ok_text(content, "read the plan")
    path = plan.get("data", {}).get("path", "plan.md")
    console.print(
        Panel(
            Markdown(text), title=f"{plan.get('title')} ({path})", border_style="cyan", expand=False
        ),
        soft_wrap=False,
    )
    console.print(
        Text.assemble(
            ("✔ The demo approves the plan", "bold green"),
            (
                f" — in real use you review it in the dashboard or run `coro resume {job_id}` "
                "(or send feedback with `coro message`).",
                "green",
            ),
        )
    )
    answer = _ok(await client.post(f"/jobs/{job_id}/resume", json={}), "approve the plan")
    console.print(
        Text(f"Approved: the job continues with phase {answer.get('phase')}.\n", style="green")
    )


async def _print_summary(
    client: httpx.AsyncClient, console: Console, job: dict[str, Any], elapsed: float, bare: Path
) -> None:
    status = str(job.get("status"))
    console.print()
    console.rule("[bold]Summary")
    phases = Table(box=None, header_style="bold", title="Phases", title_justify="left")
    for column in ("PHASE", "INPUT", "OUTPUT", "COST", "TIME"):
        phases.add_column(column, justify="left" if column == "PHASE" else "right")
    for usage in job.get("phaseUsage", []):
        phases.add_row(
            str(usage.get("phase")),
            f"{int(usage.get('inputTokens') or 0):,}",
            f"{int(usage.get('outputTokens') or 0):,}",
            cost(usage.get("costUsd")),
            f"{int(usage.get('durationMs') or 0)} ms",
        )
    items = Table(box=None, header_style="bold", title="Work items", title_justify="left")
    items.add_column("NAME")
    items.add_column("STATUS")
    for item in job.get("workItems", []):
        item_status = str(item.get("status"))
        items.add_row(
            str(item.get("name")),
            Text(item_status, style="green" if item_status == "complete" else "yellow"),
        )
    artefacts = Table(box=None, header_style="bold", title="Artefacts", title_justify="left")
    for column in ("PHASE", "KIND", "TITLE", "FILE"):
        artefacts.add_column(column)
    for art in job.get("artifacts", []):
        artefacts.add_row(
            str(art.get("phase")),
            str(art.get("kind")),
            str(art.get("title")),
            str((art.get("data") or {}).get("path", "")),
        )
    total = job.get("tokenUsage", {})
    totals = Text.assemble(
        ("Status: ", "bold"),
        (status, status_style(status)),
        ("\nTokens: ", "bold"),
        f"{int(total.get('inputTokens') or 0):,} in / {int(total.get('outputTokens') or 0):,} out",
        ("   Cost: ", "bold"),
        f"{cost(total.get('totalCostUsd'))} (simulated)",
        ("   Duration: ", "bold"),
        f"{elapsed:.1f}s",
    )
    summary = Group(phases, Text(""), items, Text(""), artefacts, Text(""), totals)
    console.print(summary, soft_wrap=False)
    output = next((a for a in job.get("artifacts", []) if a.get("kind") == "command-output"), None)
    if output is not None:
        content = await client.get(f"/jobs/{job.get('id')}/artifacts/{output['id']}/content")
        if content.status_code == 200:
            console.print(
                Panel(
                    content.text.rstrip(),
                    title="greeter.py output",
                    border_style="dim",
                    expand=False,
                ),
                soft_wrap=False,
            )
    history = await _main_history(client, bare)
    if history:
        console.print(
            Panel(history, title=f"{DEMO_REPO}: main", border_style="dim", expand=False),
            soft_wrap=False,
        )
    verdict = "The job completed." if status == "complete" else "The job did not complete."
    console.print(Text.assemble(("Demo finished: ", "bold"), status_text(status), f" — {verdict}"))


# --------------------------------------------------------------------------- SSE (async)


async def stream_log(
    client: httpx.AsyncClient, job_id: str, *, max_reconnects: int = 5
) -> AsyncIterator[StreamItem]:
    """The job's SSE log; reconnects with Last-Event-ID, ends after `event: done`."""
    last: int | None = None
    attempt = 0
    while True:
        headers = {"Last-Event-ID": str(last)} if last is not None else {}
        try:
            async with client.stream(
                "GET", f"/jobs/{job_id}/stream", headers=headers, timeout=httpx.Timeout(30, read=60)
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise DemoError(f"stream failed: HTTP {response.status_code} {response.text}")
                parser = SseParser()
                async for raw in response.aiter_lines():
                    event = parser.feed(raw)
                    if event is None:
                        continue
                    if event.event == "done":
                        yield StreamDone(event.data)
                        return
                    index = int(event.id) if event.id and event.id.isdigit() else -1
                    if last is not None and 0 <= index <= last:
                        continue
                    last = index if index >= 0 else last
                    attempt = 0
                    yield LogLine(index, event.data)
        except httpx.TransportError:
            pass
        attempt += 1
        if attempt > max_reconnects:
            raise DemoError("lost the log stream")
        await asyncio.sleep(0 if attempt == 1 else 0.2 * attempt)


async def _main_history(client: httpx.AsyncClient, bare: Path) -> str:
    """What the review left behind: the PR's state and conversation, and main's history."""
    response = await client.get(f"/scm/local/prs/{DEMO_PR}")
    if response.status_code != 200:
        return ""
    pr = response.json()
    lines = [f"PR #{DEMO_PR} {pr.get('state')}: {pr.get('title')}"]
    lines += [f"  {c.get('author')}: {c.get('body')}" for c in pr.get("comments", [])]
    log = await run_git(
        ["--git-dir", str(bare), "log", "--graph", "--format=%h %s", "main"],
        cwd=bare,
        timeout_seconds=30,
    )
    if log.returncode == 0:
        lines += ["", *log.stdout.rstrip().splitlines()]
    return "\n".join(lines)


def _ok(response: httpx.Response, what: str) -> Any:
    if response.status_code >= 400:
        raise DemoError(f"could not {what}: HTTP {response.status_code} {response.text}")
    return response.json()


def _ok_text(response: httpx.Response, what: str) -> str:
    if response.status_code >= 400:
        raise DemoError(f"could not {what}: HTTP {response.status_code} {response.text}")
    return response.text
