"""Coro's MCP server over streamable HTTP, inside the runner: `/mcp/<jobId>`.

One SDK session manager serves every job; the job a call acts on is the one named in
the URL of the HTTP request that carries it (`coro.api.routes.mcp` refuses unknown
jobs with 404 before the request gets here). The endpoint lives in the runner's own
app, so it shares the runner's store and log bus (calls show up live on the job's SSE
stream) and is behind the same Host/Origin/token protections as every other route.

The session manager (and the SDK) start with the first MCP request and stop with the
runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from coro.engine.env import EngineEnv
from coro.mcp.server import JobContexts, build_server
from coro.tools.registry import ToolContext

if TYPE_CHECKING:
    from mcp.server.context import ServerRequestContext
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from starlette.types import ASGIApp

logger = logging.getLogger(__name__)

#: The path parameter of the route that names the job.
JOB_PATH_PARAM = "job_id"
#: A session nobody has used for this long is closed (the client then starts a new one).
SESSION_IDLE_TIMEOUT = 30 * 60
#: How long stopping waits for sessions to wind down before cancelling them.
STOP_TIMEOUT = 10.0


class McpEndpointClosed(RuntimeError):
    """The runner is stopping: no new MCP requests."""


class McpHttpEndpoint:
    def __init__(self, env: EngineEnv) -> None:
        self.env = env
        self.contexts = JobContexts(env.store, env.work_root, env.layers, env.plugins, env.sandbox)
        self._manager: StreamableHTTPSessionManager | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def started(self) -> bool:
        return self._manager is not None

    @property
    def closed(self) -> bool:
        return self._closed

    async def app(self) -> ASGIApp:
        """The ASGI app serving MCP requests (starting the session manager if needed)."""
        async with self._lock:
            if self._closed:
                raise McpEndpointClosed("the runner is stopping")
            if self._manager is None:
                self._manager = await self._start()
            return self._manager.handle_request

    async def _start(self) -> StreamableHTTPSessionManager:
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

        server = build_server(self.env.tools, self._resolve)
        manager = StreamableHTTPSessionManager(
            app=server,
            session_idle_timeout=SESSION_IDLE_TIMEOUT,
            # Host/Origin checks, the token and body limits are the runner's middleware's.
            security_settings=None,
        )
        running = asyncio.Event()

        async def run() -> None:
            async with manager.run():
                running.set()
                await self._stop.wait()

        self._task = asyncio.create_task(run(), name="coro-mcp-http")
        waiter = asyncio.create_task(running.wait())
        await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not running.is_set():
            waiter.cancel()
            await self._task  # surfaces why it could not start
            raise RuntimeError("MCP session manager stopped during startup")
        return manager

    async def _resolve(self, ctx: ServerRequestContext[Any, Any]) -> ToolContext:
        request = ctx.request
        path_params = getattr(request, "path_params", None) or {}
        job_id = path_params.get(JOB_PATH_PARAM)
        if not isinstance(job_id, str):  # pragma: no cover - the route always names one
            raise RuntimeError("MCP request without a job id in its URL")
        return await self.contexts(job_id)

    async def close(self) -> None:
        """End every MCP session and refuse new ones (idempotent)."""
        async with self._lock:
            self._closed = True
            task, self._task = self._task, None
            self._manager = None
        if task is None:
            return
        self._stop.set()
        done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif not task.cancelled() and task.exception() is not None:
            logger.error("MCP session manager failed", exc_info=task.exception())
