"""Putting one of Coro's ASGI apps (the runner's API, the cloud) on a socket with uvicorn;
nothing here knows which app it serves."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn

from coro.api.quiet_server import QuietServer
from coro.api.slow_clients import ClientTimeouts, GuardedConfig


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host:port` (port 0: any free one); OSError if taken."""
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
    return sock


def http_server(
    app: Any, host: str, port: int, *, timeouts: ClientTimeouts | None = None
) -> QuietServer:
    """uvicorn for one of Coro's apps: no lifespan, no access log (it would print query
    strings, which may carry codes or tokens), a bounded graceful shutdown, time limits
    on clients that are slow to send a request or do not read the response
    (`coro.api.slow_clients`), and no tick while idle (`coro.api.quiet_server`)."""
    config = GuardedConfig(
        app,
        timeouts=timeouts or ClientTimeouts(),
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return QuietServer(config)


async def start_serving(server: uvicorn.Server, sock: socket.socket) -> asyncio.Task[None]:
    """Serve on `sock` in a task; returns once the server accepts connections."""
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # surfaces bind errors
            raise RuntimeError(
                f"the HTTP server on port {server.config.port} stopped during startup"
            )
        await asyncio.sleep(0.01)
    return task
