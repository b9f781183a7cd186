"""`GET /cloud`: the runner's link to its team cloud (hybrid mode), for the dashboard; and
what the API lends the cloud's command handling (`coro.engine.cloud_commands`): its
`POST /jobs` validation and an in-process call of itself."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from pydantic import ValidationError

from coro.api.deps import RunnerDep
from coro.api.schemas import CreateJobBody
from coro.engine.cloud_commands import ApiAnswer, ApiCall
from coro.engine.service import InvalidRequest, NewJob
from coro.runner import Runner

router = APIRouter(tags=["cloud"])


@router.get("/cloud")
async def cloud_status(runner: RunnerDep) -> dict[str, Any]:
    """`{mode, url, state, teamId, teamName, runnerId, lastError}`; `state` is `off` in
    local mode, else `connecting`, `connected`, `disconnected`, `revoked` or
    `incompatible` (the last two: the runner stopped trying; `lastError` says why)."""
    return runner.cloud_status()


def job_request(body: dict[str, Any]) -> NewJob:
    """A `POST /jobs` body as the route validates it, as the job to create."""
    try:
        parsed = CreateJobBody.model_validate(body)
    except ValidationError as exc:
        issues = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidRequest(f"Invalid request: {issues}") from None
    return NewJob(**dict(parsed))


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
