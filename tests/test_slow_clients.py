"""Slow and stuck HTTP clients: the server closes a connection whose request head or body
does not arrive in time, answers 408 (431 for an oversized head), and keeps serving
everyone else meanwhile. Real sockets over loopback; the limits are short here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from coro.api.routes import stream as stream_module
from coro.api.server import Served, serve
from coro.api.slow_clients import ClientTimeouts
from coro.config import CoroHome
from coro.runner import Runner
from tests.conftest import WAIT_LIMIT, make_config, write_workflow
from tests.sse import frames

SHORT = ClientTimeouts(head=0.3, body=0.3, send=5.0)


@asynccontextmanager
async def served(home: CoroHome, timeouts: ClientTimeouts) -> AsyncIterator[Served]:
    config = make_config()
    home.save_config(config)
    async with serve(Runner(home, config), "127.0.0.1", 0, timeouts=timeouts) as runner:
        yield runner


async def send_raw(
    server: Served, data: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (the guard against a
    hang is the timeout; a server that never closes fails the test)."""
    async with asyncio.timeout(WAIT_LIMIT):
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


async def test_a_request_line_that_never_ends_gets_408_and_the_connection_closed(
    home: CoroHome, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(home, SHORT) as server:
        reader, writer = await send_raw(server, b"GET /hea")
        answer = await read_to_end(reader)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert tracebacks(caplog) == []


async def test_a_connection_that_sends_nothing_is_closed(home: CoroHome) -> None:
    async with served(home, SHORT) as server:
        reader, writer = await send_raw(server, b"")
        answer = await read_to_end(reader)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_a_body_shorter_than_its_content_length_gets_408_not_a_wait(
    home: CoroHome, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(home, SHORT) as server:
        head = (
            f"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        reader, writer = await send_raw(server, head.encode() + b'{"workflo')
        answer = await read_to_end(reader)
        writer.close()
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT_LIMIT) as client:
            listing = (await client.get("/jobs")).json()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert listing["jobs"] == []
    assert tracebacks(caplog) == []


async def test_an_oversized_request_head_gets_431(home: CoroHome) -> None:
    limits = ClientTimeouts(head=30, body=30, send=30, max_head_bytes=4096)
    async with served(home, limits) as server:
        head = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nX-Pad: "
        reader, writer = await send_raw(server, head.encode() + b"a" * 8192)
        answer = await read_to_end(reader)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 431 ")


async def test_health_answers_while_200_connections_hang_in_their_headers(
    home: CoroHome,
) -> None:
    # long limits: the stalled connections stay open while /health is asked
    limits = ClientTimeouts(head=120, body=120, send=120)
    async with served(home, limits) as server:
        stalled = [
            await send_raw(server, b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
            for _ in range(200)
        ]
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=WAIT_LIMIT) as client:
                health = await client.get("/health")
            # none of them was answered or closed meanwhile
            assert not any(reader.at_eof() for reader, _ in stalled)
        finally:
            for _, writer in stalled:
                writer.close()
    assert health.status_code == 200


async def test_keep_alive_requests_and_a_long_stream_outlive_the_limits(
    home: CoroHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "HEARTBEAT_SECONDS", 0.2)
    workflow = write_workflow(home, "idle", [{"name": "work", "agent": None}])
    script = {"work": [{"tool": "await_event", "input": {"eventName": "developer-input: ?"}}]}
    async with (
        served(home, SHORT) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT_LIMIT) as client,
    ):
        created = await client.post(
            "/jobs", json={"workflowPath": workflow, "params": {"script": script}}
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["jobId"]
        # the same keep-alive connection again, after the first answer
        assert (await client.get(f"/jobs/{job_id}")).status_code == 200
        heartbeats = 0
        async with (
            asyncio.timeout(WAIT_LIMIT),
            client.stream("GET", f"/jobs/{job_id}/stream?tail=0") as response,
        ):
            async for frame in frames(response):
                if "heartbeat" in frame.comments:
                    heartbeats += 1
                    if heartbeats == 3:  # longer than the head and body limits
                        await server.runner.store.log(job_id, "still here")
                elif frame.data.endswith("still here"):
                    break
        assert (await client.post(f"/jobs/{job_id}/cancel")).status_code == 200
