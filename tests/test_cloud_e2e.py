"""The team cloud end to end, as a team runs it: `coro cloud` processes on the machine's
PostgreSQL (two of them meeting in its Redis), a runner paired with `coro login --token`
and started with `coro start` (hybrid), team jobs through the cloud's REST API and SSE.

Every part is a real process talking over loopback; the tests wait on what the
processes print (the cloud's "listening" line, the runner's "Cloud: connected" line)
and on the streams, never on a clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import URL

from coro.api.server import free_port
from coro.config import CoroHome
from tests.cloud_helpers import JWT_SECRET, PASSWORD, WAIT_LIMIT
from tests.conftest import write_workflow
from tests.sse import frames

pytest_plugins = ("tests.cloud_fixtures",)

pytestmark = pytest.mark.timeout(300)

REPO_ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/0"

ONE_PHASE = [{"name": "work", "agent": None}]
#: a job that logs, posts an artefact, asks the developer, then finishes with the answer
ASKS = {
    "work": [
        [
            {"text": "looking at the code"},
            {"tool": "file_write", "input": {"path": "notes.md", "content": "# Notes\nfine"}},
            {
                "tool": "post_artifact",
                "input": {"kind": "md", "title": "notes", "data": {"path": "notes.md"}},
            },
            {"tool": "await_event", "input": {"eventName": "developer-input: which database?"}},
        ],
        [{"text": "thanks: using that database"}],
    ]
}


def child_env(**values: str) -> dict[str, str]:
    """The test's environment without any Coro, cloud or database settings of its own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CORO_", "CLOUD_", "JWT_", "REDIS_", "GITHUB_"))
        and k != "DATABASE_URL"
    }
    env.update(
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        **values,
    )
    return env


@dataclass
class Child:
    """A child process whose output is collected line by line (so its pipe never fills);
    `wait_line` waits for a line containing some text, from a given line on."""

    process: asyncio.subprocess.Process
    name: str
    lines: list[str] = field(default_factory=list)
    _grew: asyncio.Condition = field(default_factory=asyncio.Condition)
    _pump: asyncio.Task[None] | None = None

    @classmethod
    async def spawn(cls, name: str, *args: str, env: dict[str, str]) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "coro",
            *args,
            env=env,
            cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        child = cls(process, name)
        child._pump = asyncio.create_task(child._read())
        return child

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while raw := await self.process.stdout.readline():
            async with self._grew:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._grew.notify_all()
        async with self._grew:
            self._grew.notify_all()

    async def wait_line(self, text: str, start: int = 0) -> str:
        def found() -> str | None:
            return next((line for line in self.lines[start:] if text in line), None)

        async with asyncio.timeout(WAIT_LIMIT), self._grew:
            while (line := found()) is None:
                assert self._pump is not None and not self._pump.done(), (
                    f"{self.name} exited before printing {text!r}:\n" + self.output
                )
                await self._grew.wait()
        return line

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def stop(self, *, kill: bool = False) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        return await self.exited()

    async def exited(self) -> int:
        async with asyncio.timeout(WAIT_LIMIT):
            code = await self.process.wait()
            if self._pump is not None:
                await self._pump
        return code


