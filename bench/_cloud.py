"""Shared plumbing of the team cloud's benchmarks: `coro cloud` child processes on a
throw-away PostgreSQL database (several meeting in Redis), teams with runner tokens, a
thin protocol-level runner, and a clock that is the same in every process.

The cloud always runs as its own process, so what is measured is its event loop (and
its memory, read from `/proc/<pid>/status`), not the benchmark's clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import URL, make_url
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench._common import _state_database, write_result
from coro.cloud import migrate
from coro.cloud.db import Database
from coro.domain.cloud_protocol import PROTOCOL_VERSION

REPO_ROOT = Path(__file__).resolve().parent.parent
#: the Redis that `--instances 2` meet in (each run on channels of its own prefix)
REDIS_URL = os.environ.get("CORO_BENCH_REDIS", "redis://127.0.0.1:6379/0")
#: a throw-away signing key: the accounts of a run die with its database
JWT_SECRET = secrets.token_urlsafe(48)
PASSWORD = "a benchmark password, long enough"
#: a guard against hangs (a child that never answers), not a measure
WAIT_LIMIT = 120.0
#: output lines of a cloud process kept for an error message
KEPT_LINES = 200


def clock_ns() -> int:
    """CLOCK_MONOTONIC: one clock for every process on the machine (Linux), so a stamp
    taken in one process can be compared with a reading taken in another."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


# --- databases and cloud processes -----------------------------------------------------


@contextlib.asynccontextmanager
async def cloud_database() -> AsyncIterator[URL]:
    """A fresh database on the benchmarks' PostgreSQL server (`CORO_BENCH_POSTGRES`),
    migrated to the cloud's newest schema; dropped afterwards (also on Ctrl+C)."""
    async with _state_database("postgres") as raw:
        assert raw is not None
        url = make_url(raw)
        db = Database(url)
        try:
            await migrate.upgrade(db)
        finally:
            await db.close()
        yield url


def _child_env(**values: str) -> dict[str, str]:
    """This environment without any Coro, cloud or database settings of its own."""
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
class CloudProcess:
    """One `coro cloud` child process; its output is drained (so the pipe never fills)
    and the last lines kept for error messages."""

    process: asyncio.subprocess.Process
    name: str
    url: str = ""
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=KEPT_LINES))
    _pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        """The process's resident memory now (VmRSS, KiB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for {self.name} (pid {self.pid})")

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def _read(self, listening: asyncio.Future[str]) -> None:
        assert self.process.stdout is not None
        marker = "Coro cloud listening on "
        while raw := await self.process.stdout.readline():
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if marker in line and not listening.done():
                listening.set_result(line.split(marker, 1)[1].strip())
        if not listening.done():
            listening.set_exception(
                RuntimeError(f"{self.name} exited before listening:\n{self.output}")
            )

    async def stop(self) -> None:
        """SIGTERM (a graceful stop), SIGKILL if it takes too long."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await self._pump


def _plain(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def start_cloud(db_url: URL, name: str, redis_prefix: str | None = None) -> CloudProcess:
    """`coro cloud` on a free loopback port of its choosing; returns once it listens."""
    values = {
        "DATABASE_URL": _plain(db_url),
        "JWT_SECRET": JWT_SECRET,
        "JWT_ACCESS_TTL_SECONDS": "86400",  # a long run outlives the default 15 min
        "CLOUD_HOST": "127.0.0.1",
        "CLOUD_PORT": "0",
    }
    if redis_prefix is not None:
        values |= {"REDIS_URL": REDIS_URL, "REDIS_CHANNEL_PREFIX": redis_prefix}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coro",
        "cloud",
        env=_child_env(**values),
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # out of the terminal's process group: a Ctrl+C reaches this process only, which
        # then stops its children in order (a cloud gone first would fail the run)
        start_new_session=True,
    )
    cloud = CloudProcess(process, name)
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    cloud._pump = asyncio.create_task(cloud._read(listening))
    try:
        async with asyncio.timeout(WAIT_LIMIT):
            cloud.url = await listening
    except BaseException:
        await cloud.stop()
        raise
    return cloud


@contextlib.asynccontextmanager
async def clouds(instances: int = 1) -> AsyncIterator[list[CloudProcess]]:
    """`instances` cloud processes on one fresh database (and, for more than one, one
    Redis on a random channel prefix); all stopped and the database dropped afterwards."""
    started: list[CloudProcess] = []
    async with cloud_database() as db_url:
        prefix = f"coro-bench-{secrets.token_hex(4)}:" if instances > 1 else None
        try:
            for n in range(instances):
                started.append(await start_cloud(db_url, f"cloud-{n + 1}", prefix))
            yield started
        finally:
            await asyncio.gather(*(c.stop() for c in started), return_exceptions=True)


# --- accounts and teams ---------------------------------------------------------------


@dataclass(frozen=True)
class Team:
    id: str
    token: str  # a runner token of the team
    headers: dict[str, str]  # its owner's access token


