"""The `coro` CLI against a real runner (the `api` fixture) and `coro demo` end to end.

The CLI is synchronous and the runner lives in the test's event loop, so commands run
off the loop (`asyncio.to_thread`) or as subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from coro.api.server import free_port
from coro.cli.client import LogLine, RunnerClient, StreamDone
from coro.cli.jobs import parse_params
from coro.cli.main import app
from coro.config import CoroConfig
from coro.state.logbus import Subscription
from tests.conftest import WAIT_LIMIT, Api, ApiFactory, write_workflow

REPO_ROOT = Path(__file__).resolve().parents[1]

TWO_PHASES = [
    {"name": "planning", "agent": None, "status": "planning"},
    {"name": "coding", "agent": None, "status": "coding"},
]

TWO_PHASE_SCRIPT: dict[str, Any] = {
    "planning": [
        {"text": "Planning the change"},
        {"tool": "set_work_items", "input": {"workItems": ["add-endpoint"]}},
        {"tool": "file_write", "input": {"path": "plan.md", "content": "# Plan\n- add"}},
        {
            "tool": "post_artifact",
            "input": {"kind": "plan-md", "title": "The plan", "data": {"path": "plan.md"}},
        },
        {"usage": {"inputTokens": 120, "outputTokens": 30}},
    ],
    "coding": [
        {"text": "Writing code"},
        {"tool": "update_work_item", "input": {"name": "add-endpoint", "status": "complete"}},
        {"usage": {"inputTokens": 200, "outputTokens": 80}},
    ],
}

#: One phase that asks the developer, then finishes once answered.
ASKS_DEVELOPER: dict[str, Any] = {
    "work": [
        [
            {"text": "Need a decision"},
            {"tool": "await_event", "input": {"eventName": "developer-input: which colour?"}},
        ],
        [{"text": "Thanks for the answer"}],
    ]
}


def _env(url: str) -> dict[str, str | None]:
    return {"CORO_URL": url, "CORO_API_TOKEN": None, "COLUMNS": "200"}


def invoke(url: str, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=_env(url))


async def cli(api: Api, *args: str) -> Result:
    """Run one `coro` command off the event loop against the fixture's runner."""
    return await asyncio.to_thread(invoke, api.served.url, *args)


def local_line(stored: str) -> str:
    """A stored log line (`<UTC ISO> <text>`) as the CLI shows it: local time."""
    stamp, text = stored.split(" ", 1)
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone()
    return f"{moment:%Y-%m-%d %H:%M:%S} {text}"