def plain(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def start_cloud(db_url: URL, port: int, redis_prefix: str | None = None) -> Child:
    values = {
        "DATABASE_URL": plain(db_url),
        "JWT_SECRET": JWT_SECRET,
        "CLOUD_HOST": "127.0.0.1",
        "CLOUD_PORT": str(port),
    }
    if redis_prefix is not None:
        values |= {"REDIS_URL": REDIS_URL, "REDIS_CHANNEL_PREFIX": redis_prefix}
    cloud = await Child.spawn(f"cloud:{port}", "cloud", env=child_env(**values))
    await cloud.wait_line("Coro cloud listening on ")
    return cloud


@dataclass
class Team:
    id: str
    headers: dict[str, str]
    token: str


async def make_team(url: str) -> Team:
    async with httpx.AsyncClient(base_url=url, timeout=WAIT_LIMIT) as client:
        email = f"lead-{secrets.token_hex(4)}@example.com"
        signup = await client.post(
            "/auth/signup", json={"email": email, "name": "Team Lead", "password": PASSWORD}
        )
        assert signup.status_code == 201, signup.text
        headers = {"Authorization": f"Bearer {signup.json()['accessToken']}"}
        team = await client.post(
            "/teams",
            json={"name": "Platform", "slug": f"platform-{secrets.token_hex(3)}"},
            headers=headers,
        )
        assert team.status_code == 201, team.text
        team_id = team.json()["id"]
        minted = await client.post(
            f"/teams/{team_id}/runner-tokens", json={"name": "laptop"}, headers=headers
        )
        assert minted.status_code == 201, minted.text
        return Team(team_id, headers, minted.json()["token"])


@dataclass
class RunnerHome:
    home: CoroHome
    port: int

    @property
    def env(self) -> dict[str, str]:
        return child_env(CORO_HOME=str(self.home.root), CORO_NO_OPEN="1")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def paired_runner(tmp_path: Path, cloud_url: str, team: Team) -> RunnerHome:
    """A fresh CORO_HOME with the offline executor and a workflow, paired with the team
    through `coro login --token` (run as a user would)."""
    home = CoroHome(tmp_path / "runner-home")
    home.ensure()
    home.config_file.write_text(json.dumps({"llm": {"defaultProvider": "script"}}))
    write_workflow(home, "asks", ONE_PHASE)
    login = await Child.spawn(
        "login",
        "login",
        "--cloud-url",
        cloud_url,
        "--token",
        team.token,
        env=child_env(CORO_HOME=str(home.root)),
    )
    code = await login.exited()
    assert code == 0, login.output
    assert team.token not in login.output  # never printed
    config = json.loads(home.config_file.read_text())
    assert config["cloud"]["url"] == cloud_url
    assert config["cloud"]["token"] == team.token
    return RunnerHome(home, free_port())


async def start_runner(runner: RunnerHome) -> Child:
    child = await Child.spawn(
        "runner", "start", "--port", str(runner.port), "--no-open", env=runner.env
    )
    await child.wait_line("Dashboard:")
    return child


@dataclass
class Streamed:
    ids: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    done: str | None = None


async def read_stream(
    client: httpx.AsyncClient, path: str, *, until: str | None = None, after: int | None = None
) -> Streamed:
    result = Streamed()
    headers = {"Last-Event-ID": str(after)} if after is not None else {}
    async with asyncio.timeout(WAIT_LIMIT), client.stream("GET", path, headers=headers) as resp:
        assert resp.status_code == 200, await resp.aread()
        async for frame in frames(resp):
            if frame.event == "done":
                result.done = frame.data
                return result
            if frame.id is None:
                continue
            result.ids.append(int(frame.id))
            result.lines.append(frame.data)
            if until is not None and until in frame.data:
                return result
    return result


@contextlib.asynccontextmanager
async def cloud_client(url: str, team: Team) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, headers=team.headers, timeout=WAIT_LIMIT) as c:
        yield c


async def create_job(client: httpx.AsyncClient, team: Team) -> dict[str, Any]:
    created = await client.post(
        f"/teams/{team.id}/jobs",
        json={
            "workflowPath": "workflows/asks/workflow.md",
            "description": "Add rate limiting",
            "params": {"script": ASKS},
        },
    )
    assert created.status_code == 201, created.text
    job: dict[str, Any] = created.json()
    return job


async def test_a_team_job_runs_on_the_paired_runner_and_reads_the_same_through_the_cloud(
    cloud_db_url: URL, tmp_path: Path
) -> None:
    cloud = await start_cloud(cloud_db_url, free_port())
    runner_proc: Child | None = None
    try:
        cloud_url = (await cloud.wait_line("listening on ")).rsplit(" ", 1)[1]
        team = await make_team(cloud_url)
        runner = await paired_runner(tmp_path, cloud_url, team)
        runner_proc = await start_runner(runner)
        assert "hybrid mode" in runner_proc.output
        await runner_proc.wait_line("Cloud: connected")
        async with (
            cloud_client(cloud_url, team) as via_cloud,
            httpx.AsyncClient(base_url=runner.url, timeout=WAIT_LIMIT) as local,
        ):
            runners = (await via_cloud.get(f"/teams/{team.id}/runners")).json()
            assert [r["status"] for r in runners] == ["idle"]
            job = await create_job(via_cloud, team)
            assert "warning" not in job  # a runner took it at once
            job_id = job["id"]
            base = f"/teams/{team.id}/jobs/{job_id}"
            asked = await read_stream(via_cloud, f"{base}/stream", until="which database?")
            parked = (await via_cloud.get(base)).json()
            assert parked["status"] == "awaiting-developer-input"
            # the artefact's content comes from the runner's workspace, through the cloud
            (artifact,) = parked["artifacts"]
            content = await via_cloud.get(f"{base}/artifacts/{artifact['id']}/content")
            assert content.status_code == 200, content.text
            assert content.text == "# Notes\nfine"
            answered = await via_cloud.post(f"{base}/message", json={"message": "PostgreSQL"})
            assert answered.status_code in (200, 202), answered.text
            rest = await read_stream(via_cloud, f"{base}/stream", after=asked.ids[-1])
            assert rest.done == "complete"
            assert any("thanks: using that database" in line for line in rest.lines), rest
            through_cloud = asked.ids + rest.ids, asked.lines + rest.lines
            # the same stream, read from the runner itself: same ids, same lines
            own = await read_stream(local, f"/jobs/{job_id}/stream")
            assert own.done == "complete"
            assert through_cloud == (own.ids, own.lines)
            assert own.ids == list(range(len(own.ids)))
            # the job reads the same through both APIs
            cloud_job = (await via_cloud.get(base)).json()
            local_job = (await local.get(f"/jobs/{job_id}")).json()
            assert set(cloud_job) == set(local_job)
            for key in ("id", "status", "phase", "workflowPath", "artifacts", "params"):
                assert cloud_job[key] == local_job[key], key
            listed = (await via_cloud.get(f"/teams/{team.id}/jobs")).json()
            local_listed = (await local.get("/jobs")).json()
            assert set(listed) == set(local_listed)
    finally:
        if runner_proc is not None:
            await runner_proc.stop()
        await cloud.stop()
    assert team.token not in cloud.output
    assert runner_proc is not None and team.token not in runner_proc.output


