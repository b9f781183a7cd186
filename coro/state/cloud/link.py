"""`CloudLink`: a hybrid runner's WebSocket to its team cloud (`WS /ws/runner`).

The link dials `<cloud.url>/ws/runner` (http → ws, https → wss) with the runner token in
the `Authorization` header, registers (`runner:register` → `runner:registered`), sends
heartbeats, and reconnects forever with exponential backoff and full jitter — except
after `CLOSE_REVOKED` (or a 401 at the upgrade: the token is unknown or revoked) and
`CLOSE_PROTOCOL`, which no retry can fix. Its `state` is observable (`wait_for`).

Both directions are RPCs (`coro.domain.cloud_protocol`):
- `call(frame)` sends a request and waits for its `rpc:response`, re-sending it with the
  same `messageId` after `rpc_timeout` (the cloud de-duplicates); it fails at once with
  `LinkDown` while the link is down, and with `LinkDown` when the connection drops
  before the answer;
- commands from the cloud go to `handler`, and the link sends its answer; a command
  re-sent with the same `messageId` gets the first answer again without running twice
  (a bounded memory of recent answers).

The token is never logged nor put in the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import secrets
import socket
import tempfile
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from coro.domain.cloud_protocol import (
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    CLOSE_REVOKED,
    HEARTBEAT_INTERVAL_SECONDS,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    RECONNECT_BASE_SECONDS,
    RECONNECT_CAP_SECONDS,
    RPC_MAX_RETRIES,
    RPC_TIMEOUT_SECONDS,
    CloudCommand,
    Request,
    RpcResponse,
    RunnerHeartbeat,
    RunnerRegister,
    RunnerRegistered,
    RunnerSettings,
    cloud_command,
)
from coro.version import __version__

logger = logging.getLogger(__name__)

LinkState = Literal["stopped", "connecting", "connected", "disconnected", "revoked", "incompatible"]
#: states the link never leaves by itself (it stopped reconnecting)
FINAL_STATES = frozenset({"stopped", "revoked", "incompatible"})

RUNNER_ID_FILE = "runner-id"
_RUNNER_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
#: answers to recent commands kept for re-sent ones
MAX_REMEMBERED_ANSWERS = 2048

CommandHandler = Callable[[CloudCommand], Awaitable[RpcResponse]]


class LinkDown(ConnectionError):
    """The link is not connected (or the connection dropped before the answer)."""


class RpcTimeout(LinkDown):
    """No answer after every retry, while connected."""


class RpcError(RuntimeError):
    """The cloud answered `ok: false`."""

    def __init__(self, error: str, status: int | None) -> None:
        super().__init__(error)
        self.status = status


class LinkRefused(RuntimeError):
    """The cloud refuses this runner for good (revoked token, incompatible protocol)."""

    def __init__(self, state: LinkState, message: str) -> None:
        super().__init__(message)
        self.state = state


@dataclass(frozen=True)
class RunnerLoad:
    """What the runner reports in its register and heartbeat frames."""

    capacity: int
    active_job_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LinkTimings:
    """The protocol's intervals (tests shorten them)."""

    rpc_timeout: float = RPC_TIMEOUT_SECONDS
    rpc_max_retries: int = RPC_MAX_RETRIES
    heartbeat_interval: float = HEARTBEAT_INTERVAL_SECONDS
    reconnect_base: float = RECONNECT_BASE_SECONDS
    reconnect_cap: float = RECONNECT_CAP_SECONDS
    #: the WebSocket handshake, and the wait for `runner:registered`
    open_timeout: float = 10.0


