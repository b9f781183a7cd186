"""Crash safety: a runner killed with SIGKILL mid-phase resumes the job after a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from coro.api.server import free_port
from coro.config import CoroHome
from tests.conftest import StreamResult, make_config, on_backend, write_workflow
from tests.sse import frames

pytestmark = pytest.mark.backends("sqlite", "postgres")


async def start_runner(home: CoroHome, port: int) -> asyncio.subprocess.Process:
    """`coro start` in a child process; returns once it prints its dashboard URL."""
    env = {**os.environ, "CORO_HOME": str(home.root), "CORO_NO_OPEN": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coro",
        "start",
        "--port",
        str(port),
        "--no-open",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=Path(__file__).parent.parent,
    )
    assert process.stdout is not None
    seen = []
    async with asyncio.timeout(60):
        while True:
            line = (await process.stdout.readline()).decode()
            seen.append(line)
            assert line, f"runner exited early: {''.join(seen)}"
            if "Dashboard:" in line:
                return process


async def read_stream(client: httpx.AsyncClient, job_id: str, until: str | None) -> StreamResult:
    result = StreamResult()
    async with asyncio.timeout(60), client.stream("GET", f"/jobs/{job_id}/stream") as response:
        async for frame in frames(response):
            if frame.id is None and frame.event == "message":
                continue
            if frame.event == "done":
                result.done = frame.data
                break
            result.lines.append(frame.data)
            result.ids.append(int(frame.id or -1))
            if until and until in frame.data:
                break
    return result


async def test_sigkill_mid_phase_then_restart_resumes_and_completes(
    home: CoroHome, state_url: str | None
) -> None:
    home.save_config(on_backend(make_config(), state_url))
    workflow = write_workflow(
        home, "crashy", [{"name": "build", "agent": None}, {"name": "verify", "agent": None}]
    )
    script = {
        "build": [
            [
                {"text": "build starting"},
                {"tool": "log", "input": {"message": "half way"}},
                {"sleep": 600},
            ],
            [{"text": "build resumed after restart"}],
        ],
        "verify": [{"text": "verified"}],
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = await start_runner(home, port)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            created = await client.post(
                "/jobs", json={"workflowPath": workflow, "params": {"script": script}}
            )
            assert created.status_code == 201
            job_id = created.json()["jobId"]
            before = await read_stream(client, job_id, until="half way")
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()

    process = await start_runner(home, port)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            after = await read_stream(client, job_id, until=None)
            job = (await client.get(f"/jobs/{job_id}")).json()
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()

    assert after.done == "complete"
    assert after.lines[: len(before.lines)] == before.lines
    texts = after.texts()
    assert "[recovery] Runner restarted — resuming phase build" in texts
    assert "build resumed after restart" in texts
    assert "verified" in texts
    assert job["status"] == "complete"
    assert job["phaseVisits"] == {"build": 2, "verify": 1}


async def test_rate_limit_timer_is_rearmed_after_a_restart(
    home: CoroHome, state_url: str | None
) -> None:
    from coro.api.server import serve
    from coro.runner import Runner

    config = on_backend(make_config(), state_url)
    home.save_config(config)
    workflow = write_workflow(home, "limited", [{"name": "work", "agent": None}])
    script = {"work": [[{"rateLimit": 0.5}], [{"text": "resumed after restart"}]]}

    async with (
        serve(Runner(home, config), "127.0.0.1", 0) as served,
        httpx.AsyncClient(base_url=served.url, timeout=30) as client,
    ):
        created = await client.post(
            "/jobs", json={"workflowPath": workflow, "params": {"script": script}}
        )
        job_id = created.json()["jobId"]
        await read_stream(client, job_id, until="[rate-limit]")
    # The first runner stopped before its timer fired; the second one must fire it.
    async with (
        serve(Runner(home, config), "127.0.0.1", 0) as served,
        httpx.AsyncClient(base_url=served.url, timeout=30) as client,
    ):
        result = await read_stream(client, job_id, until=None)
    assert result.done == "complete"
    assert "resumed after restart" in result.texts()


#: Once the stored job holds a finished visit's usage, no further write of it commits:
#: a runner killed then stopped exactly between that write and any that would follow.
FREEZE_AFTER_FINAL_USAGE = """
CREATE TRIGGER freeze_after_final_usage BEFORE UPDATE ON jobs
WHEN EXISTS (
    SELECT 1 FROM json_each(old.doc, '$.phaseUsage')
    WHERE json_extract(value, '$.inProgress') = 0
)
BEGIN SELECT RAISE(ABORT, 'frozen by the test'); END
"""


def run_sql(home: CoroHome, statement: str) -> None:
    with closing(sqlite3.connect(home.state_db)) as db:
        db.execute(statement)
        db.commit()


@pytest.mark.backends("sqlite")
async def test_a_runner_killed_right_after_a_phase_counted_its_usage_counts_it_once(
    home: CoroHome,
) -> None:
    home.save_config(make_config())
    workflow = write_workflow(
        home, "paid", [{"name": "build", "agent": None}, {"name": "verify", "agent": None}]
    )
    script = {
        "build": [{"usage": {"inputTokens": 40, "outputTokens": 10, "costUsd": 0.25}}],
        "verify": [{"text": "verified"}],
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = await start_runner(home, port)
    try:
        await asyncio.to_thread(run_sql, home, FREEZE_AFTER_FINAL_USAGE)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            created = await client.post(
                "/jobs", json={"workflowPath": workflow, "params": {"script": script}}
            )
            job_id = created.json()["jobId"]
            # The end of build's turn: its usage is counted; nothing after it commits.
            await read_stream(client, job_id, until="[usage] Phase build: 40 in / 10 out")
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    await asyncio.to_thread(run_sql, home, "DROP TRIGGER freeze_after_final_usage")

    process = await start_runner(home, port)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            after = await read_stream(client, job_id, until=None)
            job = (await client.get(f"/jobs/{job_id}")).json()
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()

    assert after.done == "complete", after.texts()
    assert job["phaseVisits"] == {"build": 1, "verify": 1}  # build was not run again
    usage = job["tokenUsage"]
    assert (usage["inputTokens"], usage["outputTokens"]) == (40, 10)
    assert usage["totalCostUsd"] == pytest.approx(0.25)
    assert [(u["phase"], u["inputTokens"]) for u in job["phaseUsage"]] == [
        ("build", 40),
        ("verify", 0),
    ]
