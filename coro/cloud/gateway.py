"""`WS /ws/runner`: the runners' socket (the protocol is `coro.domain.cloud_protocol`).

A runner token is checked before the upgrade (401 with a JSON body otherwise); the
token's team is the team of everything on the socket. The first frame must be
`runner:register`: it records the session in `runner_sessions` (with this instance's
id, so other instances know where to send wake-ups), closes an older socket of the same
runner on any instance (1000 "replaced"), answers `runner:registered`, then sends the
runner its commands (`coro.cloud.commands`).

The runner's RPCs are answered by `coro.cloud.runner_rpcs`; a frame that is not JSON
or not a valid frame gets `rpc:response` 400, and a socket never dies of a bad frame
(except one too big: `CLOSE_TOO_BIG`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from coro.cloud.broker import (
    RUNNER_REPLACED,
    RUNNER_WAKE,
    TOKEN_REVOKED,
    WEBHOOKS_CHANGED,
    Broker,
)
from coro.cloud.commands import Commands
from coro.cloud.db import Database
from coro.cloud.mirror import Mirror
from coro.cloud.proposals import TeamProposals
from coro.cloud.runner_rpcs import (
    DATABASE_DOWN,
    RPC_RESULT_TTL,
    RunnerRpcs,
    error_reply,
    problems,
)
from coro.cloud.runner_tokens import RevocationHub, RunnerIdentity, verify_runner_token
from coro.cloud.schema import (
    rpc_results,
    runner_commands,
    runner_sessions,
    teams,
    webhook_secrets,
)
from coro.domain.cloud_protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL,
    CLOSE_REVOKED,
    CLOSE_TIMEOUT,
    CLOSE_TOO_BIG,
    HEARTBEAT_TIMEOUT_SECONDS,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    RUNNER_FRAME_TYPES,
    RpcResponse,
    RunnerHeartbeat,
    RunnerRegister,
    RunnerRegistered,
    RunnerSettings,
    major,
    runner_frame,
)

logger = logging.getLogger(__name__)

router = APIRouter()

#: How long shutdown waits for the sockets' handlers to finish closing.
SHUTDOWN_WAIT_SECONDS = 5.0


@dataclass(eq=False)
class RunnerConnection:
    """One accepted socket, and the runner on it once registered."""

    websocket: WebSocket
    identity: RunnerIdentity
    last_heartbeat: float
    connection_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    runner_id: str | None = None
    connected_at: datetime | None = None  # its `runner_sessions` row's, once registered
    closed: bool = False
    revoked: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    # sends (frames, the close) one at a time, commands in id order
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # command delivery: one pump at a time, run again while wanted
    wanted: bool = False
    resend: bool = False
    pump: asyncio.Task[None] | None = None

    @property
    def team_id(self) -> str:
        return self.identity.team_id

    async def send(self, frame: dict[str, Any]) -> bool:
        async with self.send_lock:
            if self.closed:
                return False
            try:
                await self.websocket.send_text(json.dumps(frame))
            except (RuntimeError, OSError):
                return False  # the socket went away: its commands are re-sent later
        return True

    async def close(self, code: int, reason: str) -> None:
        async with self.send_lock:
            if self.closed:
                return
            self.closed = True
            with contextlib.suppress(RuntimeError, OSError):
                await self.websocket.close(code, reason)


def _bearer(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return websocket.query_params.get("token") or None


def _message_id(raw: dict[str, Any]) -> str:
    found = raw.get("messageId")
    return found if isinstance(found, str) and len(found) <= 100 else ""


class Gateway:
    """The runner sockets this instance holds, and what arrives on them."""

    def __init__(
        self,
        db: Database,
        mirror: Mirror,
        commands: Commands,
        broker: Broker,
        hub: RevocationHub,
        instance_id: str,
        proposals: TeamProposals,
        *,
        heartbeat_timeout_seconds: float = HEARTBEAT_TIMEOUT_SECONDS,
    ) -> None:
        self.db = db
        self.mirror = mirror
        self.commands = commands
        self.broker = broker
        self.instance_id = instance_id
        self.heartbeat_timeout_seconds = heartbeat_timeout_seconds
        self.rpcs = RunnerRpcs(db, mirror, commands, proposals, broker, heartbeat_timeout_seconds)
        self._runners: dict[tuple[str, str], RunnerConnection] = {}
        self._by_token: dict[str, set[RunnerConnection]] = {}
        self._all: set[RunnerConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._unsubscribe = [
            broker.subscribe(RUNNER_WAKE, self._on_wake),
            broker.subscribe(TOKEN_REVOKED, self._on_token_revoked),
            broker.subscribe(RUNNER_REPLACED, self._on_replaced),
            broker.subscribe(WEBHOOKS_CHANGED, self._on_webhooks_changed),
            hub.subscribe(self._on_revocation),
        ]

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Close every socket with 1001 (the runners reconnect, to another instance)."""
        self._closing = True
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        held = list(self._all)
        for connection in held:
            await connection.close(CLOSE_GOING_AWAY, "cloud shutting down")
        if held:
            await asyncio.wait(
                [asyncio.create_task(c.finished.wait()) for c in held],
                timeout=SHUTDOWN_WAIT_SECONDS,
            )
        for task in list(self._tasks):
            task.cancel()

    def connection(self, team_id: str, runner_id: str) -> RunnerConnection | None:
        """The runner's socket if this instance holds it (`finished` is set once its
        handler is done, its session row gone)."""
        return self._runners.get((team_id, runner_id))

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ notices

    def _on_wake(self, payload: dict[str, Any]) -> None:
        team_id, runner_id = payload.get("teamId"), payload.get("runnerId")
        for (team, runner), connection in list(self._runners.items()):
            if team == team_id and runner_id in (None, runner):
                self._kick(connection)

    def _on_token_revoked(self, payload: dict[str, Any]) -> None:
        for connection in list(self._by_token.get(str(payload.get("tokenId")), ())):
            connection.revoked = True
            self._spawn(connection.close(CLOSE_REVOKED, "runner token revoked"))

    def _on_replaced(self, payload: dict[str, Any]) -> None:
        team_id, runner_id = payload.get("teamId"), payload.get("runnerId")
        for connection in list(self._all):
            if (connection.team_id, connection.runner_id) == (
                team_id,
                runner_id,
            ) and connection.connection_id != payload.get("connectionId"):
                self._spawn(connection.close(CLOSE_NORMAL, "replaced"))

    def _on_webhooks_changed(self, payload: dict[str, Any]) -> None:
        team_id = payload.get("teamId")
        held = [c for (team, _), c in self._runners.items() if team == team_id]
        if held:
            self._spawn(self._send_settings(str(team_id), held))

    async def _send_settings(self, team_id: str, held: list[RunnerConnection]) -> None:
        async with self.db.begin() as db:
            plugins = await _webhook_plugins(db, team_id)
        frame = RunnerSettings(webhook_plugins=plugins).to_wire()
        for connection in held:
            await connection.send(frame)

    async def _on_revocation(self, identity: RunnerIdentity) -> None:
        await self.broker.publish(TOKEN_REVOKED, {"tokenId": identity.token_id})

    # ------------------------------------------------------------------ the socket

    async def handle(self, websocket: WebSocket) -> None:
        if self._closing:
            await _deny(websocket, 503, "The cloud is shutting down; connect again")
            return
        token = _bearer(websocket)
        if token is None:
            await _deny(websocket, 401, "Missing runner token")
            return
        try:
            identity = await verify_runner_token(self.db, token)
        except DATABASE_DOWN as exc:
            logger.warning("runner socket refused: database unavailable (%s)", type(exc).__name__)
            await _deny(websocket, 503, "Database unavailable; try again shortly")
            return
        if identity is None:
            await _deny(websocket, 401, "Invalid or revoked runner token")
            return
        loop = asyncio.get_running_loop()
        connection = RunnerConnection(websocket, identity, last_heartbeat=loop.time())
        # tracked before the upgrade: a revocation from now on closes it
        self._all.add(connection)
        self._by_token.setdefault(identity.token_id, set()).add(connection)
        watchdog = asyncio.create_task(self._watchdog(connection))
        try:
            await websocket.accept()
            if connection.revoked:
                await connection.close(CLOSE_REVOKED, "runner token revoked")
            await self._serve(connection)
        except Exception:
            logger.exception("runner socket of team %s failed", identity.team_id)
            await connection.close(1011, "internal error")
        finally:
            watchdog.cancel()
            await self._forget(connection)
            connection.finished.set()

    async def _watchdog(self, connection: RunnerConnection) -> None:
        """Close a socket whose runner has not sent a heartbeat (or registered) in time."""
        loop = asyncio.get_running_loop()
        timeout = self.heartbeat_timeout_seconds
        while not connection.closed:
            remaining = connection.last_heartbeat + timeout - loop.time()
            if remaining <= 0:
                logger.info("runner %s: no heartbeat in %gs", connection.runner_id, timeout)
                await connection.close(CLOSE_TIMEOUT, f"no heartbeat for {timeout:g}s")
                return
            await asyncio.sleep(remaining)

    async def _forget(self, connection: RunnerConnection) -> None:
        self._all.discard(connection)
        tokens = self._by_token.get(connection.identity.token_id)
        if tokens is not None:
            tokens.discard(connection)
            if not tokens:
                del self._by_token[connection.identity.token_id]
        if connection.pump is not None:
            connection.pump.cancel()
        if connection.runner_id is None:
            return
        key = (connection.team_id, connection.runner_id)
        if self._runners.get(key) is connection:
            del self._runners[key]
        try:
            async with self.db.begin() as db:
                # only its own row: a newer socket of the same runner may have taken it
                await db.execute(
                    runner_sessions.delete().where(
                        runner_sessions.c.team_id == connection.team_id,
                        runner_sessions.c.runner_id == connection.runner_id,
                        runner_sessions.c.instance_id == self.instance_id,
                        runner_sessions.c.connected_at == connection.connected_at,
                    )
                )
        except DATABASE_DOWN as exc:
            # the row goes stale instead (its heartbeat ages); the next register replaces it
            logger.warning("runner session not removed: %s", type(exc).__name__)

    async def _receive(self, connection: RunnerConnection) -> str | bytes | None:
        """The next frame's data, or None once the socket is gone."""
        message = await connection.websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        data: str | bytes | None = message.get("text")
        if data is None:
            data = message.get("bytes") or b""
        return data

    async def _serve(self, connection: RunnerConnection) -> None:
        first = await self._receive(connection)
        if first is None:
            return
        if not await self._register(connection, first):
            return
        while True:
            data = await self._receive(connection)
            if data is None:
                return
            if len(data) > MAX_FRAME_BYTES or (
                isinstance(data, str)
                and len(data) * 4 > MAX_FRAME_BYTES
                and len(data.encode()) > MAX_FRAME_BYTES
            ):
                await connection.close(CLOSE_TOO_BIG, f"frame over {MAX_FRAME_BYTES} bytes")
                continue
            reply = await self._frame(connection, data)
            if reply is not None:
                await connection.send(reply)

    # ------------------------------------------------------------------ register

    async def _register(self, connection: RunnerConnection, data: str | bytes) -> bool:
        try:
            raw = json.loads(data)
            frame = runner_frame.validate_python(raw)
        except (ValueError, ValidationError):
            frame = None
        if not isinstance(frame, RunnerRegister):
            await connection.close(CLOSE_POLICY, "the first frame must be runner:register")
            return False
        if major(frame.protocol_version) != major(PROTOCOL_VERSION):
            await connection.close(
                CLOSE_PROTOCOL,
                f"protocol {frame.protocol_version} is not compatible with the cloud's "
                f"{PROTOCOL_VERSION}",
            )
            return False
        team_id = connection.team_id
        values = {
            "token_id": connection.identity.token_id,
            "instance_id": self.instance_id,
            "hostname": frame.hostname,
            "version": frame.version,
            "capacity": frame.capacity,
            "active_job_ids": frame.active_job_ids,
        }
        upsert = insert(runner_sessions).values(
            team_id=team_id, runner_id=frame.runner_id, **values
        )
        async with self.db.begin() as db:
            connected_at = (
                await db.execute(
                    upsert.on_conflict_do_update(
                        index_elements=[runner_sessions.c.team_id, runner_sessions.c.runner_id],
                        set_={
                            **values,
                            "connected_at": func.now(),
                            "last_heartbeat_at": func.now(),
                        },
                    ).returning(runner_sessions.c.connected_at)
                )
            ).scalar_one()
            team_name = await db.scalar(select(teams.c.name).where(teams.c.id == team_id))
            plugins = await _webhook_plugins(db, team_id)
            # what no retry can ask for again any more: old answers, finished commands
            await db.execute(
                rpc_results.delete().where(
                    rpc_results.c.team_id == team_id,
                    rpc_results.c.created_at < func.now() - RPC_RESULT_TTL,
                )
            )
            await db.execute(
                runner_commands.delete().where(
                    runner_commands.c.team_id == team_id,
                    runner_commands.c.state.in_(("done", "failed", "cancelled")),
                    runner_commands.c.done_at < func.now() - RPC_RESULT_TTL,
                )
            )
        connection.runner_id = frame.runner_id
        connection.connected_at = connected_at
        connection.last_heartbeat = asyncio.get_running_loop().time()
        self._runners[(team_id, frame.runner_id)] = connection
        await self.broker.publish(
            RUNNER_REPLACED,
            {
                "teamId": team_id,
                "runnerId": frame.runner_id,
                "connectionId": connection.connection_id,
            },
        )
        registered = RunnerRegistered(
            runner_id=frame.runner_id,
            team_id=team_id,
            team_name=team_name or "",
            webhook_plugins=plugins,
        )
        await connection.send(registered.to_wire())
        logger.info("runner %s of team %s registered", frame.runner_id, team_id)
        connection.resend = True
        self._kick(connection)
        return True

    # ------------------------------------------------------------------ commands

    def _kick(self, connection: RunnerConnection) -> None:
        """Send the runner what is queued for it (now, or again once the pump is done)."""
        connection.wanted = True
        if connection.pump is None or connection.pump.done():
            connection.pump = asyncio.get_running_loop().create_task(self._pump(connection))

    async def _pump(self, connection: RunnerConnection) -> None:
        assert connection.runner_id is not None
        while connection.wanted and not connection.closed:
            connection.wanted = False
            resend, connection.resend = connection.resend, False
            try:
                frames = await self.commands.claim(
                    connection.team_id, connection.runner_id, resend=resend
                )
            except DATABASE_DOWN as exc:
                # what stays queued is claimed at the next heartbeat
                connection.resend = connection.resend or resend
                logger.warning("runner commands not claimed: %s", type(exc).__name__)
                return
            for frame in frames:
                if not await connection.send(frame):
                    return

    # ------------------------------------------------------------------ frames

    async def _frame(
        self, connection: RunnerConnection, data: str | bytes
    ) -> dict[str, Any] | None:
        """The reply to one frame after register (None: nothing to answer)."""
        if isinstance(data, bytes):
            return error_reply("", 400, "Invalid frame: frames are JSON text, not binary")
        try:
            raw = json.loads(data)
        except ValueError:
            return error_reply("", 400, "Invalid frame: not JSON")
        if not isinstance(raw, dict):
            return error_reply("", 400, "Invalid frame: not a JSON object")
        message_id = _message_id(raw)
        kind = raw.get("type")
        if kind == "rpc:response":
            await self._response(connection, raw)
            return None
        if kind not in RUNNER_FRAME_TYPES:
            shown = kind[:50] if isinstance(kind, str) else kind
            return error_reply(message_id, 400, f"Invalid frame: unknown type {shown!r}")
        try:
            frame = runner_frame.validate_python(raw)
        except ValidationError as exc:
            return error_reply(message_id, 400, f"Invalid {kind} frame: {problems(exc)}")
        if isinstance(frame, RunnerRegister):
            return error_reply(message_id, 400, "Already registered on this socket")
        if isinstance(frame, RunnerHeartbeat):
            await self._heartbeat(connection, frame)
            return None
        assert connection.runner_id is not None
        return await self.rpcs.answer(connection.team_id, connection.runner_id, frame)

    async def _response(self, connection: RunnerConnection, raw: dict[str, Any]) -> None:
        assert connection.runner_id is not None
        try:
            response = RpcResponse.model_validate(raw)
        except ValidationError as exc:
            # answering an answer would read as the reply to one of the runner's requests
            logger.warning(
                "runner %s: invalid rpc:response ignored: %s", connection.runner_id, problems(exc)
            )
            return
        try:
            await self.commands.answer(connection.team_id, connection.runner_id, response)
        except DATABASE_DOWN as exc:
            # still `sent`: re-sent at its next register, answered again
            logger.warning("runner command answer not stored: %s", type(exc).__name__)

    async def _heartbeat(self, connection: RunnerConnection, frame: RunnerHeartbeat) -> None:
        connection.last_heartbeat = asyncio.get_running_loop().time()
        values: dict[str, Any] = {
            "active_job_ids": frame.active_job_ids,
            "last_heartbeat_at": func.now(),
        }
        if frame.capacity is not None:
            values["capacity"] = frame.capacity
        try:
            async with self.db.begin() as db:
                await db.execute(
                    runner_sessions.update()
                    .where(
                        runner_sessions.c.team_id == connection.team_id,
                        runner_sessions.c.runner_id == connection.runner_id,
                        runner_sessions.c.instance_id == self.instance_id,
                        runner_sessions.c.connected_at == connection.connected_at,
                    )
                    .values(values)
                )
        except DATABASE_DOWN as exc:
            logger.warning("runner heartbeat not stored: %s", type(exc).__name__)
            return
        self._kick(connection)  # it may have room for more


async def _webhook_plugins(db: AsyncConnection, team_id: str) -> list[str]:
    rows = await db.scalars(
        select(webhook_secrets.c.plugin_id)
        .where(webhook_secrets.c.team_id == team_id)
        .order_by(webhook_secrets.c.plugin_id)
    )
    return list(rows)


async def _deny(websocket: WebSocket, status: int, message: str) -> None:
    """Refuse the upgrade with a real HTTP status and a JSON body (ASGI's websocket
    denial response); a server without that extension gets a plain close (403)."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    try:
        await websocket.send_denial_response(
            JSONResponse({"error": message}, status_code=status, headers=headers)
        )
    except RuntimeError:
        await websocket.close(CLOSE_POLICY, message)


@router.websocket("/ws/runner")
async def runner_socket(websocket: WebSocket) -> None:
    """A runner's connection (token in `Authorization: Bearer` or `?token=`)."""
    gateway: Gateway = websocket.app.state.services.gateway
    await gateway.handle(websocket)