def json_of(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def create_by_cli(api: Api, workflow: str, script: dict[str, Any], *extra: str) -> str:
    result = await cli(
        api,
        "job",
        "--workflow",
        workflow,
        "--params-json",
        json.dumps({"script": script}),
        "--json",
        *extra,
    )
    return str(json_of(result)["jobId"])


# --------------------------------------------------------------------------- job/jobs/status


async def test_job_is_created_listed_filtered_and_shown(api: Api) -> None:
    workflow = write_workflow(api.home, "two-phase", TWO_PHASES)
    job_id = await create_by_cli(
        api,
        workflow,
        TWO_PHASE_SCRIPT,
        "--description",
        "a job from the CLI",
        "--repo",
        "acme/shop",
        "--reviewers",
        "alice, bob",
        "--param",
        "team=core",
        "--param",
        "retries:=3",
    )
    assert (await api.finish(job_id)).done == "complete"

    job = await api.job(job_id)
    assert job["triggerSource"] == "cli"
    params = job["params"]
    assert params["description"] == "a job from the CLI"
    assert params["repo"] == "acme/shop"
    assert params["reviewers"] == ["alice", "bob"]
    assert params["team"] == "core"
    assert params["retries"] == 3

    listed = json_of(await cli(api, "jobs", "--json"))
    assert [j["id"] for j in listed["jobs"]] == [job_id]
    assert listed["total"] == 1
    complete = json_of(
        await cli(api, "jobs", "--status", "complete", "--status", "failed", "--json")
    )
    assert [j["id"] for j in complete["jobs"]] == [job_id]
    assert json_of(await cli(api, "jobs", "--status", "failed", "--json"))["jobs"] == []
    assert json_of(await cli(api, "jobs", "--group", "waiting", "--json"))["jobs"] == []
    stopped = json_of(await cli(api, "jobs", "--group", "stopped", "--json"))
    assert [j["id"] for j in stopped["jobs"]] == [job_id]

    table = await cli(api, "jobs")
    assert table.exit_code == 0, table.output
    assert job_id in table.stdout
    assert "complete" in table.stdout

    shown = await cli(api, "status", job_id)
    assert shown.exit_code == 0, shown.output
    for expected in (
        job_id,
        "complete",
        workflow,
        "add-endpoint",
        "The plan",
        "plan.md",
        "320 in / 110 out",
    ):
        assert expected in shown.stdout, expected
    assert json_of(await cli(api, "status", job_id, "--json"))["id"] == job_id


async def test_job_follow_streams_until_done_and_exit_code_reflects_the_outcome(api: Api) -> None:
    workflow = write_workflow(api.home, "two-phase", TWO_PHASES)
    params = json.dumps({"script": TWO_PHASE_SCRIPT})
    done = await cli(api, "job", "--workflow", workflow, "--params-json", params, "--follow")
    assert done.exit_code == 0, done.output
    assert "Planning the change" in done.stdout
    assert "Phase advanced → coding" in done.stdout
    assert "All phases complete — job finished successfully" in done.stdout
    assert "Job complete" in done.stdout

    failing = json.dumps({"script": {"planning": [{"fail": "model exploded"}]}})
    failed = await cli(api, "job", "--workflow", workflow, "--params-json", failing, "--follow")
    assert failed.exit_code == 1, failed.output
    assert "model exploded" in failed.stdout
    assert "Job stopped: failed" in failed.stdout


async def test_bad_params_are_usage_errors_and_bad_workflows_are_runner_errors(api: Api) -> None:
    bad = await cli(api, "job", "--param", "no-equals-sign")
    assert bad.exit_code == 2
    missing = await cli(
        api, "job", "--workflow", "workflows/nope/workflow.md", "--description", "x"
    )
    assert missing.exit_code == 1
    assert "Error:" in missing.stderr
    assert "HTTP 400" in missing.stderr


def test_parse_params_merges_json_then_pairs() -> None:
    assert parse_params('{"a": 1, "b": "x"}', ["b=y", "c:=[1, 2]", "d=", "e:=true"]) == {
        "a": 1,
        "b": "y",
        "c": [1, 2],
        "d": "",
        "e": True,
    }


# --------------------------------------------------------------------------- logs


async def test_logs_tail_prints_exactly_the_last_stored_lines(api: Api) -> None:
    workflow = write_workflow(api.home, "two-phase", TWO_PHASES)
    job_id = await create_by_cli(api, workflow, TWO_PHASE_SCRIPT)
    stored = (await api.finish(job_id)).lines

    tail = await cli(api, "logs", job_id, "--tail", "2", "--raw")
    assert tail.exit_code == 0, tail.output
    assert tail.stdout.splitlines() == stored[-2:]

    everything = await cli(api, "logs", job_id, "--raw")
    assert everything.exit_code == 0, everything.output
    assert everything.stdout.splitlines() == stored

    nothing = await cli(api, "logs", job_id, "--tail", "0")
    assert nothing.exit_code == 0 and nothing.stdout == ""

    # without --raw: the same lines with local times, YYYY-MM-DD HH:MM:SS
    local = await cli(api, "logs", job_id, "--tail", "2")
    assert local.stdout.splitlines() == [local_line(line) for line in stored[-2:]]


async def test_logs_of_a_parked_job_print_what_is_stored_and_exit(api: Api) -> None:
    """The stream of a parked job stays open; `coro logs` must still return."""
    workflow = write_workflow(api.home, "asks", [{"name": "work", "agent": None}])
    job_id = await create_by_cli(api, workflow, ASKS_DEVELOPER)
    stored = (await api.wait_for_line(job_id, "Job parked")).lines
    assert (await api.job(job_id))["status"] == "awaiting-developer-input"

    tail = await cli(api, "logs", job_id, "--tail", "2", "--raw")
    assert tail.exit_code == 0, tail.output
    assert tail.stdout.splitlines() == stored[-2:]
    more = await cli(api, "logs", job_id, "--tail", str(len(stored) + 5), "--raw")
    assert more.stdout.splitlines() == stored
    everything = await cli(api, "logs", job_id)
    assert everything.stdout.splitlines() == [local_line(line) for line in stored]


async def test_logs_follow_ends_when_the_job_completes(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow = write_workflow(api.home, "asks", [{"name": "work", "agent": None}])
    job_id = await create_by_cli(api, workflow, ASKS_DEVELOPER)
    await api.wait_for_line(job_id, "Job parked")

    # know (without sleeping) when the CLI's stream has subscribed to the job's log
    bus = api.runner.store.bus
    subscribed = asyncio.Event()
    original = bus.subscribe

    def spy(sub_job_id: str) -> Subscription:
        subscription = original(sub_job_id)
        subscribed.set()
        return subscription

    monkeypatch.setattr(bus, "subscribe", spy)
    follow = asyncio.create_task(cli(api, "logs", job_id, "--follow"))
    async with asyncio.timeout(WAIT_LIMIT):
        await subscribed.wait()
    answer = await api.client.post(f"/jobs/{job_id}/message", json={"message": "green"})
    assert answer.status_code == 200, answer.text
    async with asyncio.timeout(WAIT_LIMIT):
        result = await follow
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.endswith("Need a decision") for line in lines)
    assert any(line.endswith("[human] green") for line in lines)
    assert any(line.endswith("Thanks for the answer") for line in lines)
    assert any(line.endswith("All phases complete — job finished successfully") for line in lines)
    assert lines[-1] == "Job complete"


# --------------------------------------------------------------------------- controls


async def test_message_resumes_a_job_waiting_for_developer_input(api: Api) -> None:
    workflow = write_workflow(api.home, "asks", [{"name": "work", "agent": None}])
    job_id = await create_by_cli(api, workflow, ASKS_DEVELOPER)
    await api.wait_for_line(job_id, "Job parked — waiting for: developer-input: which colour?")

    sent = await cli(api, "message", job_id, "blue, please")
    assert sent.exit_code == 0, sent.output
    assert "the job resumes with it" in sent.stdout

    result = await api.finish(job_id)
    assert result.done == "complete"
    texts = result.texts()
    assert "[human] blue, please" in texts
    assert "Thanks for the answer" in texts


async def test_pause_then_resume_then_cancel_reach_the_runner(api: Api) -> None:
    workflow = write_workflow(api.home, "slow", [{"name": "work", "agent": None}])
    script = {"work": [[{"text": "working"}, {"sleep": 600}], [{"text": "resumed work"}]]}
    job_id = await create_by_cli(api, workflow, script)
    await api.wait_for_line(job_id, "working")

    paused = await cli(api, "pause", job_id, "--reason", "lunch")
    assert paused.exit_code == 0, paused.output
    assert "Paused" in paused.stdout
    await api.wait_for_line(job_id, "Stopped at a safe boundary")
    job = await api.job(job_id)
    assert (job["status"], job["paused"]) == ("awaiting-developer-input", True)
    assert "coro resume" in (await cli(api, "status", job_id)).stdout

    resumed = await cli(api, "resume", job_id)
    assert resumed.exit_code == 0, resumed.output
    result = await api.finish(job_id)
    assert result.done == "complete"
    assert "resumed work" in result.texts()

    refused = await cli(api, "cancel", job_id)
    assert refused.exit_code == 1
    assert "Job is already complete" in refused.stderr


async def test_cancel_stops_a_parked_job(api: Api) -> None:
    workflow = write_workflow(api.home, "asks", [{"name": "work", "agent": None}])
    job_id = await create_by_cli(api, workflow, ASKS_DEVELOPER)
    await api.wait_for_line(job_id, "Job parked")

    cancelled = await cli(api, "cancel", job_id, "--reason", "not needed")
    assert cancelled.exit_code == 0, cancelled.output
    assert "cancelled" in cancelled.stdout
    result = await api.finish(job_id)
    assert result.done == "cancelled"
    assert "[control] Job cancelled: not needed" in result.texts()


async def test_resume_at_a_checkpoint_approves_and_advances(api: Api) -> None:
    phases: list[dict[str, Any]] = [
        {"name": "planning", "agent": None, "status": "planning", "interactive_checkpoint": True},
        {"name": "coding", "agent": None, "status": "coding"},
    ]
    workflow = write_workflow(api.home, "checkpoint", phases)
    script = {"planning": [{"text": "a plan"}], "coding": [{"text": "the code"}]}
    job_id = await create_by_cli(api, workflow, script, "--interactive")
    await api.wait_for_line(job_id, "approval after planning")

    shown = await cli(api, "status", job_id)
    assert "Approve and continue: coro resume" in shown.stdout
    resumed = await cli(api, "resume", job_id, "--json")
    assert json_of(resumed)["phase"] == "coding"
    result = await api.finish(job_id)
    assert result.done == "complete"
    assert "the code" in result.texts()


async def test_unknown_job_prints_the_runners_error_and_exits_1(api: Api) -> None:
    for args in (
        ["status", "nope-123"],
        ["logs", "nope-123"],
        ["logs", "nope-123", "-f"],
        ["message", "nope-123", "hi"],
        ["cancel", "nope-123"],
    ):
        result = await cli(api, *args)
        assert result.exit_code == 1, (args, result.output)
        assert "Job not found: nope-123" in result.stderr, args
        assert "HTTP 404" in result.stderr


def test_unreachable_runner_gives_a_friendly_message() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["jobs"], ["logs", "some-job", "--follow"]):
        result = invoke(url, *args)
        assert result.exit_code == 1, result.output
        assert f"The runner is not reachable at {url}" in result.stderr
        assert "coro start" in result.stderr
        assert "Traceback" not in result.output


