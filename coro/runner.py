"""The runner: composes state, intelligence, executors, tools and the dispatcher.

`Runner` is the composition root; `serve()` puts its HTTP API on a socket. Tests, the
demo and `coro start` all go through these two.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvicorn

from coro import __version__
from coro.config import CoroConfig, CoroHome
from coro.engine.dispatcher import Dispatcher
from coro.engine.env import EngineEnv
from coro.engine.events import EventTransport
from coro.engine.logbus import LogBus
from coro.engine.polling import PollingTransport
from coro.engine.service import JobService
from coro.engine.store import JobStore
from coro.executors import ExecutorRegistry, build_executors
from coro.intake import IntakeService
from coro.intelligence.layers import IntelligenceLayers
from coro.mcp.service import McpService
from coro.plugins.context import PluginContext
from coro.plugins.registry import LOCAL_SCM, PluginSet
from coro.state.backend import StateBackend
from coro.state.sqlite import SqliteStateBackend
from coro.tools import ToolRegistry, builtin_tools

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class Runner:
    def __init__(
        self,
        home: CoroHome,
        config: CoroConfig | None = None,
        *,
        backend: StateBackend | None = None,
        executors: ExecutorRegistry | None = None,
        tools: ToolRegistry | None = None,
        transport: EventTransport | None = None,
    ) -> None:
        self.home = home
        self.config = config if config is not None else home.load_config()
        self.backend = backend or SqliteStateBackend(home.state_db)
        self.store = JobStore(self.backend, LogBus())
        self.plugins = PluginSet(self.config, PluginContext(home))
        self.env = EngineEnv(
            store=self.store,
            layers=IntelligenceLayers(home.intelligence_dir(self.config)),
            executors=executors or build_executors(self.config),
            tools=tools or builtin_tools(),
            config=self.config,
            work_root=home.work_dir(self.config),
            plugins=self.plugins,
        )
        self.dispatcher = Dispatcher(self.env)
        self.jobs = JobService(self.env, self.dispatcher)
        self.intake = IntakeService(self.env, self.config.intake)
        self.mcp = McpService(self.env)
        self.transport = transport or self._poller()
        self.version = __version__

    def _poller(self) -> PollingTransport:
        polling = self.config.polling
        poller = PollingTransport(
            self.store,
            self.plugins,
            interval_seconds=polling.interval_seconds,
            failure_threshold=polling.failure_threshold,
            change_delay_seconds=polling.local_change_delay_seconds,
        )
        local = self.plugins.get("scm", LOCAL_SCM)
        if local is not None:
            local.add_listener(poller.poll_soon)
        return poller

    @property
    def mode(self) -> str:
        return "local"

    async def start(self) -> None:
        self.home.ensure()
        self.env.work_root.mkdir(parents=True, exist_ok=True)
        await self.backend.open()
        await self.transport.connect(self.dispatcher.deliver)
        await self.mcp.start()  # external MCP tools, before any job runs
        await self.dispatcher.recover()

    async def stop(self) -> None:
        await self.transport.disconnect()
        await self.dispatcher.close()
        await self.mcp.stop()
        await self.env.executors.aclose()
        await self.plugins.aclose()
        await self.backend.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Runner]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()


def check_bind(host: str, config: CoroConfig) -> None:
    """Off-loopback binds expose the API to the network: refuse them without a token."""
    if host not in LOOPBACK_HOSTS and not config.api_token:
        raise SystemExit(
            f"Refusing to listen on {host}: binding beyond loopback requires apiToken in "
            "config.json (every API call must then carry 'Authorization: Bearer <token>')."
        )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Served:
    runner: Runner
    host: str
    port: int
    server: uvicorn.Server

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@contextlib.asynccontextmanager
async def serve(runner: Runner, host: str, port: int) -> AsyncIterator[Served]:
    """Start the runner and its HTTP API in this event loop; stop both on exit."""
    from coro.api.app import create_app  # the engine never imports the web layer

    check_bind(host, runner.config)
    # Bind before starting anything, so a taken port is a plain OSError for the caller.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted connections when
    # the listening socket says so, and without it Nagle adds ~40 ms to each response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    port = sock.getsockname()[1]
    app = create_app(runner, host=host, port=port)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    await runner.start()
    # Start-up objects live as long as the runner: keep them out of later full
    # collections, whose pauses otherwise dominate SSE tail latency.
    gc.collect()
    gc.freeze()
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                await task  # surfaces bind errors
                raise RuntimeError(f"HTTP server on {host}:{port} stopped during startup")
            await asyncio.sleep(0.01)
        yield Served(runner=runner, host=host, port=port, server=server)
    finally:
        server.should_exit = True
        runner.store.bus.close_all()
        await runner.mcp.close_http()  # open MCP streams would hold up the drain
        await runner.dispatcher.close()
        await task
        await runner.stop()
