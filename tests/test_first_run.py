"""The README's first run, word for word: `coro init`, then every command of "Using the
runner", each as a subprocess in a fresh `CORO_HOME` against a `coro start` child.

`<jobId>` placeholders are filled with the jobs the earlier commands created; each
command runs when its job is in the state the README's comment describes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import WAIT_LIMIT
from tests.sse import frames

REPO_ROOT = Path(__file__).resolve().parents[1]
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
ID = re.compile(r"Created job (\S+) ")


def _env(home: Path, url: str | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CORO_") and k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")
    }
    env.update(
        CORO_HOME=str(home),
        CI="1",
        PYTHONUNBUFFERED="1",
        COLUMNS="100",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    )
    if url:
        env["CORO_URL"] = url
    return env


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    @property
    def flat(self) -> str:
        """stdout with Rich's line breaks undone (for phrases a narrow terminal wraps)."""
        return " ".join(self.stdout.split())


async def coro(home: Path, url: str | None, *args: str, stdin: str | None = None) -> Ran:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coro",
        *args,
        env=_env(home, url),
        cwd=home.parent,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT_LIMIT):
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


async def ok(home: Path, url: str | None, *args: str) -> Ran:
    ran = await coro(home, url, *args)
    assert ran.code == 0, (args, ran.stdout, ran.stderr)
    return ran


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    return tmp_path / "coro-home"


async def _runner(home: Path) -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coro",
        "start",
        "--port",
        "0",
        "--no-open",
        env=_env(home),
        cwd=home.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(WAIT_LIMIT):
            while True:
                raw = (await proc.stdout.readline()).decode()
                assert raw, "coro start exited early:\n" + "".join(seen)
                seen.append(raw)
                if raw.startswith("API: "):
                    url = raw.split(maxsplit=1)[1].strip()
                if raw.startswith("Dashboard: "):
                    break
        yield url
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(WAIT_LIMIT):
                await proc.communicate()


async def wait_line(url: str, job_id: str, text: str, count: int = 1) -> None:
    """Until the job's log holds `count` lines containing `text`."""
    seen = 0
    async with (
        httpx.AsyncClient(base_url=url, timeout=WAIT_LIMIT) as client,
        asyncio.timeout(WAIT_LIMIT),
        client.stream("GET", f"/jobs/{job_id}/stream") as response,
    ):
        async for frame in frames(response):
            assert frame.event != "done" or seen >= count, f"{job_id} stopped before {text!r}"
            if frame.event == "message" and text in frame.data:
                seen += 1
                if seen >= count:
                    return


async def job_status(url: str, job_id: str) -> str:
    async with httpx.AsyncClient(base_url=url) as client:
        return str((await client.get(f"/jobs/{job_id}")).json()["status"])


def created_id(ran: Ran) -> str:
    found = ID.search(ran.stdout)
    assert found, ran.stdout
    return found.group(1)


# --------------------------------------------------------------------------- the README


def test_the_readme_shows_the_commands_this_test_runs() -> None:
    using = README.split("## Using the runner", 1)[1].split("```", 2)[1]
    for command in (
        "coro init ",
        "coro init --provider script --yes",
        "coro start ",
        "coro repo create api",
        'coro job --repo api --description "Add rate limiting" --follow',
        'coro job --repo api --description "Add rate limiting" --interactive',
        "coro jobs --group waiting",
        "coro status <jobId>",
        "coro logs <jobId> --follow",
        "--tail 50",
        'coro message <jobId> "Use Redis for the counters"',
        "coro resume <jobId> [--from-phase coding] [--clear-session]",
        "coro pause <jobId>; coro cancel <jobId>",
        "coro repo list",
        "coro pr list [--state open]",
        "coro campaign list",
        "coro plugin list",
    ):
        assert command in using, command
    quick = README.split("## Quick start", 1)[1].split("## The dashboard", 1)[0]
    assert "coro init" in quick


async def test_a_fresh_runner_names_the_missing_provider_and_the_fix(fresh: Path) -> None:
    async for url in _runner(fresh):
        ran = await coro(
            fresh, url, "job", "--repo", "org/api", "--description", "Add rate limiting"
        )
        assert ran.code == 1
        message = " ".join(ran.stderr.split())
        assert "phase 'spec-writing' has no executor: no LLM provider is configured" in message
        assert "the alias 'tier:mini', then llm.defaultProvider" in message
        assert "Run `coro init`" in message
        assert "plugin_required" not in message
        assert "Traceback" not in ran.stderr


