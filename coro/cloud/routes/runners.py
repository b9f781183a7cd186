"""`GET /teams/{teamId}/runners`: the team's connected runners (members), on any
instance, from `runner_sessions`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from fastapi import APIRouter
from sqlalchemy import func, select

from coro.cloud.deps import ServicesDep, TeamAccessDep, errors
from coro.cloud.models import Wire
from coro.cloud.schema import runner_sessions

router = APIRouter(prefix="/teams/{team_id}/runners", tags=["runners"])


class RunnerOut(Wire):
    runner_id: str
    hostname: str
    version: str
    connected_at: datetime
    last_heartbeat_at: datetime
    active_job_ids: list[str]
    capacity: int
    #: busy: runs at least one job; offline: no heartbeat within the timeout (its
    #: instance went away without closing the session)
    status: Literal["idle", "busy", "offline"]


@router.get("", response_model=list[RunnerOut], responses=errors(400, 401, 404, 503))
async def list_runners(access: TeamAccessDep, found: ServicesDep) -> list[RunnerOut]:
    """The team's runners with a session, by id."""
    stale = timedelta(seconds=found.settings.heartbeat_timeout_seconds)
    async with found.db.begin() as connection:
        rows = (
            await connection.execute(
                select(
                    runner_sessions,
                    (runner_sessions.c.last_heartbeat_at > func.now() - stale).label("fresh"),
                )
                .where(runner_sessions.c.team_id == access.team_id)
                .order_by(runner_sessions.c.runner_id)
            )
        ).all()
    runners = []
    for row in rows:
        active = [str(job_id) for job_id in row.active_job_ids or []]
        status: Literal["idle", "busy", "offline"] = (
            "offline" if not row.fresh else "busy" if active else "idle"
        )
        runners.append(
            RunnerOut(
                runner_id=row.runner_id,
                hostname=row.hostname,
                version=row.version,
                connected_at=row.connected_at,
                last_heartbeat_at=row.last_heartbeat_at,
                active_job_ids=active,
                capacity=row.capacity,
                status=status,
            )
        )
    return runners
