"""`GET /stats`: what the dashboard's cards show — jobs per status group, and spend."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from coro.api.deps import RunnerDep
from coro.domain.models import STATUS_GROUPS, status_group

router = APIRouter(tags=["jobs"])


@router.get("/stats")
async def stats(runner: RunnerDep) -> dict[str, Any]:
    totals = await runner.store.backend.status_totals()
    groups = dict.fromkeys(STATUS_GROUPS, 0)
    for status, total in totals.items():
        groups[status_group(status)] += total.jobs
    return {
        "jobs": {
            **groups,
            "total": sum(t.jobs for t in totals.values()),
            "byStatus": {status: t.jobs for status, t in sorted(totals.items())},
        },
        "spend": {"totalCostUsd": round(sum(t.cost_usd for t in totals.values()), 6)},
    }