# --------------------------------------------------------------------------- SSE client


class _DroppingStream(httpx.SyncByteStream):
    """Sends some bytes, then fails like a dropped connection."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __iter__(self) -> Iterator[bytes]:
        yield self.payload
        raise httpx.ReadError("connection reset")


def test_stream_reconnects_with_last_event_id_without_duplicates() -> None:
    seen: list[dict[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(
            {"last": request.headers.get("Last-Event-ID"), "tail": request.url.params.get("tail")}
        )
        sse = {"content-type": "text/event-stream"}
        if len(seen) == 1:  # two lines, then the connection drops
            return httpx.Response(
                200,
                headers=sse,
                stream=_DroppingStream(
                    b": heartbeat\n\nid: 5\ndata: t0 five\n\nid: 6\ndata: t1 six\ndata: more\n\n"
                ),
            )
        if len(seen) == 2:  # the server ends the stream without `done` (lagging client)
            return httpx.Response(
                200, headers=sse, content=b"id: 6\ndata: t1 six\n\nid: 7\ndata: t2 seven\n\n"
            )
        return httpx.Response(
            200, headers=sse, content=b"id: 8\ndata: t3 eight\n\nevent: done\ndata: complete\n\n"
        )

    client = RunnerClient(
        "http://runner.test", token="t" * 20, transport=httpx.MockTransport(handler)
    )
    items = list(client.stream_log("job-1", tail=3))
    assert items == [
        LogLine(5, "t0 five"),
        LogLine(6, "t1 six\nmore"),
        LogLine(7, "t2 seven"),
        LogLine(8, "t3 eight"),
        StreamDone("complete"),
    ]
    assert seen == [
        {"last": None, "tail": "3"},
        {"last": "6", "tail": None},
        {"last": "7", "tail": None},
    ]


def test_client_sends_the_api_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORO_API_TOKEN", "secret-token-0123456789")
    monkeypatch.setenv("CORO_URL", "http://runner.test/")
    headers: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers.get("Authorization"))
        return httpx.Response(401, json={"error": "Missing or invalid API token"})

    client = RunnerClient(transport=httpx.MockTransport(handler))
    assert client.base_url == "http://runner.test"
    with pytest.raises(Exception, match="CORO_API_TOKEN"):
        client.get("/jobs")
    assert headers == ["Bearer secret-token-0123456789"]


# --------------------------------------------------------------------------- start & demo


def test_start_refuses_a_public_bind_without_a_token(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["start", "--host", "0.0.0.0", "--no-open"],
        env={"CORO_HOME": str(tmp_path / "home")},
    )
    assert result.exit_code == 1
    assert "Refusing to listen on 0.0.0.0" in result.stderr


def test_start_reports_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            app,
            ["start", "--port", str(port), "--no-open"],
            env={"CORO_HOME": str(tmp_path / "home")},
        )
    assert result.exit_code == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr


def test_demo_keep_leaves_the_home_with_the_job_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from coro.cli.demo import run_demo

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert run_demo(keep=True) == 0
    (kept,) = [p for p in tmp_path.iterdir() if p.name.startswith("coro-demo-")]
    assert f"Demo home kept at {kept}" in capsys.readouterr().out
    assert (kept / "state.db").is_file()
    (workdir,) = (kept / "work").iterdir()
    assert (workdir / "greeter-output.txt").read_text() == "Hello, Coro!\nself-check passed\n"
    assert (workdir / "plan.md").is_file()
    merged = subprocess.run(
        ["git", "--git-dir", str(kept / "repos" / "greeter.git"), "show", "main:README.md"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "## Usage" in merged.stdout  # the review's fix reached main


def _subprocess_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORO_")}
    env.update(
        CORO_HOME=str(home),
        CI="1",
        PYTHONUNBUFFERED="1",
        COLUMNS="120",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    )
    return env


async def test_start_serves_the_api_until_sigterm(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coro",
        "start",
        "--port",
        "0",
        "--no-open",
        env=_subprocess_env(tmp_path / "home"),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(WAIT_LIMIT):
            while True:
                raw = await proc.stdout.readline()
                assert raw, "coro start exited early:\n" + "".join(seen)
                seen.append(raw.decode())
                if raw.startswith(b"Dashboard: "):
                    dashboard = raw.decode().split(" ", 1)[1].strip()
                    break
        assert dashboard.endswith("/dashboard/")
        base = dashboard.removesuffix("/dashboard/")
        async with httpx.AsyncClient(base_url=base) as client:
            health = await client.get("/health")
            assert health.json()["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT_LIMIT):
            rest = (await proc.stdout.read()).decode()
            code = await proc.wait()
        assert code == 0, "".join(seen) + rest
        assert "Runner stopped." in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_demo_without_bubblewrap_still_runs_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fresh machine without bubblewrap: the demo's own scripted commands run
    unsandboxed, and the demo says what real agents will need."""
    from coro.cli import demo

    async def missing() -> bool:
        return False

    monkeypatch.setattr(demo, "_bubblewrap_works", missing)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert demo.run_demo(keep=True) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "bubblewrap is not available here" in out
    assert "apt-get install bubblewrap" in out
    (kept,) = [p for p in tmp_path.iterdir() if p.name.startswith("coro-demo-")]
    assert json.loads((kept / "config.json").read_text())["tools"]["shell"]["sandbox"] == "off"
    (workdir,) = (kept / "work").iterdir()
    assert (workdir / "greeter-output.txt").read_text() == "Hello, Coro!\nself-check passed\n"


