"""External MCP servers (`mcpServers` in config.json) attached to Coro's tool registry.

At runner start every enabled server is connected (concurrently; a server that cannot
be reached within `CONNECT_TIMEOUT` is given up on), its tools are listed, and each
becomes a Coro tool `mcp__<serverId>__<toolName>` whose handler forwards the call:
arguments as given, the result's text back to the agent, an MCP error result (or a
protocol error) as a `ToolError`. `allowedTools` / `disallowedTools` (tool names or
globs, bare or as full Coro names) choose which tools join. Phases then see these
tools like any other (a phase `tools:` list can name `mcp__github__*`).

A server that fails is logged and reported (`GET /mcp-servers`, with the tail of a
stdio server's stderr); the runner carries on without its tools. Values of `env` and
`headers` are secrets: they are never logged and are scrubbed from error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import os
import re
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Literal, TextIO, cast
from urllib.parse import parse_qsl, urlsplit

from pydantic import ConfigDict

from coro.config import McpHttpServer, McpServerConfig, McpStdioServer
from coro.secrets import mask_secret
from coro.tools.registry import Tool, ToolContext, ToolError, ToolInput, ToolRegistry

if TYPE_CHECKING:
    import mcp_types
    from mcp import Client

logger = logging.getLogger(__name__)

#: How long a server may take to start and list its tools.
CONNECT_TIMEOUT = 30.0
#: How long one tool call may take.
CALL_TIMEOUT = 600.0
#: How long a server may take to shut down before it is cancelled.
CLOSE_TIMEOUT = 10.0
#: Lines of a stdio server's stderr kept for error reports.
STDERR_TAIL_LINES = 20
#: Characters of that tail shown in a failure report.
STDERR_REPORT_CHARS = 1500
#: Characters of a tool's result shown in the job log.
LOG_PREVIEW = 500

ServerState = Literal["disabled", "connecting", "connected", "failed", "closed"]


class RawInput(ToolInput):
    """Input of a tool described by a raw JSON schema: any JSON object, passed on as given.

    The schema the agent sees is the server's (`Tool.schema`); the server validates.
    """

    model_config = ConfigDict(extra="allow")

    def arguments(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def coro_tool_name(server_id: str, tool_name: str) -> str:
    """`mcp__<serverId>__<toolName>`, with characters LLM APIs refuse replaced by `_`."""
    return f"mcp__{server_id}__{re.sub(r'[^A-Za-z0-9_-]', '_', tool_name)}"


def _matches(patterns: Iterable[str], tool_name: str, full_name: str) -> bool:
    return any(
        fnmatch.fnmatchcase(tool_name, p) or fnmatch.fnmatchcase(full_name, p) for p in patterns
    )


def tool_selected(spec: McpServerConfig, tool_name: str, full_name: str) -> bool:
    """Whether `allowedTools` / `disallowedTools` let this tool join the registry."""
    if spec.allowed_tools is not None and not _matches(spec.allowed_tools, tool_name, full_name):
        return False
    return not (spec.disallowed_tools and _matches(spec.disallowed_tools, tool_name, full_name))


def secret_values(spec: McpServerConfig) -> list[str]:
    """Every value of this server's config that must never appear in a log or report."""
    values: list[str] = []
    if isinstance(spec, McpStdioServer):
        values.extend(spec.env.values())
    else:
        values.extend(spec.headers.values())
        parts = urlsplit(spec.url)
        if parts.password:
            values.append(parts.password)
        values.extend(v for _, v in parse_qsl(parts.query))
    # Longest first, so a secret containing another is masked whole.
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        text = text.replace(value, mask_secret(value))
    return text


