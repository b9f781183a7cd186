"""Live log lines across processes: a line another process appends to a job's log
reaches the runner's open SSE streams without a reconnect (issue 11, point 4).

- The real runner over loopback, its stream opened first, and the real `coro mcp`
  stdio server of the job (another process) calling the `log` tool; on SQLite and on
  PostgreSQL.
- Two `SqliteStateBackend`s on one file (the backend level: what either process does),
  including a database whose notice directory would not fit a socket address, and a
  listener that died without cleaning up, and a receiver too full for a notice.
- The bus: a line offered twice reaches a subscriber once; the memory backend publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from coro.domain.models import COMPLETE, Job, LogEntry, iso_now
from coro.state.logbus import LogBus, StatusChange, Subscription
from coro.state.memory import MemoryStateBackend
from coro.state.notify import MAX_NOTICE, Announcer, notify_dir
from coro.state.sqlite import SqliteStateBackend
from tests.conftest import WAIT_LIMIT, Api, write_workflow
from tests.sse import Frame, frames

REPO_ROOT = Path(__file__).resolve().parents[1]
ONE_PHASE = [{"name": "work", "agent": None}]


async def log_from_mcp_process(home_root: Path, job_id: str, message: str, errlog: Path) -> None:
    """`coro mcp --job <id>` in its own process, driven by the SDK: call `log`."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "coro", "mcp", "--job", job_id],
        env={"CORO_HOME": str(home_root)},
        cwd=str(REPO_ROOT),
    )
    with errlog.open("w") as err:
        async with Client(stdio_client(params, errlog=err)) as client:
            result = await client.call_tool("log", {"message": message})
    texts = [c.text for c in result.content if isinstance(c, types.TextContent)]
    assert not result.is_error, texts


@pytest.mark.backends("sqlite", "postgres")  # `coro mcp` opens what config.json names
async def test_a_line_logged_by_coro_mcp_reaches_an_already_open_stream(
    api: Api, tmp_path: Path
) -> None:
    workflow = write_workflow(api.home, "live", ONE_PHASE)
    script = {"work": [[{"tool": "await_event", "input": {"eventName": "developer-input: ok?"}}]]}
    job_id = await api.create(workflow, script)
    await api.wait_for_line(job_id, "Job parked")
    message = "hello from another process"

    received: list[Frame] = []
    async with (
        asyncio.timeout(WAIT_LIMIT),
        api.client.stream("GET", f"/jobs/{job_id}/stream") as response,
    ):
        assert response.status_code == 200
        stream = frames(response)
        async for frame in stream:  # the replay, up to the parked job's last line
            received.append(frame)
            if "Job parked" in frame.data:
                break
        # Only now, with the stream open and past its replay, the other process logs.
        other = asyncio.create_task(
            log_from_mcp_process(api.home.root, job_id, message, tmp_path / "mcp-stderr.txt")
        )
        async for frame in stream:
            if frame.id is None:
                continue  # a heartbeat
            received.append(frame)
            if frame.data.endswith(f" {message}"):
                break
        await other

    lines = [f.data for f in received]
    assert any("[mcp] → log" in line for line in lines)  # the call, then its message
    assert lines[-1].endswith(f" {message}")
    ids = [int(f.id) for f in received if f.id is not None]
    assert ids == list(range(len(ids)))  # every line once, in order, no reconnect
    assert received[-1].event == "message"


# --------------------------------------------------------------------------- backends


def new_job(job_id: str) -> Job:
    now = iso_now()
    return Job(
        id=job_id,
        workflow_path="workflows/x/workflow.md",
        status="planning",
        phase="planning",
        created_at=now,
        updated_at=now,
    )


async def next_item(sub: Subscription) -> LogEntry | StatusChange:
    """The next line or status change, past the job's first status: a catch-up
    announces the status it reads, and a stream acts only on changes to a stopped one."""
    async with asyncio.timeout(WAIT_LIMIT):
        while True:
            item = await sub.get()
            if item != StatusChange("planning"):
                return item


@contextlib.asynccontextmanager
async def pair_on(path: Path) -> AsyncIterator[tuple[SqliteStateBackend, SqliteStateBackend]]:
    reader, writer = SqliteStateBackend(path), SqliteStateBackend(path)
    await reader.open()
    await writer.open()
    try:
        yield reader, writer
    finally:
        await writer.close()
        await reader.close()


async def follow(backend: SqliteStateBackend, job_id: str) -> Subscription:
    """Subscribe, replay storage, then follow: what the SSE route does."""
    sub = backend.bus.subscribe(job_id)
    stored = await backend.read_logs(job_id)
    sub.replayed(stored[-1].index if stored else -1)
    return sub


