"""Insight curation (SPEC §2.1): list, approve/reject/edit, soft and hard delete.

- `GET /jobs/:jobId/insights[?includeInherited=1][&includeDeleted=1]` →
  `{jobId, insights, inheritedCount, deletedCount}`; by default inherited insights
  (`sourceChildName`, copied from a campaign sibling) and soft-deleted ones are left out.
- `PATCH /jobs/:jobId/insights/:insightId` body (all optional): `status`
  (pending|approved|rejected), `userLayer` (tenant|repo|null; alias `suggestedLayer`),
  `editedSummary|editedDetail|editedSuggestion` (aliases `summary|detail|suggestion`;
  string sets, null or "" clears — the agent's text is kept), `editedBy` →
  `{insight, totalInsights}`.
- `DELETE /jobs/:jobId/insights/:insightId[?hard=1]` → `{removed, insightId,
  totalInsights}`: soft by default (status `rejected`, `deletedAt` set, hidden from
  listings; a later PATCH of `status` restores it); `hard` removes it — refused (409) for
  an inherited insight, which belongs to the job that recorded it.

Unknown job or insight → 404; invalid body → 400.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query

from coro.api.deps import RunnerDep
from coro.api.errors import errors
from coro.engine.insights import (
    INSIGHT_LAYERS,
    INSIGHT_STATUSES,
    MAX_EDIT_CHARS,
    InsightNotFound,
    InsightPatch,
    InsightService,
)

router = APIRouter(tags=["insights"])

_TEXT = {"anyOf": [{"type": "string", "maxLength": MAX_EDIT_CHARS}, {"type": "null"}]}
_LAYER = {"enum": [*INSIGHT_LAYERS, None]}
#: The PATCH body as `InsightPatch.parse` checks it (it reads the raw object, so the
#: document says its rules): a field and its alias edit one text, so not both.
PATCH_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "status": {"enum": list(INSIGHT_STATUSES)},
        "userLayer": _LAYER,
        "suggestedLayer": _LAYER,
        **{
            key: _TEXT
            for key in (
                "editedSummary",
                "editedDetail",
                "editedSuggestion",
                "summary",
                "detail",
                "suggestion",
            )
        },
        "editedBy": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "allOf": [
        {"not": {"required": pair}}
        for pair in (
            ["userLayer", "suggestedLayer"],
            ["editedSummary", "summary"],
            ["editedDetail", "detail"],
            ["editedSuggestion", "suggestion"],
        )
    ],
}


@router.get("/jobs/{job_id}/insights", responses=errors(404))
async def list_insights(
    runner: RunnerDep,
    job_id: str,
    include_inherited: Annotated[bool, Query(alias="includeInherited")] = False,
    include_deleted: Annotated[bool, Query(alias="includeDeleted")] = False,
) -> dict[str, Any]:
    return await InsightService(runner.store).list(
        job_id, include_inherited=include_inherited, include_deleted=include_deleted
    )


@router.patch("/jobs/{job_id}/insights/{insight_id}", responses=errors(404))
async def patch_insight(
    runner: RunnerDep,
    job_id: str,
    insight_id: str,
    body: Annotated[dict[str, Any], Body(json_schema_extra=PATCH_SCHEMA)],
) -> dict[str, Any]:
    patch = InsightPatch.parse(body)
    try:
        return await InsightService(runner.store).patch(job_id, insight_id, patch)
    except InsightNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc


@router.delete("/jobs/{job_id}/insights/{insight_id}", responses=errors(404, 409))
async def delete_insight(
    runner: RunnerDep,
    job_id: str,
    insight_id: str,
    hard: bool = False,
) -> dict[str, Any]:
    try:
        return await InsightService(runner.store).delete(job_id, insight_id, hard=hard)
    except InsightNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
