"""Serving a runner: its HTTP API on a socket, in the runner's event loop."""

from __future__ import annotations

import contextlib
import gc
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

from coro.api.app import create_app
from coro.api.listen import http_server, listening_socket, start_serving
from coro.api.quiet_server import QuietServer
from coro.api.slow_clients import ClientTimeouts
from coro.config import LOOPBACK_HOSTS, CoroConfig
from coro.runner import Runner


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
    server: QuietServer

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@contextlib.asynccontextmanager
async def serve(
    runner: Runner, host: str, port: int, *, timeouts: ClientTimeouts | None = None
) -> AsyncIterator[Served]:
    """Start the runner and its HTTP API in this event loop; stop both on exit.
    `timeouts`: how long clients may be slow (default `ClientTimeouts()`)."""
    check_bind(host, runner.config)
    # Bind before starting anything, so a taken port is a plain OSError for the caller.
    sock = listening_socket(host, port)
    port = sock.getsockname()[1]
    server = http_server(create_app(runner, host=host, port=port), host, port, timeouts=timeouts)
    await runner.start()
    # Start-up objects live as long as the runner: keep them out of later full
    # collections, whose pauses otherwise dominate SSE tail latency.
    gc.collect()
    gc.freeze()
    try:
        task = await start_serving(server, sock)
    except BaseException:
        await runner.stop()
        raise
    try:
        yield Served(runner=runner, host=host, port=port, server=server)
    finally:
        server.should_exit = True
        runner.store.bus.close_all()
        await runner.mcp.close_http()  # open MCP streams would hold up the drain
        await runner.dispatcher.close()
        await task
        await runner.stop()
