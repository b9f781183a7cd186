"""SSE under clients that stop reading: the server resets such a connection once
writing to it has been blocked for its send limit (short here), says so in one log
line without a traceback, and every other reader of the job keeps streaming.

A stalled client is a real socket with a small receive buffer that sends its request
and never reads; it notices the cut-off as EOF or a reset when it finally reads."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
import pytest

from coro.api.server import Served, serve
from coro.api.slow_clients import ClientTimeouts
from coro.config import CoroHome
from coro.runner import Runner
from tests.conftest import WAIT_LIMIT, make_config, write_workflow
from tests.sse import frames

pytestmark = pytest.mark.backends("sqlite", "postgres")

#: a small kernel send buffer: a stalled client blocks the server's writes after a
#: few hundred kilobytes rather than the megabytes the kernel would allow
LIMITS = ClientTimeouts(head=30, body=30, send=0.5, send_buffer=64 * 1024)
PARKED = [{"name": "work", "agent": None}]
PARK = {"work": [{"tool": "await_event", "input": {"eventName": "developer-input: ?"}}]}
#: a line of a long log (~100 bytes)
FILLER = "x" * 90


class Recorder(logging.Handler):
    """Every record of the runner's and uvicorn's loggers; `cut_offs` wakes a waiter
    once `expected` connections were reset for not reading."""

    def __init__(self, expected: int) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.expected = expected
        self.cut_offs = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if len(self.resets()) >= self.expected:
            self.cut_offs.set()

    def resets(self) -> list[logging.LogRecord]:
        return [
            r
            for r in self.records
            if r.name == "coro.api.slow_clients" and "read nothing" in r.getMessage()
        ]

    def tracebacks(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.exc_info or "Traceback" in r.getMessage()]


@contextmanager
def recording(expected: int) -> Iterator[Recorder]:
    """Attach after the server started: uvicorn configures its loggers (which do not
    propagate to the root) when it is set up."""
    recorder = Recorder(expected)
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(recorder)
    previous = logging.getLogger("coro").level
    logging.getLogger("coro").setLevel(logging.INFO)
    try:
        yield recorder
    finally:
        logging.getLogger("coro").setLevel(previous)
        for logger in loggers:
            logger.removeHandler(recorder)


@asynccontextmanager
async def served(home: CoroHome, state_url: str | None) -> AsyncIterator[Served]:
    config = make_config()
    if state_url is not None:
        config = config.model_copy(
            update={"state": config.state.model_copy(update={"url": state_url})}
        )
    home.save_config(config)
    async with serve(Runner(home, config), "127.0.0.1", 0, timeouts=LIMITS) as server:
        yield server


async def parked_job(server: Served, home: CoroHome) -> str:
    workflow = write_workflow(home, "parked", PARKED)
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT_LIMIT) as client:
        created = await client.post(
            "/jobs", json={"workflowPath": workflow, "params": {"script": PARK}}
        )
    assert created.status_code == 201, created.text
    job_id = str(created.json()["jobId"])
    await server.runner.dispatcher.wait_idle()
    return job_id


async def append(server: Served, job_id: str, lines: int) -> None:
    for start in range(0, lines, 1000):
        texts = [f"{FILLER} {n}" for n in range(start, min(lines, start + 1000))]
        await server.runner.store.log_many(job_id, texts)


async def stalled_client(server: Served, path: str) -> socket.socket:
    """Connects, sends the request, and never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (server.host, server.port))
    request = f"GET {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n\r\n"
    await loop.sock_sendall(sock, request.encode())
    return sock


async def closed_by_server(sock: socket.socket) -> bool:
    """Reads what is left; True once the server closed or reset the connection (a
    connection still open would keep the job's endless stream going: the guard
    timeout then fails the test)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(WAIT_LIMIT):
        try:
            while await loop.sock_recv(sock, 1 << 16):
                pass
        except ConnectionResetError:
            pass
    return True


class Reader:
    """A well-behaved reader of the job's stream, in a task."""

    def __init__(self, client: httpx.AsyncClient, path: str) -> None:
        self.lines: list[str] = []
        self.seen: dict[str, asyncio.Event] = {}
        self._client = client
        self.task = asyncio.create_task(self._run(path))

    def wait_for(self, text: str) -> asyncio.Event:
        return self.seen.setdefault(text, asyncio.Event())

    async def _run(self, path: str) -> None:
        async with self._client.stream("GET", path) as response:
            async for frame in frames(response):
                if frame.id is None:
                    continue
                self.lines.append(frame.data)
                for text, event in self.seen.items():
                    if frame.data.endswith(text):
                        event.set()


async def test_clients_that_stop_reading_a_long_replay_are_reset_and_others_stream_on(
    home: CoroHome, state_url: str | None
) -> None:
    stalled_count = 3
    async with (
        served(home, state_url) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT_LIMIT) as client,
    ):
        job_id = await parked_job(server, home)
        await append(server, job_id, 20_000)  # ~2 MB: more than the socket buffers
        with recording(stalled_count) as log:
            stalled = [
                await stalled_client(server, f"/jobs/{job_id}/stream") for _ in range(stalled_count)
            ]
            reader = Reader(client, f"/jobs/{job_id}/stream")
            async with asyncio.timeout(WAIT_LIMIT):
                await log.cut_offs.wait()
                for sock in stalled:
                    assert await closed_by_server(sock)
                    sock.close()
                after = reader.wait_for("after the cut-off")
                await server.runner.store.log(job_id, "after the cut-off")
                await after.wait()
            # what the stalled streams held is gone: only the reader's subscription is left
            assert server.runner.store.bus.subscriber_count(job_id) == 1
            reader.task.cancel()
        assert len(log.resets()) == stalled_count
        assert log.tracebacks() == []
    ids = [line.rsplit(" ", 1)[-1] for line in reader.lines if FILLER in line]
    assert ids == [str(n) for n in range(20_000)]


async def test_a_live_subscriber_that_stops_reading_is_cut_off_while_others_get_every_line(
    home: CoroHome, state_url: str | None
) -> None:
    async with (
        served(home, state_url) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT_LIMIT) as client,
    ):
        job_id = await parked_job(server, home)
        with recording(1) as log:
            stalled = await stalled_client(server, f"/jobs/{job_id}/stream?tail=0")
            reader = Reader(client, f"/jobs/{job_id}/stream")
            async with asyncio.timeout(WAIT_LIMIT):
                ready = reader.wait_for("ready")
                await server.runner.store.log(job_id, "ready")
                await ready.wait()
                last = reader.wait_for(f"{FILLER} 19999")
                await append(server, job_id, 20_000)
                await log.cut_offs.wait()
                assert await closed_by_server(stalled)
                stalled.close()
                await last.wait()
            reader.task.cancel()
        assert len(log.resets()) == 1
        assert log.tracebacks() == []
    ids = [line.rsplit(" ", 1)[-1] for line in reader.lines if FILLER in line]
    assert ids == [str(n) for n in range(20_000)]
