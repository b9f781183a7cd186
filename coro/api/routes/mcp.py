"""MCP over HTTP: Coro's tools for one job, external servers' state, Claude Code's servers.

- `GET/POST/DELETE /mcp/{jobId}`: the MCP streamable HTTP endpoint — Coro's tool
  registry bound to the job (the exact path, no trailing slash); unknown job → 404 JSON.
- `GET /mcp-servers`: the `mcpServers` of config.json — state, registered tools, and
  why a server failed.
- `GET /config/claude-code-mcps`: servers configured for Claude Code (`~/.claude.json`,
  `<project>/.mcp.json`) with secrets masked; `?projectDir=` (absolute, existing) picks
  the project, by default the runner's working directory.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from coro.api.deps import RunnerDep
from coro.engine.service import InvalidRequest
from coro.mcp.claude_code import discover
from coro.mcp.http import McpEndpointClosed
from coro.state.backend import JobNotFound

router = APIRouter(tags=["mcp"])


class _Delegate(Response):
    """Hands the request to an ASGI app (the SDK's transport answers it itself)."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__()
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


@router.api_route("/mcp/{job_id}", methods=["GET", "POST", "DELETE"], include_in_schema=False)
async def mcp_endpoint(runner: RunnerDep, job_id: str) -> Response:
    if await runner.store.find(job_id) is None:
        raise JobNotFound(job_id)
    try:
        app = await runner.mcp.http.app()
    except McpEndpointClosed:
        return Response(
            '{"error": "The runner is stopping"}', status_code=503, media_type="application/json"
        )
    return _Delegate(app)


@router.get("/mcp-servers")
async def mcp_servers(runner: RunnerDep) -> dict[str, Any]:
    """External MCP servers from `mcpServers` in config.json and how they are doing."""
    return {"servers": runner.mcp.servers()}


@router.get("/config/claude-code-mcps")
async def claude_code_mcps(
    # (the pattern only documents the rule: the route's own check says it better)
    project_dir: Annotated[
        str | None, Query(alias="projectDir", json_schema_extra={"pattern": "^/"})
    ] = None,
) -> dict[str, Any]:
    """MCP servers configured for Claude Code, with env/header values masked."""
    if project_dir is None:
        project = Path.cwd()
    else:
        project = Path(project_dir)
        if not project.is_absolute():
            raise InvalidRequest(f"projectDir must be an absolute path: {project_dir!r}")
        if not await asyncio.to_thread(project.is_dir):
            raise InvalidRequest(f"projectDir is not an existing directory: {project_dir!r}")
    found = await asyncio.to_thread(discover, Path.home(), project)
    return found.to_json()
