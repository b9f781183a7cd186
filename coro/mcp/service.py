"""What the runner holds of MCP: external servers' tools, and its own `/mcp/<jobId>`."""

from __future__ import annotations

from typing import Any

from coro.engine.env import EngineEnv
from coro.mcp.client import McpClients
from coro.mcp.http import McpHttpEndpoint


class McpService:
    def __init__(self, env: EngineEnv) -> None:
        self.env = env
        self.clients = McpClients(env.tools)
        self.http = McpHttpEndpoint(env)

    async def start(self) -> None:
        """Connect the configured servers; failures are reported, never raised."""
        if self.http.closed:  # a runner started again after a stop
            self.http = McpHttpEndpoint(self.env)
        if self.env.config.mcp_servers:
            await self.clients.connect(self.env.config.mcp_servers)

    async def close_http(self) -> None:
        """End the MCP sessions of HTTP clients (before the HTTP server drains)."""
        await self.http.close()

    async def stop(self) -> None:
        await self.http.close()
        await self.clients.close()

    def servers(self) -> list[dict[str, Any]]:
        """The configured external servers: state, tools, and why one failed."""
        return self.clients.status()