async def check_other_backend_reaches_subscriber(path: Path) -> None:
    async with pair_on(path) as (reader, writer):
        await writer.create_job(new_job("job-1"))
        await writer.append_logs("job-1", ["t0 before"])
        sub = await follow(reader, "job-1")

        await writer.append_logs("job-1", ["t1 from B", "t2 also from B"])
        assert await next_item(sub) == LogEntry(index=1, line="t1 from B")
        assert await next_item(sub) == LogEntry(index=2, line="t2 also from B")

        def finish(job: Job) -> None:
            job.status = COMPLETE

        await writer.update_job("job-1", finish, log=["t3 done"])
        assert await next_item(sub) == LogEntry(index=3, line="t3 done")  # before the status
        assert await next_item(sub) == StatusChange(COMPLETE)

        # A line of the reader's own is delivered once, though it also hears of it.
        await reader.append_logs("job-1", ["t4 own"])
        await writer.append_logs("job-1", ["t5 from B"])
        assert await next_item(sub) == LogEntry(index=4, line="t4 own")
        assert await next_item(sub) == LogEntry(index=5, line="t5 from B")
        sub.close()


async def test_a_subscriber_on_one_backend_receives_lines_appended_through_another(
    tmp_path: Path,
) -> None:
    await check_other_backend_reaches_subscriber(tmp_path / "state.db")


async def test_lines_cross_backends_when_the_notice_directory_path_is_too_long(
    tmp_path: Path,
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = deep / "state.db"
    directory = notify_dir(path)
    assert directory is not None and not str(directory).startswith(str(deep))
    await check_other_backend_reaches_subscriber(path)


async def test_a_listener_that_died_without_cleaning_up_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with pair_on(path) as (reader, writer):
        await writer.create_job(new_job("job-1"))
        sub = await follow(reader, "job-1")
        directory = notify_dir(path)
        assert directory is not None
        dead = directory / "99999-deadbeef"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as gone:
            gone.bind(str(dead))  # closed without unlinking: what a crash leaves

        await writer.append_logs("job-1", ["t0 still delivered"])
        assert await next_item(sub) == LogEntry(index=0, line="t0 still delivered")
        sub.close()
    # (checked once the backends are closed: the writer's worker thread sends notices
    # after the commit, one socket after another, and may reach the reader's first)
    assert not dead.exists()
    assert list(directory.iterdir()) == []  # closing removes each backend's own socket


async def test_the_memory_backend_publishes_what_it_stores() -> None:
    backend = MemoryStateBackend()
    await backend.create_job(new_job("job-1"))
    sub = backend.bus.subscribe("job-1")

    def finish(job: Job) -> None:
        job.status = COMPLETE

    await backend.append_logs("job-1", ["t0 a"])
    await backend.update_job("job-1", finish, log=["t1 done"])
    await backend.update_job("job-1", finish)  # no change of status: nothing more
    await backend.append_logs("job-1", ["t2 b"])
    items = [await next_item(sub) for _ in range(4)]
    assert items == [
        LogEntry(index=0, line="t0 a"),
        LogEntry(index=1, line="t1 done"),
        StatusChange(COMPLETE),
        LogEntry(index=2, line="t2 b"),
    ]


async def test_a_line_published_twice_reaches_each_subscriber_once() -> None:
    bus = LogBus()
    early = bus.subscribe("job")
    late = bus.subscribe("job")
    late.replayed(1)  # it read lines 0 and 1 from storage
    assert bus.high_water("job") == 1
    bus.publish_lines("job", [LogEntry(index=0, line="a"), LogEntry(index=1, line="b")])
    bus.publish_lines("job", [LogEntry(index=1, line="b"), LogEntry(index=2, line="c")])
    bus.publish_status("job", COMPLETE)
    bus.publish_status("job", COMPLETE)
    assert [await next_item(early) for _ in range(4)] == [
        LogEntry(index=0, line="a"),
        LogEntry(index=1, line="b"),
        LogEntry(index=2, line="c"),
        StatusChange(COMPLETE),
    ]
    assert [await next_item(late) for _ in range(2)] == [
        LogEntry(index=2, line="c"),
        StatusChange(COMPLETE),
    ]
    assert bus.watched_jobs() == frozenset({"job"})
    early.close()
    late.close()
    assert bus.watched_jobs() == frozenset()


def test_a_notice_a_full_receiver_had_no_room_for_is_sent_again(tmp_path: Path) -> None:
    directory = tmp_path / "state.db.notify"
    directory.mkdir(mode=0o700)
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as flooder,
    ):
        receiver.bind(str(directory / "1-receiver"))
        receiver.setblocking(False)
        flooder.setblocking(False)
        flooder.connect(str(directory / "1-receiver"))
        filler = 0
        with contextlib.suppress(BlockingIOError):
            while True:  # until its queue is full
                flooder.send(b"filler")
                filler += 1
        announcer = Announcer(directory, own=lambda: None)
        try:
            announcer.announce({"job-1"})
            assert announcer.retry_in() is not None  # owed, not dropped
            for _ in range(filler):
                assert receiver.recv(MAX_NOTICE) == b"filler"
            announcer.retry()
            assert receiver.recv(MAX_NOTICE) == b"job-1"
            assert announcer.retry_in() is None
        finally:
            announcer.close()
