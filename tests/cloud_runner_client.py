"""A thin runner for testing the cloud's `WS /ws/runner` in isolation: a real
`websockets` client that registers, heartbeats, sends RPCs and receives commands when
the test says so (the real runner-side link is `coro.state.cloud`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from coro.domain.cloud_protocol import PROTOCOL_VERSION
from tests.cloud_helpers import WAIT_LIMIT, Account, Cloud


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://", 1) + "/ws/runner"


class RunnerClient:
    """One socket; frames it receives are sorted: answers to its requests (by
    messageId), `runner:registered`, and everything else (commands) in a queue."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.registered: asyncio.Future[dict[str, Any]] = asyncio.Future()
        self.commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._orphans: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in self.socket:
                frame = json.loads(data)
                kind = frame.get("type")
                if kind == "runner:registered":
                    self.registered.set_result(frame)
                elif kind == "rpc:response":
                    waiter = self._answers.pop(frame.get("messageId", ""), None)
                    if waiter is None:
                        await self._orphans.put(frame)
                    else:
                        waiter.set_result(frame)
                else:
                    await self.commands.put(frame)

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.socket.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def register(
        self,
        runner_id: str,
        *,
        capacity: int = 1,
        active: list[str] | None = None,
        version: str = PROTOCOL_VERSION,
    ) -> dict[str, Any]:
        await self.send(
            {
                "type": "runner:register",
                "runnerId": runner_id,
                "hostname": "test-host",
                "protocolVersion": version,
                "capacity": capacity,
                "activeJobIds": active or [],
                "version": "0.0.test",
            }
        )
        async with asyncio.timeout(WAIT_LIMIT):
            return await asyncio.shield(self.registered)

    async def heartbeat(self, active: list[str], capacity: int | None = None) -> None:
        frame: dict[str, Any] = {"type": "runner:heartbeat", "activeJobIds": active}
        if capacity is not None:
            frame["capacity"] = capacity
        await self.send(frame)

    async def rpc(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a request (a messageId is added if it has none) and wait for its answer."""
        frame = {"messageId": uuid.uuid4().hex, **frame}
        waiter: asyncio.Future[dict[str, Any]] = asyncio.Future()
        self._answers[frame["messageId"]] = waiter
        await self.send(frame)
        async with asyncio.timeout(WAIT_LIMIT):
            return await waiter

    async def unsolicited(self) -> dict[str, Any]:
        """The next rpc:response answering no request of ours (e.g. to a bad frame)."""
        async with asyncio.timeout(WAIT_LIMIT):
            return await self._orphans.get()

    async def command(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_LIMIT):
            return await self.commands.get()

    async def answer(
        self,
        command: dict[str, Any],
        *,
        ok: bool = True,
        data: Any = None,
        error: str | None = None,
        status: int | None = None,
    ) -> None:
        frame: dict[str, Any] = {
            "type": "rpc:response",
            "messageId": command["messageId"],
            "ok": ok,
            "data": data,
        }
        if error is not None:
            frame["error"] = error
        if status is not None:
            frame["status"] = status
        await self.send(frame)

    async def closed(self) -> tuple[int | None, str]:
        """The close code and reason the cloud closed the socket with."""
        async with asyncio.timeout(WAIT_LIMIT):
            await self.socket.wait_closed()
            await self._reader
        received = self.socket.protocol.close_rcvd
        return (received.code, received.reason) if received else (None, "")


@contextlib.asynccontextmanager
async def runner_client(
    http_url: str, token: str, *, via_query: bool = False
) -> AsyncIterator[RunnerClient]:
    """A connected (not yet registered) client; the token in the header or `?token=`."""
    url = ws_url(http_url)
    headers = {}
    if via_query:
        url += f"?token={token}"
    else:
        headers["Authorization"] = f"Bearer {token}"
    async with asyncio.timeout(WAIT_LIMIT):
        socket = await connect(url, additional_headers=headers, open_timeout=WAIT_LIMIT)
    client = RunnerClient(socket)
    try:
        yield client
    finally:
        await socket.close()
        with contextlib.suppress(Exception):
            await client._reader


def job_json(job_id: str, **fields: Any) -> dict[str, Any]:
    """A job as a runner replicates it (camelCase)."""
    values: dict[str, Any] = {
        "id": job_id,
        "workflowPath": "workflows/fix.md",
        "status": "running",
        "phase": "plan",
        "createdAt": "2025-01-01T00:00:00.000Z",
        "updatedAt": "2025-01-01T00:00:00.000Z",
    }
    values.update(fields)
    return values


async def runner_token(cloud: Cloud, owner: Account, team_id: str) -> tuple[str, str]:
    """A new runner token of the team: (secret, token id)."""
    response = await cloud.client.post(
        f"/teams/{team_id}/runner-tokens", json={"name": "test runner"}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["token"], body["id"]


@dataclass
class TeamRunner:
    """A team, its admin and a runner token of it."""

    owner: Account
    team_id: str
    token: str
    token_id: str


async def team_runner(cloud: Cloud) -> TeamRunner:
    owner = await cloud.signup()
    team = await cloud.team(owner)
    token, token_id = await runner_token(cloud, owner, team["id"])
    return TeamRunner(owner, team["id"], token, token_id)
