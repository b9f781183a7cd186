"""`POST /intake/stream`: plan mode over Server-Sent Events (SPEC §2.3); `GET /intake`:
whether plan mode can answer, so the dashboard says so before the developer types."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from coro.api.deps import RunnerDep
from coro.api.errors import errors
from coro.api.openapi import SSE_OK
from coro.api.schemas import IntakeBody
from coro.engine.intake import IntakeTurn, NoLLM
from coro.engine.service import InvalidRequest

router = APIRouter(tags=["plan mode"])


class IntakeStatus(BaseModel):
    available: bool = Field(description="A turn with no provider or model override can run")
    reason: Literal["no-llm"] | None = Field(default=None, description="Set when it cannot")
    message: str | None = Field(default=None, description="Why not, for the developer")


@router.get("/intake", response_model=IntakeStatus)
async def intake_status(runner: RunnerDep) -> IntakeStatus:
    try:
        runner.intake.resolve(None, None)
    except NoLLM as exc:
        return IntakeStatus(available=False, reason="no-llm", message=str(exc))
    return IntakeStatus(available=True)


# 503 `reason: no-llm`: no executor that can chat is configured
@router.post(
    "/intake/stream",
    response_model=None,
    response_class=EventSourceResponse,
    responses={**SSE_OK, **errors(503)},
)
async def intake_stream(runner: RunnerDep, body: IntakeBody) -> EventSourceResponse | JSONResponse:
    if body.messages[-1].role != "user":
        raise InvalidRequest("The last message must be the developer's (role 'user')")
    try:
        runner.intake.resolve(body.provider, body.model)
    except NoLLM as exc:
        return JSONResponse({"error": str(exc), "reason": "no-llm"}, status_code=503)
    turn = IntakeTurn(
        session_id=body.session_id,
        messages=[m.model_dump() for m in body.messages],
        model=body.model,
        provider=body.provider,
        context=body.context.model_dump(by_alias=True, exclude_none=True) if body.context else {},
    )

    async def frames() -> AsyncIterator[ServerSentEvent]:
        async for event in runner.intake.turn(turn):
            yield ServerSentEvent(data=json.dumps(event), event="message", sep="\n")

    return EventSourceResponse(frames(), sep="\n", ping=15)