async def test_every_command_of_using_the_runner_works_as_written(fresh: Path) -> None:
    init = await ok(fresh, None, "init", "--provider", "script", "--yes")
    assert "llm.defaultProvider = 'script'" in init.stdout
    assert "coro start" in init.stdout
    assert json.loads((fresh / "config.json").read_text())["llm"]["defaultProvider"] == "script"

    async for url in _runner(fresh):
        created = await ok(fresh, url, "repo", "create", "api")
        assert "Created api" in created.stdout

        done = await ok(
            fresh, url, "job", "--repo", "api", "--description", "Add rate limiting", "--follow"
        )
        assert "All phases complete — job finished successfully" in done.stdout
        assert done.stdout.rstrip().endswith("Job complete")
        finished = created_id(done)

        asks = await ok(
            fresh,
            url,
            "job",
            "--repo",
            "api",
            "--description",
            "Add rate limiting",
            "--interactive",
        )
        job_id = created_id(asks)
        assert f"coro logs {job_id} --follow" in asks.stdout
        await wait_line(url, job_id, "Job parked — waiting for: developer-input: approval after")

        waiting = await ok(fresh, url, "jobs", "--group", "waiting")
        assert job_id in waiting.stdout and finished not in waiting.stdout
        listed = json.loads((await ok(fresh, url, "jobs", "--group", "waiting", "--json")).stdout)
        assert [j["id"] for j in listed["jobs"]] == [job_id]

        shown = await ok(fresh, url, "status", job_id)
        assert "awaiting-developer-input" in shown.stdout
        assert f"Approve and continue: coro resume {job_id}" in shown.flat

        follow = await ok(fresh, url, "logs", finished, "--follow")
        assert follow.stdout.rstrip().endswith("Job complete")
        tail = await ok(fresh, url, "logs", job_id, "--tail", "50")
        assert "approval after spec-writing" in tail.stdout

        # at a checkpoint a message asks for changes: the phase runs again and parks again
        sent = await ok(fresh, url, "message", job_id, "Use Redis for the counters")
        assert "the job resumes with it" in sent.stdout
        await wait_line(url, job_id, "Job parked", count=2)

        approved = await ok(fresh, url, "resume", job_id)
        assert "phase planning" in approved.stdout
        await wait_line(url, job_id, "approval after planning")
        restarted = await ok(fresh, url, "resume", job_id, "--from-phase", "coding")
        assert "phase coding" in restarted.stdout
        await wait_line(url, job_id, "approval after coding")
        await ok(fresh, url, "resume", job_id, "--clear-session")
        await wait_line(url, job_id, "approval after review")

        slow = await ok(
            fresh,
            url,
            "job",
            "--repo",
            "api",
            "--description",
            "A long one",
            "--param",
            'script:={"spec-writing": [[{"text": "working"}, {"sleep": 600}]]}',
        )
        slow_id = created_id(slow)
        await wait_line(url, slow_id, "working")
        paused = await ok(fresh, url, "pause", slow_id)
        assert f"Paused {slow_id}" in paused.stdout
        cancelled = await ok(fresh, url, "cancel", slow_id)
        assert f"Cancelled {slow_id} (cancelled)" in cancelled.stdout
        await ok(fresh, url, "cancel", job_id)
        assert await job_status(url, job_id) == "cancelled"

        repos = await ok(fresh, url, "repo", "list")
        assert "api" in repos.stdout
        assert "No pull requests yet." in (await ok(fresh, url, "pr", "list")).stdout
        assert (
            "No pull requests match."
            in (await ok(fresh, url, "pr", "list", "--state", "open")).stdout
        )
        assert "No campaigns" in (await ok(fresh, url, "campaign", "list")).stdout
        plugins = await ok(fresh, url, "plugin", "list")
        assert "script" in plugins.stdout

        resumed = await coro(fresh, url, "resume", slow_id)
        assert resumed.code == 1
        assert "Job was cancelled; a cancelled job cannot be resumed" in resumed.stderr


async def test_init_asks_for_the_provider_and_a_hidden_key(fresh: Path) -> None:
    ran = await coro(fresh, None, "init", stdin="1\nsk-ant-typed-0123456789\n")
    assert ran.code == 0, ran.stderr
    assert "Which LLM provider should jobs use?" in ran.stdout
    assert "sk-ant-typed" not in ran.stdout + ran.stderr
    stored = json.loads((fresh / "config.json").read_text())
    assert stored["llm"]["defaultProvider"] == "anthropic"
    assert stored["plugins"]["installed"]["anthropic"]["config"]["apiKey"] == (
        "sk-ant-typed-0123456789"
    )
    assert (fresh / "config.json").stat().st_mode & 0o777 == 0o600

    # a second run asks before replacing, and keeps the rest of config.json
    kept = await coro(fresh, None, "init", "--provider", "script", stdin="n\n")
    assert "Nothing changed." in kept.stdout
    replaced = await coro(fresh, None, "init", "--provider", "script", stdin="y\n")
    assert replaced.code == 0, replaced.stderr
    stored = json.loads((fresh / "config.json").read_text())
    assert stored["llm"]["defaultProvider"] == "script"
    assert "apiKey" in stored["plugins"]["installed"]["anthropic"]["config"]
    assert "The script executor runs the steps a job gives in params.script" in replaced.flat