def describe(exc: BaseException) -> str:
    """A one-line account of a failure, looking inside exception groups."""
    from mcp.shared.exceptions import MCPError

    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {exc.message}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def result_text(result: mcp_types.CallToolResult) -> str:
    """What the agent is told: the text of every content block, in order."""
    import mcp_types as types

    parts: list[str] = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, types.ImageContent | types.AudioContent):
            kind = "image" if isinstance(block, types.ImageContent) else "audio"
            parts.append(f"[{kind} {block.mime_type}, {len(block.data)} base64 characters]")
        elif isinstance(block, types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, types.TextResourceContents):
                parts.append(resource.text)
            else:
                parts.append(f"[resource {resource.uri} ({resource.mime_type or 'binary'})]")
        elif isinstance(block, types.ResourceLink):
            parts.append(f"[resource link {block.uri}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, indent=2, ensure_ascii=False))
    return "\n".join(parts)


class _StderrTail:
    """A pipe for a child's stderr; a thread drains it, keeping the last lines."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.writer: IO[str] = os.fdopen(write_fd, "w")
        self._reader = os.fdopen(read_fd, "r", encoding="utf-8", errors="replace")
        self.lines: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._thread = threading.Thread(target=self._drain, daemon=True, name="mcp-stderr")
        self._thread.start()

    def _drain(self) -> None:
        with contextlib.suppress(OSError, ValueError), self._reader:
            for line in self._reader:
                self.lines.append(line.rstrip())

    def release_writer(self) -> None:
        """Close our copy of the write end (the child keeps its own): EOF when it exits."""
        with contextlib.suppress(OSError):
            self.writer.close()

    def finish(self, timeout: float) -> None:
        """Wait (blocking) until the child's end is closed too and everything is read."""
        self.release_writer()
        self._thread.join(timeout)

    def text(self) -> str:
        return "\n".join(line for line in self.lines if line)


@dataclass
class McpConnection:
    """One external server: its session runs in a task of its own until closed."""

    server_id: str
    spec: McpServerConfig
    state: ServerState = "connecting"
    error: str | None = None
    tools: list[mcp_types.Tool] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    _client: Client | None = None
    _task: asyncio.Task[None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    _secrets: list[str] = field(default_factory=list)
    _tail: _StderrTail | None = None

    def __post_init__(self) -> None:
        self._secrets = secret_values(self.spec)

    async def open(self, wait: float = CONNECT_TIMEOUT) -> None:
        """Connect and list the tools; on failure `state` is "failed" and `error` says why."""
        self._task = asyncio.create_task(self._run(), name=f"coro-mcp-client-{self.server_id}")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({self._task, ready}, timeout=wait, return_when="FIRST_COMPLETED")
        ready.cancel()
        if self.state == "connecting":
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            reason = f"did not start and list its tools within {wait:g}s"
            tail = self._tail
            if tail is not None:
                await asyncio.to_thread(tail.finish, 2.0)
                if tail.text():
                    reason = f"{reason}; stderr: {tail.text()[-STDERR_REPORT_CHARS:]}"
            self._failed(reason)

    async def _run(self) -> None:
        tail = _StderrTail() if isinstance(self.spec, McpStdioServer) else None
        self._tail = tail
        try:
            async with self._connect(tail) as client:
                if tail is not None:
                    tail.release_writer()
                tools = await _list_tools(client)
                self.tools, self._client, self.state = tools, client, "connected"
                self._ready.set()
                await self._closing.wait()
        except Exception as exc:
            if self.state == "connected" and self._closing.is_set():
                logger.debug("MCP server %s: error while closing: %s", self.server_id, exc)
                return
            reason = describe(exc)
            if tail is not None:
                # The transport has stopped the process: its stderr ends promptly.
                await asyncio.to_thread(tail.finish, 2.0)
                if tail.text():
                    reason = f"{reason}; stderr: {tail.text()[-STDERR_REPORT_CHARS:]}"
            self._failed(reason)
        finally:
            self._client = None
            if tail is not None:
                tail.release_writer()
            if self.state == "connected":
                self.state = "closed"
            self._ready.set()

    @contextlib.asynccontextmanager
    async def _connect(self, tail: _StderrTail | None) -> AsyncIterator[Client]:
        from mcp import Client, StdioServerParameters
        from mcp.client.stdio import stdio_client
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        spec = self.spec
        if isinstance(spec, McpStdioServer):
            assert tail is not None
            params = StdioServerParameters(command=spec.command, args=spec.args, env=spec.env)
            transport: Any = stdio_client(params, errlog=cast(TextIO, tail.writer))
        else:
            assert isinstance(spec, McpHttpServer)
            http = create_mcp_http_client(headers=dict(spec.headers))
            transport = streamable_http_client(spec.url, http_client=http)
        # The initialize handshake: what every server speaks, whatever its SDK's age.
        client = Client(transport, mode="legacy", read_timeout_seconds=CALL_TIMEOUT, cache=None)
        if isinstance(spec, McpHttpServer):
            async with http, client:
                yield client
        else:
            async with client:
                yield client

    def _failed(self, reason: str) -> None:
        self.state = "failed"
        self.error = scrub(reason, self._secrets)
        logger.warning("MCP server %s failed: %s", self.server_id, self.error)

    async def call(self, tool_name: str, arguments: dict[str, Any]) -> str:
        client = self._client
        if client is None:
            detail = f": {self.error}" if self.error else ""
            raise ToolError(f"MCP server {self.server_id!r} is not connected{detail}")
        try:
            result = await client.call_tool(tool_name, arguments, read_timeout_seconds=CALL_TIMEOUT)
        except Exception as exc:
            message = f"MCP server {self.server_id!r}, tool {tool_name!r}: {describe(exc)}"
            raise ToolError(scrub(message, self._secrets)) from None
        # Secrets of the server's config stay out of transcripts and logs, even echoed.
        text = scrub(result_text(result), self._secrets)
        if result.is_error:
            raise ToolError(text or f"MCP tool {tool_name!r} of {self.server_id!r} failed")
        return text

    async def close(self) -> None:
        self._closing.set()
        task = self._task
        if task is None or task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=CLOSE_TIMEOUT)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def status(self) -> dict[str, Any]:
        spec = self.spec
        report: dict[str, Any] = {
            "id": self.server_id,
            "type": spec.type,
            "enabled": spec.enabled,
            "status": self.state,
            "tools": list(self.registered),
        }
        if isinstance(spec, McpStdioServer):
            report["command"] = spec.command
        else:
            report["url"] = scrub(spec.url, self._secrets)
        if self.error:
            report["error"] = self.error
        return report


async def _list_tools(client: Client) -> list[mcp_types.Tool]:
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    for _ in range(100):  # a server that pages forever must not hang the runner
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


class McpClients:
    """The configured external servers and the registry entries of their tools."""

    def __init__(self, registry: ToolRegistry) -> None:
        self.registry = registry
        self.connections: dict[str, McpConnection] = {}

    async def connect(self, servers: Mapping[str, McpServerConfig]) -> None:
        """Connect every enabled server (concurrently) and register the tools they offer."""
        pending: list[McpConnection] = []
        for server_id, spec in servers.items():
            connection = McpConnection(server_id, spec)
            self.connections[server_id] = connection
            if spec.enabled:
                pending.append(connection)
            else:
                connection.state = "disabled"
        await asyncio.gather(*(c.open() for c in pending))
        for connection in pending:
            if connection.state == "connected":
                self._register(connection)

    def _register(self, connection: McpConnection) -> None:
        for listed in connection.tools:
            name = coro_tool_name(connection.server_id, listed.name)
            if not tool_selected(connection.spec, listed.name, name):
                continue
            if self.registry.get(name) is not None:
                logger.warning("MCP tool %s skipped: the name is already taken", name)
                continue
            self.registry.add(_forwarding_tool(connection, listed, name))
            connection.registered.append(name)
        logger.info(
            "MCP server %s connected: %d tools", connection.server_id, len(connection.registered)
        )

    async def close(self) -> None:
        """Unregister every tool and disconnect every server."""
        connections = list(self.connections.values())
        for connection in connections:
            for name in connection.registered:
                self.registry.remove(name)
        await asyncio.gather(*(c.close() for c in connections))
        self.connections.clear()

    def status(self) -> list[dict[str, Any]]:
        return [c.status() for c in self.connections.values()]


def _forwarding_tool(connection: McpConnection, listed: mcp_types.Tool, name: str) -> Tool[Any]:
    original = listed.name

    async def forward(ctx: ToolContext, args: RawInput) -> str:
        text = await connection.call(original, args.arguments())
        preview = text if len(text) <= LOG_PREVIEW else f"{text[:LOG_PREVIEW]}… ({len(text)} chars)"
        await ctx.log(f"[mcp] {connection.server_id}/{original} → {preview}")
        return text

    description = (
        listed.description or listed.title or f"{original} (MCP server {connection.server_id})"
    )
    return Tool(
        name=name,
        description=description,
        input_model=RawInput,
        handler=forward,
        schema=dict(listed.input_schema),
    )
