"""The runner's HTTP API (FastAPI): routes, error mapping and protections."""

from __future__ import annotations

import logging
from importlib.resources import files

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from coro.api.errors import error_response as _error
from coro.api.errors import errors, http_error, invalid_request
from coro.api.openapi import SSE_OK, truthful_openapi
from coro.api.query_params import OneValueEach
from coro.api.routes import campaigns as campaign_routes
from coro.api.routes import cloud as cloud_routes
from coro.api.routes import config as config_routes
from coro.api.routes import insights as insight_routes
from coro.api.routes import intake, intelligence, jobs, mcp, plugins, scm_local, stats, stream
from coro.api.routes import notifications as notification_routes
from coro.api.routes import proposals as proposal_routes
from coro.api.security import SecurityMiddleware
from coro.engine.service import (
    Conflict,
    InvalidRequest,
    PayloadTooLarge,
    PluginRequired,
    UnsupportedType,
    UpstreamFailed,
)
from coro.executors import PluginNotFound
from coro.runner import Runner
from coro.state.backend import JobNotFound

logger = logging.getLogger(__name__)


def create_app(runner: Runner, *, host: str = "127.0.0.1", port: int = 3000) -> FastAPI:
    app = FastAPI(
        title="Coro runner",
        version=runner.version,
        description="Runs AI software-engineering jobs defined by markdown workflows.",
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(OneValueEach())],
    )
    app.state.runner = runner
    app.state.bind_host = host
    app.state.job_answers = jobs.JobAnswers()

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_request(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return http_error(request, exc)

    @app.exception_handler(JobNotFound)
    @app.exception_handler(PluginNotFound)
    async def on_not_found(request: Request, exc: LookupError) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(InvalidRequest)
    async def on_bad_request(request: Request, exc: InvalidRequest) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(Conflict)
    async def on_conflict(request: Request, exc: Conflict) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(PluginRequired)
    async def on_plugin_required(request: Request, exc: PluginRequired) -> JSONResponse:
        return _error(409, "plugin_required", missingKind=exc.missing_kind, message=str(exc))

    @app.exception_handler(PayloadTooLarge)
    async def on_too_large(request: Request, exc: PayloadTooLarge) -> JSONResponse:
        return _error(413, str(exc))

    @app.exception_handler(UnsupportedType)
    async def on_unsupported(request: Request, exc: UnsupportedType) -> JSONResponse:
        return _error(415, str(exc))

    @app.exception_handler(UpstreamFailed)
    async def on_upstream(request: Request, exc: UpstreamFailed) -> JSONResponse:
        return _error(502, str(exc))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "Internal error; see the runner's log")

    @app.get("/health", tags=["system"])
    async def health() -> dict[str, str]:
        return {"status": "ok", "mode": runner.mode, "version": runner.version}

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    app.include_router(insight_routes.router)
    app.include_router(jobs.router)
    app.include_router(campaign_routes.router)
    app.include_router(stream.router, responses={**SSE_OK, **errors(404)})
    app.include_router(stats.router)
    app.include_router(intelligence.router)
    app.include_router(proposal_routes.router)
    app.include_router(intake.router)
    app.include_router(plugins.router)
    app.include_router(config_routes.router)
    app.include_router(mcp.router)
    app.include_router(scm_local.router)
    app.include_router(cloud_routes.router)
    app.include_router(notification_routes.router)
    # the cloud's commands are answered by this API's own validation and routes
    runner.cloud_commands.use_api(
        cloud_routes.in_process_api(app, runner), cloud_routes.job_request
    )
    static_dir = files("coro.dashboard") / "static"
    app.mount("/dashboard", StaticFiles(directory=str(static_dir), html=True), name="dashboard")
    app.add_middleware(
        SecurityMiddleware,
        bind_host=host,
        port=port,
        api_token=lambda: runner.config.api_token,
    )
    app.openapi = lambda: truthful_openapi(app)  # type: ignore[method-assign]
    return app