async def test_demo_runs_end_to_end_offline(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coro",
        "demo",
        env=_subprocess_env(tmp_path / "unused-home"),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(WAIT_LIMIT):
        output, _ = await proc.communicate()
    text = output.decode()
    assert proc.returncode == 0, text
    assert "Job parked — waiting for: developer-input: approval after planning" in text
    assert "The demo approves the plan" in text
    assert "[approval] Phase planning approved — advancing to implementation" in text
    assert "Opened PR #1 (coro/merge-greeter → main)" in text
    assert "Job parked — waiting for: pr:review" in text
    assert "The demo approves PR #1 and comments" in text
    assert "[event] Received 2 events: pullrequest:approved, pullrequest:comment_created" in text
    assert "[scm] PR #1 merged" in text
    assert "Merge pull request #1 from coro/merge-greeter" in text
    assert "All phases complete — job finished successfully" in text
    assert "Status: complete" in text
    assert "Demo finished: complete" in text
    # the log's times: local, YYYY-MM-DD HH:MM:SS, as `coro logs` shows them
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d Runner started", text, re.M)
    assert not (tmp_path / "unused-home").exists()


# --------------------------------------------------------------------------- first-run polish


def _at_width(url: str, columns: int, *args: str) -> Result:
    env = {"CORO_URL": url, "CORO_API_TOKEN": None, "COLUMNS": str(columns)}
    return CliRunner().invoke(app, list(args), env=env)


async def test_jobs_prints_every_id_whole_at_any_width(api: Api) -> None:
    workflow = write_workflow(api.home, "two-phase", TWO_PHASES)
    label = "a-rather-long-service-name-for-the-listing"
    job_id = await create_by_cli(api, workflow, TWO_PHASE_SCRIPT, "--service-name", label)
    assert (await api.finish(job_id)).done == "complete"
    assert len(job_id) > 60

    for columns in (40, 80, 200):
        listed = await asyncio.to_thread(_at_width, api.served.url, columns, "jobs")
        assert listed.exit_code == 0, listed.output
        assert job_id in listed.stdout.split(), (columns, listed.stdout)
        assert "complete" in listed.stdout
    # the id as printed names the job
    assert json_of(await cli(api, "status", job_id, "--json"))["id"] == job_id


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, command in getattr(group, "commands", {}).items():
        yield from _commands(command, (*path, name))


def test_help_shows_no_value_type_on_flags() -> None:
    import typer.main

    root = typer.main.get_command(app)
    paths = list(_commands(root))
    assert ("jobs",) in paths and ("pr", "list") in paths and ("init",) in paths
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.stdout, path
    jobs_help = CliRunner().invoke(app, ["jobs", "--help"], env={"COLUMNS": "120"}).stdout
    assert "STATUS" in jobs_help and "<active|waiting|stopped>" in jobs_help  # values keep theirs


async def test_an_unknown_status_is_refused_with_the_valid_ones(api: Api) -> None:
    bogus = await cli(api, "jobs", "--status", "bogus")
    assert bogus.exit_code == 2, bogus.output
    message = " ".join(bogus.stderr.split())
    assert "unknown status 'bogus'" in message
    for listed in ("queued", "awaiting-developer-input", "complete", "cancelled", "failed"):
        assert listed in message, listed
    assert "spec-writing" in message  # a phase status of the built-in job workflow
    assert "Groups (--group): active, waiting, stopped" in message

    group = await cli(api, "jobs", "--status", "waiting")
    assert group.exit_code == 2
    assert "use --group waiting" in " ".join(group.stderr.split())

    for valid in ("complete", "spec-writing", "awaiting-pr-merge"):
        result = await cli(api, "jobs", "--status", valid)
        assert result.exit_code == 0, (valid, result.output)
        assert "No jobs match." in result.stdout


async def test_resume_of_a_stopped_job_says_why_it_cannot(api: Api) -> None:
    workflow = write_workflow(api.home, "asks", [{"name": "work", "agent": None}])
    job_id = await create_by_cli(api, workflow, ASKS_DEVELOPER)
    await api.wait_for_line(job_id, "Job parked")
    assert (await cli(api, "cancel", job_id)).exit_code == 0
    cancelled = await cli(api, "resume", job_id)
    assert cancelled.exit_code == 1
    message = " ".join(cancelled.stderr.split())
    assert "Job was cancelled; a cancelled job cannot be resumed" in message
    assert "already" not in message

    done_id = await create_by_cli(api, workflow, {"work": [{"text": "done"}]})
    assert (await api.finish(done_id)).done == "complete"
    complete = await cli(api, "resume", done_id)
    assert complete.exit_code == 1
    assert "Job is complete; there is nothing to resume" in " ".join(complete.stderr.split())


async def test_status_shows_local_times(api: Api) -> None:
    workflow = write_workflow(api.home, "two-phase", TWO_PHASES)
    job_id = await create_by_cli(api, workflow, TWO_PHASE_SCRIPT)
    await api.finish(job_id)
    job = await api.job(job_id)
    shown = await cli(api, "status", job_id)
    created = datetime.fromisoformat(job["createdAt"].replace("Z", "+00:00")).astimezone()
    assert f"Created {created:%Y-%m-%d %H:%M:%S}" in " ".join(shown.stdout.split())


async def test_a_runner_without_a_provider_names_the_fix(api_factory: ApiFactory) -> None:
    async with api_factory(CoroConfig()) as api:
        result = await cli(api, "job", "--description", "Add rate limiting")
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "phase 'spec-writing' has no executor: no LLM provider is configured" in message
    assert "Run `coro init`" in message and "llm.defaultProvider" in message
    assert "installed executors: script" in message


# --------------------------------------------------------------------------- coro init


def _init(home: Path, *args: str, stdin: str = "", **env: str) -> Result:
    environ: dict[str, str | None] = {
        "CORO_HOME": str(home),
        "ANTHROPIC_API_KEY": None,
        "OPENAI_API_KEY": None,
        **env,
    }
    return CliRunner().invoke(app, ["init", *args], input=stdin, env=environ)


def _stored(home: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((home / "config.json").read_text())
    return data


def test_init_takes_the_key_from_the_environment_and_never_prints_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    key = "sk-ant-from-env-0123456789"
    result = _init(home, "--provider", "anthropic", "--yes", ANTHROPIC_API_KEY=key)
    assert result.exit_code == 0, result.output
    assert key not in result.output
    assert "taken from $ANTHROPIC_API_KEY" in result.stdout
    assert "coro start" in result.stdout
    stored = _stored(home)
    assert stored["llm"]["defaultProvider"] == "anthropic"
    assert stored["plugins"]["installed"]["anthropic"]["config"]["apiKey"] == key
    assert (home / "config.json").stat().st_mode & 0o777 == 0o600


def test_init_without_what_it_needs_asks_nothing_with_yes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    nothing = _init(home, "--yes")
    assert nothing.exit_code == 2
    assert "--yes needs --provider" in nothing.stderr
    keyless = _init(home, "--provider", "anthropic", "--yes")
    assert keyless.exit_code == 2
    assert "set ANTHROPIC_API_KEY" in keyless.stderr
    no_model = _init(home, "--provider", "local", "--yes")
    assert no_model.exit_code == 2
    assert "give --model" in no_model.stderr
    assert not (home / "config.json").exists()


def test_init_for_a_local_server_then_openai_keeps_other_settings(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text(json.dumps({"port": 3111}))
    local = _init(home, "--provider", "local", "--model", "qwen2.5-coder:7b", "--yes")
    assert local.exit_code == 0, local.output
    stored = _stored(home)
    assert stored["port"] == 3111
    assert stored["llm"]["defaultProvider"] == "openai"
    assert stored["plugins"]["installed"]["openai"]["config"] == {
        "baseUrl": "http://localhost:11434/v1",
        "defaultModel": "qwen2.5-coder:7b",
    }
    bad = _init(home, "--provider", "local", "--base-url", "ftp://x", "--model", "m", "--yes")
    assert bad.exit_code == 2
    assert "baseUrl" in bad.stderr
    official = _init(home, "--provider", "openai", "--yes", OPENAI_API_KEY="sk-proj-123456789")
    assert official.exit_code == 0, official.output
    config = _stored(home)["plugins"]["installed"]["openai"]["config"]
    assert "baseUrl" not in config  # the local server chosen before is dropped
    assert config["apiKey"] == "sk-proj-123456789"


def test_init_refuses_to_overwrite_a_broken_config(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text("{not json")
    result = _init(home, "--provider", "script", "--yes")
    assert result.exit_code == 1
    assert "invalid JSON" in result.stderr
    assert (home / "config.json").read_text() == "{not json"
