"""Read-only intelligence endpoints: `GET /workflows`."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter

from coro.api.deps import RunnerDep

router = APIRouter(tags=["intelligence"])


@router.get("/workflows")
async def list_workflows(
    runner: RunnerDep, kind: Literal["job", "campaign", "internal"] | None = None
) -> dict[str, Any]:
    workflows = runner.env.layers.list_workflows(kind)
    return {"workflows": workflows, "total": len(workflows)}