async def test_a_job_survives_a_cloud_restart_and_a_runner_crash_with_every_line_once(
    cloud_db_url: URL, tmp_path: Path
) -> None:
    port = free_port()
    cloud = await start_cloud(cloud_db_url, port)
    runner_proc: Child | None = None
    try:
        cloud_url = f"http://127.0.0.1:{port}"
        team = await make_team(cloud_url)
        runner = await paired_runner(tmp_path, cloud_url, team)
        runner_proc = await start_runner(runner)
        await runner_proc.wait_line("Cloud: connected")
        async with cloud_client(cloud_url, team) as via_cloud:
            job_id = (await create_job(via_cloud, team))["id"]
            base = f"/teams/{team.id}/jobs/{job_id}"
            await read_stream(via_cloud, f"{base}/stream", until="which database?")

        # the cloud goes away mid-job and comes back on the same port
        mark = len(runner_proc.lines)
        await cloud.stop(kill=True)
        await runner_proc.wait_line("Cloud: disconnected", mark)
        cloud = await start_cloud(cloud_db_url, port)
        await runner_proc.wait_line("Cloud: connected", mark)

        # the runner crashes while the job is parked; the answer waits for it in the cloud
        await runner_proc.stop(kill=True)
        async with cloud_client(cloud_url, team) as via_cloud:
            queued = await via_cloud.post(f"{base}/message", json={"message": "PostgreSQL"})
            assert queued.status_code == 202, queued.text
            assert queued.json()["queued"] is True
            runner_proc = await start_runner(runner)
            whole = await read_stream(via_cloud, f"{base}/stream")
        assert whole.done == "complete"
        async with httpx.AsyncClient(base_url=runner.url, timeout=WAIT_LIMIT) as local:
            own = await read_stream(local, f"/jobs/{job_id}/stream")
        # every line once, in order, the same in the cloud as on the runner
        assert whole.ids == list(range(len(whole.ids)))
        assert (whole.ids, whole.lines) == (own.ids, own.lines)
        assert sum("thanks: using that database" in line for line in whole.lines) == 1
        assert sum("[human] PostgreSQL" in line for line in whole.lines) == 1
    finally:
        if runner_proc is not None:
            await runner_proc.stop()
        await cloud.stop()


async def test_two_cloud_instances_share_runners_queues_and_live_streams(
    cloud_db_url: URL, tmp_path: Path
) -> None:
    prefix = f"coro-test-{secrets.token_hex(4)}:"
    first = await start_cloud(cloud_db_url, free_port(), prefix)
    second = await start_cloud(cloud_db_url, free_port(), prefix)
    runner_proc: Child | None = None
    try:
        url_1 = (await first.wait_line("listening on ")).rsplit(" ", 1)[1]
        url_2 = (await second.wait_line("listening on ")).rsplit(" ", 1)[1]
        team = await make_team(url_1)
        # the runner is paired with (and dials) the second instance only
        runner = await paired_runner(tmp_path, url_2, team)
        async with cloud_client(url_1, team) as via_1, cloud_client(url_2, team) as via_2:
            # jobs created through instance 1 while no runner is connected wait durably
            queued = [await create_job(via_1, team) for _ in range(3)]
            assert all(job["warning"] == "No runner connected — job queued" for job in queued)
            runner_proc = await start_runner(runner)
            await runner_proc.wait_line("Cloud: connected")
            for job in queued:
                base = f"/teams/{team.id}/jobs/{job['id']}"
                # live on both instances, whichever one the runner is connected to
                on_1, on_2 = await asyncio.gather(
                    read_stream(via_1, f"{base}/stream", until="which database?"),
                    read_stream(via_2, f"{base}/stream", until="which database?"),
                )
                assert on_1.lines == on_2.lines
                answered = await via_1.post(f"{base}/message", json={"message": "SQLite"})
                assert answered.status_code in (200, 202), answered.text
                done_1, done_2 = await asyncio.gather(
                    read_stream(via_1, f"{base}/stream", after=on_1.ids[-1]),
                    read_stream(via_2, f"{base}/stream", after=on_2.ids[-1]),
                )
                assert done_1.done == done_2.done == "complete"
                assert done_1.lines == done_2.lines
        # each queued job was dispatched exactly once: created once on the runner
        async with httpx.AsyncClient(base_url=runner.url, timeout=WAIT_LIMIT) as local:
            body = (await local.get("/jobs")).json()
            local_jobs = body["jobs"]
            assert sorted(j["id"] for j in local_jobs) == sorted(j["id"] for j in queued)
            for job in queued:
                own = await read_stream(local, f"/jobs/{job['id']}/stream")
                assert sum(line.split(" ", 1)[1].startswith("[created]") for line in own.lines) == 1
    finally:
        if runner_proc is not None:
            await runner_proc.stop()
        await first.stop()
        await second.stop()
