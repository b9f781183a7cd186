"""`GET /cloud`: the runner's link to its team cloud (hybrid mode), for the dashboard; and
what the API lends the cloud's command handling (`coro.engine.cloud_commands`): its
`POST /jobs` validation and an in-process call of itself."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from coro.api.deps import RunnerDep
from coro.api.errors import error_response, errors
from coro.api.schemas import CreateJobBody
from coro.domain.cloud_protocol import RunnerList
from coro.engine.cloud_commands import ApiAnswer, ApiCall
from coro.engine.service import InvalidRequest, NewJob
from coro.runner import Runner
from coro.state.cloud.link import LinkDown, RpcError, new_message_id

router = APIRouter(tags=["cloud"])

RUNNERS_WAIT_SECONDS = 10.0


@router.get("/cloud")
async def cloud_status(runner: RunnerDep) -> dict[str, Any]:
    """`{mode, url, state, teamId, teamName, runnerId, lastError}`; `state` is `off` in
    local mode, else `connecting`, `connected`, `disconnected`, `revoked` or
    `incompatible` (the last two: the runner stopped trying; `lastError` says why)."""
    return runner.cloud_status()


@router.get("/cloud/runners", response_model=None, responses=errors(409, 502, 503))
async def cloud_runners(runner: RunnerDep) -> dict[str, Any] | JSONResponse:
    """`{runners: [...]}`: the runners of this runner's team, as the cloud lists them
    (`GET /teams/:teamId/runners`); 409 in local mode, 503 while the cloud is away."""
    if runner.link is None:
        return error_response(409, "This runner is not paired with a team cloud (coro login)")
    try:
        async with asyncio.timeout(RUNNERS_WAIT_SECONDS):  # a page waits on it
            data = await runner.link.call(
                RunnerList(type="runner:list", message_id=new_message_id())
            )
    except (LinkDown, TimeoutError):
        return error_response(503, f"The team cloud is not reachable ({runner.link.state})")
    except RpcError as exc:
        return error_response(502, f"The team cloud refused: {exc}")
    runners = data.get("runners") if isinstance(data, dict) else None
    return {"runners": runners if isinstance(runners, list) else []}


def job_request(body: dict[str, Any]) -> NewJob:
    """A `POST /jobs` body as the route validates it, as the job to create."""
    try:
        parsed = CreateJobBody.model_validate(body)
    except ValidationError as exc:
        issues = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidRequest(f"Invalid request: {issues}") from None
    return parsed.new_job()


def in_process_api(app: FastAPI, runner: Runner) -> ApiCall:
    """Calls of `app` without a socket, with the runner's API token when it has one."""
    transport = httpx.ASGITransport(app=app)

    async def call(method: str, path: str, body: Any) -> ApiAnswer:
        headers = {}
        token = runner.config.api_token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            response = await client.request(
                method, path, json=body if body is not None else None, headers=headers
            )
        return ApiAnswer(
            status=response.status_code,
            content_type=response.headers.get("content-type", ""),
            body=response.content,
        )

    return call
