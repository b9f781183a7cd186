"""The filters of a job listing (`GET /jobs`, and the cloud's team listing) as a FastAPI
dependency: the query parameters, validated and bounded, as a `JobQuery`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Query

from coro.domain.models import PARKING, STOPPED, Job
from coro.state.backend import JobQuery

GROUP_STATUSES = {"waiting": sorted(PARKING - {"failed", "escalated"}), "stopped": sorted(STOPPED)}


@dataclass(frozen=True)
class JobFilter:
    query: JobQuery
    #: the filters exclude every job (a `status` outside its `group`): nothing to read
    matches_nothing: bool = False

    def page(self, jobs: list[Job], total: int) -> dict[str, Any]:
        """The listing's body: `{jobs, total, limit, offset}`."""
        return {
            "jobs": [j.summary() for j in jobs],
            "total": total,
            "limit": self.query.limit,
            "offset": self.query.offset,
        }


async def job_query(
    status: Annotated[list[str] | None, Query(max_length=20)] = None,
    group: Literal["active", "waiting", "stopped"] | None = None,
    type: Annotated[str | None, Query(max_length=100)] = None,
    workflow_path: Annotated[str | None, Query(alias="workflowPath", max_length=500)] = None,
    campaign_parent_id: Annotated[
        str | None, Query(alias="campaignParentId", max_length=200)
    ] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> JobFilter:
    statuses = list(status or [])
    excluded: list[str] = []
    if group == "active":  # phase statuses are open-ended: "not parked, not stopped"
        excluded = sorted(PARKING | STOPPED)
    elif group is not None:
        allowed = GROUP_STATUSES[group]
        statuses = [s for s in statuses if s in allowed] if statuses else allowed
    query = JobQuery(
        statuses=statuses,
        exclude_statuses=excluded,
        type=type,
        workflow_path=workflow_path,
        campaign_parent_id=campaign_parent_id,
        text=q,
        limit=limit,
        offset=offset,
    )
    return JobFilter(query, matches_nothing=group not in (None, "active") and not statuses)


JobFilterDep = Annotated[JobFilter, Depends(job_query)]
