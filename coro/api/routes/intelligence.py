"""Read-only intelligence endpoints: `GET /workflows`, `GET /proposals`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from coro.api.deps import RunnerDep
from coro.intelligence.proposals import ProposalStatus, ProposalStore

LOCAL_TENANT = "local"

router = APIRouter(tags=["intelligence"])


@router.get("/workflows")
async def list_workflows(
    runner: RunnerDep, kind: Literal["job", "campaign", "internal"] | None = None
) -> dict[str, Any]:
    workflows = runner.env.layers.list_workflows(kind)
    return {"workflows": workflows, "total": len(workflows)}


@router.get("/proposals")
async def list_proposals(
    runner: RunnerDep,
    status: ProposalStatus | None = None,
    tenant_id: Annotated[str, Query(alias="tenantId", max_length=200)] = LOCAL_TENANT,
) -> dict[str, Any]:
    store = ProposalStore(runner.env.layers.tenant_dir / "proposals")
    proposals = store.list(status, tenant_id)
    return {
        "tenantId": tenant_id,
        "count": len(proposals),
        "proposals": [p.summary() for p in proposals],
    }
