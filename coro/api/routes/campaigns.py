"""Campaign endpoints (SPEC §4.5): a campaign's children and the developer's controls.

- `GET /campaigns` — campaign jobs, newest first, with child counts;
- `GET /jobs/{jobId}/children` — the children, each with its job's summary, counts by
  status and the campaign's totals;
- `POST /jobs/{jobId}/children/{name}/{action}` — skip | rerun | cancel | abandon |
  resume | start, body `{reason?}` (`{note?}` for resume: it reaches the child's job
  as a developer message). Response `{ok: true, action, child}`; 404 unknown job or
  child, 409 when the child's or campaign's state forbids the action, 400 bad input.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query
from pydantic import Field

from coro.api.deps import RunnerDep
from coro.api.errors import errors
from coro.api.schemas import Body as RequestBody

router = APIRouter(tags=["campaigns"])

ChildName = Annotated[str, Path(min_length=1, max_length=200)]


class ChildActionBody(RequestBody):
    reason: str | None = Field(default=None, max_length=10_000)
    note: str | None = Field(default=None, max_length=100_000)


@router.get("/campaigns")
async def list_campaigns(
    runner: RunnerDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> dict[str, Any]:
    campaigns = await runner.campaigns.list_campaigns(limit)
    return {"campaigns": campaigns, "total": len(campaigns)}


@router.get("/jobs/{job_id}/children", responses=errors(404, 409))
async def list_children(runner: RunnerDep, job_id: str) -> dict[str, Any]:
    return await runner.campaigns.children(job_id)


@router.post("/jobs/{job_id}/children/{name}/{action}", responses=errors(404, 409))
async def child_action(
    runner: RunnerDep,
    job_id: str,
    name: ChildName,
    action: Literal["skip", "rerun", "cancel", "abandon", "resume", "start"],
    body: Annotated[ChildActionBody | None, Body()] = None,
) -> dict[str, Any]:
    body = body or ChildActionBody()
    text = (body.note or body.reason) if action == "resume" else (body.reason or body.note)
    child = await runner.campaigns.control(job_id, name, action, text)
    return {"ok": True, "action": action, "child": child.to_json()}
