"""Serving the cloud: migrate, then FastAPI on uvicorn (`coro cloud`), or in-process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import FrameType

import uvicorn
from fastapi import FastAPI

from coro.api.listen import http_server, listening_socket, start_serving
from coro.cloud import migrate
from coro.cloud.app import create_app
from coro.cloud.db import Database
from coro.cloud.deps import Services
from coro.cloud.housekeeping import Housekeeping
from coro.cloud.runner_tokens import RevocationHub
from coro.cloud.settings import CloudSettings

logger = logging.getLogger(__name__)


class StartupFailed(Exception):
    """The cloud cannot start (database unreachable, port taken); safe to print."""


@dataclass
class ServedCloud:
    app: FastAPI
    db: Database
    host: str
    port: int
    server: uvicorn.Server
    task: asyncio.Task[None]  # uvicorn's serve(): done once the server has stopped

    @property
    def services(self) -> Services:
        found: Services = self.app.state.services
        return found

    @property
    def url(self) -> str:
        # a wildcard bind is reached over loopback from this machine
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"


def _bind(host: str, port: int) -> socket.socket:
    try:
        return listening_socket(host, port)
    except OSError as exc:
        raise StartupFailed(f"cannot listen on {host}:{port}: {exc.strerror}") from None


async def apply_migrations(db: Database) -> None:
    try:
        await migrate.upgrade(db)
    except (OSError, TimeoutError) as exc:
        raise StartupFailed(f"cannot reach the database: {type(exc).__name__}") from None
    except Exception as exc:
        # asyncpg and SQLAlchemy errors: name the kind, never the URL (it may hold a password)
        raise StartupFailed(f"cannot migrate the database: {type(exc).__name__}") from None


@contextlib.asynccontextmanager
async def serve(
    settings: CloudSettings,
    *,
    db: Database | None = None,
    hub: RevocationHub | None = None,
    migrations: bool = True,
) -> AsyncIterator[ServedCloud]:
    """Migrate (unless told not to), then serve until the block exits."""
    own_db = db is None
    db = db or Database(settings.database_url)
    try:
        if migrations:
            await apply_migrations(db)
        sock = _bind(settings.host, settings.port)
        port = sock.getsockname()[1]
        app = create_app(settings, db, hub)
        services: Services = app.state.services
        # (no access log: `coro.cloud.access` logs requests without their query strings)
        server = http_server(app, settings.host, port)
        await services.broker.start()
        await services.notifications.start()
        housekeeping = Housekeeping(db, settings.access_ttl_seconds)
        housekeeping.start()
        try:
            try:
                task = await start_serving(server, sock)
            except RuntimeError as exc:
                raise StartupFailed(str(exc)) from None
            try:
                yield ServedCloud(
                    app=app, db=db, host=settings.host, port=port, server=server, task=task
                )
            finally:
                # runners get 1001 (reconnect elsewhere), not uvicorn's own close code;
                # open team streams end now rather than hold the graceful shutdown
                await services.gateway.close()
                await services.team_jobs.close()
                server.should_exit = True
                await task
        finally:
            await housekeeping.stop()
            await services.notifications.stop()  # no retry is waited for
            services.commands.close()
            await services.broker.close()
    finally:
        if own_db:
            await db.close()


def run(settings: CloudSettings) -> int:
    """`coro cloud`: serve until SIGINT/SIGTERM; the exit code."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(_serve_until_stopped(settings))
    except StartupFailed as exc:
        print(f"coro cloud: {exc}", file=sys.stderr, flush=True)
        return 1
    print("Coro cloud stopped.", flush=True)
    return 0


async def _serve_until_stopped(settings: CloudSettings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(stop.set)

    # uvicorn takes SIGINT/SIGTERM over while it serves (its serve() task then ends) and
    # re-raises them after its graceful shutdown; these catch what arrives outside that.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        async with serve(settings) as served:
            print(f"Coro cloud listening on {served.url}", flush=True)
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({stopped, served.task}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def migrate_only(settings: CloudSettings) -> str | None:
    """`coro cloud migrate`: the revision the database is at afterwards."""
    db = Database(settings.database_url)
    try:
        await apply_migrations(db)
        return await migrate.current_revision(db)
    finally:
        await db.close()