async def make_teams(cloud_url: str, count: int, *, parallel: int = 8) -> list[Team]:
    """One user owning `count` teams, each with a runner token."""
    async with httpx.AsyncClient(base_url=cloud_url, timeout=WAIT_LIMIT) as client:
        signup = await client.post(
            "/auth/signup",
            json={
                "email": f"bench-{secrets.token_hex(4)}@example.com",
                "name": "Bench Lead",
                "password": PASSWORD,
            },
        )
        _expect_status(signup, 201)
        headers = {"Authorization": f"Bearer {signup.json()['accessToken']}"}
        gate = asyncio.Semaphore(parallel)

        async def one(n: int) -> Team:
            async with gate:
                made = await client.post(
                    "/teams",
                    json={"name": f"Bench {n}", "slug": f"bench-{n}-{secrets.token_hex(3)}"},
                    headers=headers,
                )
                _expect_status(made, 201)
                team_id = str(made.json()["id"])
                minted = await client.post(
                    f"/teams/{team_id}/runner-tokens", json={"name": "bench"}, headers=headers
                )
                _expect_status(minted, 201)
                return Team(team_id, str(minted.json()["token"]), headers)

        return list(await asyncio.gather(*(one(n) for n in range(count))))


def _expect_status(response: httpx.Response, status: int) -> None:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:300]}"
        )


# --- a protocol-level runner ----------------------------------------------------------


def ws_url(cloud_url: str) -> str:
    return cloud_url.replace("http://", "ws://", 1) + "/ws/runner"


#: called with (runner, frame, the clock when the frame arrived) for every command
OnCommand = Callable[["ProtocolRunner", dict[str, Any], int], Awaitable[None]]


class ProtocolRunner:
    """A runner reduced to its socket: registers, heartbeats when told, sends RPCs and
    hands every command to `on_command` (stamped with `clock_ns()` on arrival, before
    the frame is even parsed)."""

    def __init__(self, socket: ClientConnection, on_command: OnCommand | None) -> None:
        self.socket = socket
        self.on_command = on_command
        self.registered: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls, cloud_url: str, token: str, on_command: OnCommand | None = None
    ) -> ProtocolRunner:
        socket = await connect(
            ws_url(cloud_url),
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=WAIT_LIMIT,
            max_size=None,
        )
        return cls(socket, on_command)

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in self.socket:
                arrived = clock_ns()
                frame = json.loads(data)
                kind = frame.get("type")
                if kind == "runner:registered":
                    if not self.registered.done():
                        self.registered.set_result(frame)
                elif kind == "rpc:response":
                    waiter = self._answers.pop(str(frame.get("messageId", "")), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(frame)
                elif self.on_command is not None:
                    await self.on_command(self, frame, arrived)
        if not self.registered.done():
            self.registered.set_exception(ConnectionError("socket closed before registered"))
        for waiter in self._answers.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("socket closed before the answer"))

    async def send(self, frame: dict[str, Any]) -> None:
        await self.socket.send(json.dumps(frame))

    async def register(self, runner_id: str, *, capacity: int = 1) -> dict[str, Any]:
        await self.send(
            {
                "type": "runner:register",
                "runnerId": runner_id,
                "hostname": "bench",
                "protocolVersion": PROTOCOL_VERSION,
                "capacity": capacity,
                "activeJobIds": [],
                "version": "bench",
            }
        )
        async with asyncio.timeout(WAIT_LIMIT):
            return await asyncio.shield(self.registered)

    async def heartbeat(self, capacity: int | None = None) -> None:
        frame: dict[str, Any] = {"type": "runner:heartbeat", "activeJobIds": []}
        if capacity is not None:
            frame["capacity"] = capacity
        await self.send(frame)

    async def rpc(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a request (with a new messageId) and wait for its answer."""
        message_id = secrets.token_hex(12)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[message_id] = waiter
        await self.send({**frame, "messageId": message_id})
        async with asyncio.timeout(WAIT_LIMIT):
            return await waiter

    async def answer(self, message_id: str, data: Any = None) -> None:
        await self.send({"type": "rpc:response", "messageId": message_id, "ok": True, "data": data})

    async def close(self) -> None:
        await self.socket.close()
        with contextlib.suppress(Exception):
            await self._reader


def job_json(job_id: str, **fields: Any) -> dict[str, Any]:
    """A job as a runner replicates it (camelCase)."""
    now = "2026-01-01T00:00:00.000Z"
    return {
        "id": job_id,
        "workflowPath": "workflows/bench/workflow.md",
        "status": "running",
        "phase": "work",
        "createdAt": now,
        "updatedAt": now,
        **fields,
    }


# --- child processes speaking lines ----------------------------------------------------


@dataclass
class LineChild:
    """A benchmark's own helper process (`python -m bench.<name> <args>`), talked to over
    its stdin and stdout, one line per message (stderr goes to the terminal)."""

    process: asyncio.subprocess.Process

    @classmethod
    async def spawn(cls, module: str, *args: str) -> LineChild:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 28,
            start_new_session=True,  # stopped by this process (see `start_cloud`)
        )
        return cls(process)

    async def tell(self, message: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(message.encode() + b"\n")
        await self.process.stdin.drain()

    async def expect(self, word: str, limit: float = WAIT_LIMIT) -> str:
        """The child's next line, which must start with `word`."""
        assert self.process.stdout is not None
        async with asyncio.timeout(limit):
            line = (await self.process.stdout.readline()).decode().strip()
        if not line.startswith(word):
            raise RuntimeError(f"helper process said {line[:300]!r}, expected {word!r}")
        return line

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()


async def read_parent_line() -> str:
    """The next line the parent wrote to this helper process's stdin ('' at its end)."""
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def finish(
    result: dict[str, Any],
    name: str,
    *,
    as_json: bool,
    quiet: bool,
    report: Callable[[dict[str, Any]], None],
) -> None:
    """Write a benchmark's result file, then print it: the JSON alone, or the report
    (and where the file went, unless quiet)."""
    path = write_result(name, result)
    if as_json:
        print(json.dumps(result))
        return
    report(result)
    if not quiet:
        print(f"  → {path}")
