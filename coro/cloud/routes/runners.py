"""`GET /teams/{teamId}/runners`: the team's connected runners (members), on any
instance."""

from __future__ import annotations

from fastapi import APIRouter

from coro.cloud.deps import ServicesDep, TeamAccessDep, errors
from coro.cloud.runners import RunnerOut, team_runners

router = APIRouter(prefix="/teams/{team_id}/runners", tags=["runners"])


@router.get("", response_model=list[RunnerOut], responses=errors(400, 401, 404, 503))
async def list_runners(access: TeamAccessDep, found: ServicesDep) -> list[RunnerOut]:
    """The team's runners with a session, by id."""
    return await team_runners(found.db, access.team_id, found.settings.heartbeat_timeout_seconds)