def runner_ws_url(cloud_url: str) -> str:
    """`<cloud.url>/ws/runner` with http → ws and https → wss."""
    parts = urlsplit(cloud_url.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ValueError("cloud.url must be an http:// or https:// URL")
    path = parts.path.rstrip("/") + "/ws/runner"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def load_runner_id(cloud_dir: Path, configured: str | None = None) -> str:
    """The runner's id: `configured`, else the one kept in `<cloud_dir>/runner-id`
    (made once, so it stays the same across restarts). Blocking: call it in a thread."""
    if configured:
        return configured
    path = cloud_dir / RUNNER_ID_FILE
    with contextlib.suppress(FileNotFoundError):
        kept = path.read_text(encoding="utf-8").strip()
        if _RUNNER_ID.match(kept):
            return kept
    runner_id = f"runner-{secrets.token_hex(6)}"
    cloud_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=cloud_dir, prefix=".runner-id-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(runner_id + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return runner_id


def new_message_id() -> str:
    """Unique across restarts too: the cloud keeps answers by message id."""
    return f"m-{secrets.token_hex(12)}"


class LinkClosed(ConnectionError):
    """The connection closed (or the cloud broke the protocol); `code`/`reason` say how."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class CloudLink:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        cloud_dir: Path,
        runner_id: str | None = None,
        hostname: str | None = None,
        version: str = __version__,
        load: Callable[[], RunnerLoad] | None = None,
        timings: LinkTimings | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.ws_url = runner_ws_url(url)
        self._token = token
        self.cloud_dir = cloud_dir
        self._configured_id = runner_id
        self.runner_id: str | None = runner_id
        self.hostname = hostname if hostname is not None else socket.gethostname()
        self.version = version
        self.load: Callable[[], RunnerLoad] = load or (lambda: RunnerLoad(capacity=1))
        self.timings = timings or LinkTimings()
        #: answers the cloud's commands (set by the runner before `start`)
        self.handler: CommandHandler | None = None
        #: called after every registration (the replicator then resyncs)
        self.on_connected: list[Callable[[], None]] = []
        self.state: LinkState = "stopped"
        self.team_id: str | None = None
        self.team_name: str | None = None
        #: plugins whose webhooks the cloud forwards to this team (`runner:registered`,
        #: `runner:settings`)
        self.webhook_plugins: frozenset[str] = frozenset()
        self.last_error: str | None = None
        #: successful registrations so far (each reconnect adds one)
        self.registrations = 0
        self._changed = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._send_lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Future[RpcResponse]] = {}
        self._answers: OrderedDict[str, RpcResponse] = OrderedDict()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._nudged = asyncio.Event()
        self._started_at = time.monotonic()
        #: whether the last connection got as far as `runner:registered` (backoff resets)
        self._was_registered = False
        self._replies: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:  # never the token
        return f"CloudLink({self.url!r}, state={self.state!r}, runner_id={self.runner_id!r})"

    # --- life -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background (never waits for the cloud)."""
        if self._task is not None:
            return
        self.runner_id = await asyncio.to_thread(
            load_runner_id, self.cloud_dir, self._configured_id
        )
        self._stopping.clear()
        self._started_at = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="coro-cloud-link")

    async def stop(self) -> None:
        """Close the connection (1000) and stop reconnecting."""
        self._stopping.set()
        task, self._task = self._task, None
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(1000, "runner stopping")
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        pending = [*self._running.values(), *self._replies]
        for running in pending:
            running.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self.state not in ("revoked", "incompatible"):
            self._set_state("stopped")

    async def wait_for(self, *states: LinkState) -> LinkState:
        """Wait until the link is in one of `states` (bound it with a timeout)."""
        await self.wait_until(lambda: self.state in states)
        return self.state

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until `condition()` holds, checked at every change of state or settings."""
        while not condition():
            self._changed.clear()
            await self._changed.wait()

    @property
    def running(self) -> bool:
        """Whether the link is still connecting or connected (not given up or stopped)."""
        return self._task is not None and not self._task.done()

    def nudge(self) -> None:
        """Send a heartbeat now (the runner's load changed: a slot freed up)."""
        self._nudged.set()

    def _set_state(self, state: LinkState) -> None:
        if state != self.state:
            self.state = state
            self._changed.set()

    # --- the connection loop --------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            self._set_state("connecting")
            try:
                await self._session()
            except LinkRefused as exc:
                self.last_error = str(exc)
                logger.error("cloud %s: %s; not reconnecting", self.url, exc)
                self._set_state(exc.state)
                return
            except LinkClosed as exc:
                replaced = exc.code == CLOSE_NORMAL and exc.reason == "replaced"
                if replaced:
                    # another process registered under this runner id: back off (do not
                    # take turns with it at full speed)
                    self._was_registered = False
                    logger.warning(
                        "cloud %s: another runner connected as %s (same $CORO_HOME or "
                        "cloud.runnerId?)",
                        self.url,
                        self.runner_id,
                    )
                self.last_error = f"connection closed ({exc.code}): {exc.reason or 'no reason'}"
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self.last_error = f"cannot connect: {_describe(exc)}"
            if self._stopping.is_set():
                return
            self._set_state("disconnected")
            if self._was_registered:
                attempt = 0
            delay = random.uniform(
                0, min(self.timings.reconnect_cap, self.timings.reconnect_base * 2**attempt)
            )
            attempt = min(attempt + 1, 32)
            logger.info("cloud %s: %s; reconnecting in %.1fs", self.url, self.last_error, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _session(self) -> None:
        """One connection: open, register, serve until it closes."""
        self._was_registered = False
        ws = await self._open()
        try:
            registered = await self._register(ws)
            self._was_registered = True
            self._ws = ws
            self.team_id, self.team_name = registered.team_id, registered.team_name
            self.webhook_plugins = frozenset(registered.webhook_plugins)
            self.registrations += 1
            self.last_error = None
            self._set_state("connected")
            logger.info(
                "cloud %s: connected as %s (team %s)", self.url, self.runner_id, self.team_id
            )
            for callback in self.on_connected:
                callback()
            heartbeat = asyncio.create_task(self._heartbeats(ws))
            try:
                await self._receive(ws)
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
        finally:
            self._ws = None
            if self._was_registered and not self._stopping.is_set():
                # at once: a caller that sees LinkDown must not find the link "connected"
                self._set_state("disconnected")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(LinkDown("the connection to the cloud dropped"))
            with contextlib.suppress(Exception):
                await ws.close()
        self._raise_close(ws)

    async def _open(self) -> ClientConnection:
        try:
            return await connect(
                self.ws_url,
                additional_headers={"Authorization": f"Bearer {self._token}"},
                user_agent_header=f"coro-runner/{self.version}",
                open_timeout=self.timings.open_timeout,
                max_size=MAX_FRAME_BYTES,
                compression=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise LinkRefused(
                    "revoked", f"the runner token was refused (HTTP {status}): revoked or unknown"
                ) from None
            raise

    async def _register(self, ws: ClientConnection) -> RunnerRegistered:
        assert self.runner_id is not None
        load = self.load()
        frame = RunnerRegister(
            type="runner:register",
            runner_id=self.runner_id,
            hostname=self.hostname[:255],
            protocol_version=PROTOCOL_VERSION,
            capacity=load.capacity,
            active_job_ids=load.active_job_ids,
            version=self.version[:64],
        )
        try:
            await ws.send(json.dumps(frame.to_wire()))
            raw = await asyncio.wait_for(ws.recv(), self.timings.open_timeout)
        except ConnectionClosed:
            self._raise_close(ws)
        data = _json(raw)
        if data is None or data.get("type") != "runner:registered":
            raise LinkClosed(None, "the cloud answered the registration with something else")
        try:
            return RunnerRegistered.model_validate(data)
        except ValidationError:
            raise LinkClosed(None, "the cloud's runner:registered frame is invalid") from None

    def _raise_close(self, ws: ClientConnection) -> NoReturn:
        code, reason = ws.close_code, ws.close_reason or ""
        if code == CLOSE_REVOKED:
            raise LinkRefused("revoked", f"the cloud revoked the runner token ({reason or code})")
        if code == CLOSE_PROTOCOL:
            raise LinkRefused(
                "incompatible",
                f"the cloud speaks an incompatible protocol (ours {PROTOCOL_VERSION}): "
                f"{reason or code}",
            )
        raise LinkClosed(code, reason)

    async def _heartbeats(self, ws: ClientConnection) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudged.wait(), self.timings.heartbeat_interval)
            self._nudged.clear()
            load = self.load()
            frame = RunnerHeartbeat(
                type="runner:heartbeat",
                active_job_ids=load.active_job_ids,
                capacity=load.capacity,
                uptime_ms=int((time.monotonic() - self._started_at) * 1000),
            )
            try:
                await self._send(ws, frame.to_wire())
            except ConnectionClosed:
                return

    async def _send(self, ws: ClientConnection, data: dict[str, Any]) -> None:
        async with self._send_lock:
            await ws.send(json.dumps(data))

    async def _receive(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                data = _json(raw)
                if data is None:
                    logger.warning("cloud %s: ignored a frame that is not a JSON object", self.url)
                    continue
                kind = data.get("type")
                if kind == "rpc:response":
                    self._answered(data)
                elif kind == "runner:settings":
                    self._settings(data)
                elif kind == "runner:registered":
                    continue
                else:
                    self._command(data)

    def _settings(self, data: dict[str, Any]) -> None:
        try:
            settings = RunnerSettings.model_validate(data)
        except ValidationError:
            logger.warning("cloud %s: ignored an invalid runner:settings", self.url)
            return
        self.webhook_plugins = frozenset(settings.webhook_plugins)
        self._changed.set()

    def receives_webhooks(self, plugin_id: str) -> bool:
        """Whether `plugin_id`'s events reach this runner as webhooks now (connected,
        and the team has its secret): the PR poller leaves such PRs alone."""
        return self.state == "connected" and plugin_id in self.webhook_plugins

    # --- RPCs to the cloud ----------------------------------------------------------

    async def call(self, frame: Request) -> Any:
        """Send a request and return the `data` of its answer.

        `LinkDown` while disconnected or if the connection drops first, `RpcTimeout`
        after every retry, `RpcError` for an `ok: false` answer."""
        ws = self._ws
        if ws is None or self.state != "connected":
            raise LinkDown(f"not connected to the cloud ({self.state})")
        message_id = frame.message_id
        future: asyncio.Future[RpcResponse] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        wire = frame.to_wire()
        try:
            for _ in range(1 + max(0, self.timings.rpc_max_retries)):
                if self._ws is not ws:
                    raise LinkDown("the connection to the cloud dropped")
                try:
                    await self._send(ws, wire)
                except ConnectionClosed:
                    raise LinkDown("the connection to the cloud dropped") from None
                with contextlib.suppress(TimeoutError):
                    response = await asyncio.wait_for(
                        asyncio.shield(future), self.timings.rpc_timeout
                    )
                    if response.ok:
                        return response.data
                    raise RpcError(response.error or "RPC failed", response.status)
            raise RpcTimeout(f"no answer to {wire.get('type')} ({message_id}) from the cloud")
        finally:
            self._pending.pop(message_id, None)
            if not future.done():
                future.cancel()

    def _answered(self, data: dict[str, Any]) -> None:
        try:
            response = RpcResponse.model_validate(data)
        except ValidationError:
            logger.warning("cloud %s: ignored an invalid rpc:response", self.url)
            return
        future = self._pending.get(response.message_id)
        if future is not None and not future.done():
            future.set_result(response)

    # --- commands from the cloud ----------------------------------------------------

    def _command(self, data: dict[str, Any]) -> None:
        message_id = data.get("messageId")
        if not isinstance(message_id, str) or not message_id:
            logger.warning(
                "cloud %s: ignored a %r frame without messageId", self.url, data.get("type")
            )
            return
        answer = self._answers.get(message_id)
        if answer is not None:  # re-sent: the first answer again, no second effect
            self._answers.move_to_end(message_id)
            self._reply(answer)
            return
        if message_id in self._running:  # still running: its answer follows
            return
        try:
            command = cloud_command.validate_python(data)
        except ValidationError as exc:
            self._remember(
                RpcResponse(
                    message_id=message_id[:100],
                    ok=False,
                    status=400,
                    error=f"invalid {str(data.get('type'))[:60]!r} frame: {_summary(exc)}",
                )
            )
            return
        task = asyncio.create_task(self._run_command(command))
        self._running[message_id] = task
        task.add_done_callback(lambda _: self._running.pop(message_id, None))

    async def _run_command(self, command: CloudCommand) -> None:
        handler = self.handler
        if handler is None:
            response = RpcResponse(
                message_id=command.message_id, ok=False, status=503, error="runner not ready"
            )
        else:
            try:
                response = await handler(command)
            except Exception:
                logger.exception("cloud command %s failed", command.type)
                response = RpcResponse(
                    message_id=command.message_id,
                    ok=False,
                    status=500,
                    error="Internal error; see the runner's log",
                )
        self._remember(response)

    def _remember(self, response: RpcResponse) -> None:
        self._answers[response.message_id] = response
        while len(self._answers) > MAX_REMEMBERED_ANSWERS:
            self._answers.popitem(last=False)
        self._reply(response)

    def _reply(self, response: RpcResponse) -> None:
        """Send an answer on the current connection; a lost one is sent again when the
        cloud re-sends the command after a reconnect."""
        ws = self._ws
        if ws is None:
            return

        async def send() -> None:
            with contextlib.suppress(ConnectionClosed):
                await self._send(ws, response.to_wire())

        task = asyncio.create_task(send())
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)


async def probe(
    url: str,
    token: str,
    *,
    cloud_dir: Path,
    runner_id: str | None = None,
    timings: LinkTimings | None = None,
) -> RunnerRegistered:
    """Connect once, register, close (what `coro login --token` checks).

    `LinkRefused` for a revoked or unknown token or an incompatible cloud; `LinkClosed`,
    `OSError`, `TimeoutError` or `InvalidHandshake` when the cloud cannot be reached or
    does not register the runner."""
    link = CloudLink(url, token, cloud_dir=cloud_dir, runner_id=runner_id, timings=timings)
    link.runner_id = await asyncio.to_thread(load_runner_id, cloud_dir, runner_id)
    ws = await link._open()
    try:
        return await link._register(ws)
    finally:
        await ws.close(1000, "probe done")


def _json(raw: str | bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _summary(exc: ValidationError) -> str:
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:3]
    ]
    return "; ".join(parts)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
