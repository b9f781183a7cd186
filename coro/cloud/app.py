"""The cloud's FastAPI app: services, routers, error mapping, request limits and logs.

`create_app(settings, db)` builds everything from its two arguments (tests and
`coro.cloud.server` pass their own database); later routers (team jobs, the runner
WebSocket, webhook ingress) plug in beside the ones here and reach the same `Services`
through `coro.cloud.deps`.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coro.api.errors import error_response, http_error, invalid_request
from coro.api.query_params import OneValueEach
from coro.cloud.auth import Auth
from coro.cloud.broker import Broker, LocalBroker, RedisBroker
from coro.cloud.commands import Commands
from coro.cloud.dashboard import mount_dashboard
from coro.cloud.db import Database
from coro.cloud.deps import Services
from coro.cloud.errors import CloudError, TooManyRequests, Unauthorized
from coro.cloud.gateway import Gateway
from coro.cloud.gateway import router as runner_socket
from coro.cloud.github import GitHubLogin
from coro.cloud.mirror import Mirror
from coro.cloud.notifications import TeamNotifications
from coro.cloud.passwords import Passwords
from coro.cloud.proposals import TeamProposals
from coro.cloud.routes import auth as auth_routes
from coro.cloud.routes import health, runners, teams, webhooks
from coro.cloud.routes import ingress as webhook_ingress
from coro.cloud.routes import jobs as team_job_routes
from coro.cloud.routes import notifications as notification_routes
from coro.cloud.routes import proposals as proposal_routes
from coro.cloud.routes import runner_tokens as runner_token_routes
from coro.cloud.routes import triggers as trigger_routes
from coro.cloud.runner_tokens import RevocationHub, RunnerTokens
from coro.cloud.settings import CloudSettings
from coro.cloud.team_jobs import TeamJobs
from coro.cloud.teams import Teams
from coro.cloud.throttle import Throttle
from coro.cloud.tokens import Jwt
from coro.cloud.webhook_secrets import WebhookSecrets
from coro.version import __version__

logger = logging.getLogger(__name__)
access_log = logging.getLogger("coro.cloud.access")


def build_services(
    settings: CloudSettings, db: Database, hub: RevocationHub | None = None
) -> Services:
    jwt = Jwt(settings.jwt_secret, settings.jwt_issuer, settings.access_ttl_seconds)
    auth = Auth(db, jwt, Passwords(), Throttle(db, settings.throttle), settings.refresh_ttl_seconds)
    hub = hub or RevocationHub()
    instance_id = uuid.uuid4().hex
    broker: Broker = (
        RedisBroker(settings.redis_url, settings.redis_channel_prefix)
        if settings.redis_url
        else LocalBroker()
    )
    mirror = Mirror(db)
    notifications = TeamNotifications(db, settings)
    mirror.observers.append(notifications.observe)
    timeout = settings.heartbeat_timeout_seconds
    commands = Commands(db, broker, mirror, instance_id, timeout)
    proposals = TeamProposals(db, commands)
    return Services(
        settings=settings,
        db=db,
        auth=auth,
        teams=Teams(db),
        runner_tokens=RunnerTokens(db, hub),
        webhook_secrets=WebhookSecrets(db),
        github=GitHubLogin(settings.github, jwt, auth, db) if settings.github else None,
        instance_id=instance_id,
        broker=broker,
        mirror=mirror,
        commands=commands,
        gateway=Gateway(
            db,
            mirror,
            commands,
            broker,
            hub,
            instance_id,
            proposals,
            heartbeat_timeout_seconds=timeout,
        ),
        team_jobs=TeamJobs(db, mirror, commands, broker),
        proposals=proposals,
        notifications=notifications,
    )


def create_app(settings: CloudSettings, db: Database, hub: RevocationHub | None = None) -> FastAPI:
    app = FastAPI(
        title="Coro cloud",
        version=__version__,
        description="The team control plane: accounts, teams, runner tokens, webhook secrets.",
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(OneValueEach())],
    )
    app.state.services = build_services(settings, db, hub)

    @app.exception_handler(CloudError)
    async def on_cloud_error(request: Request, exc: CloudError) -> JSONResponse:
        response = error_response(exc.status, exc.message)
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, Unauthorized):
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_request(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return http_error(request, exc)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(OSError)
    async def on_database_down(request: Request, exc: Exception) -> JSONResponse:
        logger.warning(
            "database unavailable on %s %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
        )
        return error_response(503, "Database unavailable; try again shortly")

    @app.exception_handler(DataError)
    async def on_bad_data(request: Request, exc: DataError) -> JSONResponse:
        # a value the database cannot store that validation let through: the client's
        return error_response(400, "Invalid characters or values in the request")

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "Internal error; see the cloud's log")

    app.include_router(health.router)
    app.include_router(auth_routes.router)
    app.include_router(teams.router)
    app.include_router(runner_token_routes.router)
    app.include_router(webhooks.router)
    app.include_router(webhook_ingress.router)
    app.include_router(trigger_routes.router)
    app.include_router(team_job_routes.router)
    app.include_router(proposal_routes.router)
    app.include_router(notification_routes.router)
    app.include_router(runners.router)
    app.include_router(runner_socket)
    mount_dashboard(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLog)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, made truthful: invalid requests are 400 `{"error", issues}`
    (declared per route), not FastAPI's default 422 shape."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema


class BodyLimit:
    """Request bodies over `max_bytes` get 413 before the app reads them (never a hang,
    never an unbounded buffer)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _send_error(send, 400, "Invalid Content-Length")
                return
            if int(declared) > self.max_bytes:
                await _send_error(send, 413, f"Request body exceeds {self.max_bytes} bytes")
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_error(send, 413, f"Request body exceeds {self.max_bytes} bytes")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class AccessLog:
    """One line per request: method, path (never the query: OAuth codes travel there),
    status, duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            access_log.info(
                "%s %s %d %.1fms",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
            )


async def _send_error(send: Send, status: int, message: str) -> None:
    payload = JSONResponse({"error": message}, status_code=status)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": payload.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": payload.body})
